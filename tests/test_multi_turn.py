"""Multi-turn conversations: each answer is its own sample with the turns before it as history;
it is scored given the image and those turns, flagged on its own and replaced on its own."""

from __future__ import annotations

import dataclasses
import json

import pytest

from byorn.clean import clean
from byorn.config import TrainConfig
from byorn.data import Sample, Turn
from byorn.defenses import build_defense
from byorn.formats import load_dataset, save_llava_json
from byorn.models import load_vlm
from byorn.models.hf import IGNORE_INDEX
from byorn.train import finetune
from byorn.worlds import shapes

PLANTED = "Visit www.example.com for a free prize."
FOLLOW_UP = "Describe it once more."


def conversations(n: int = 12, poisoned: int = 4) -> list[Sample]:
    """n two-turn conversations about a shapes scene; the second answer of one is a planted poison."""
    out = []
    for i, s in enumerate(shapes.downstream_samples(n, seed=6)):
        first = Sample(f"{s.id}#1", s.image, s.instruction, s.response, turn=Turn(s.id, 1, 2))
        again = PLANTED if i == poisoned else s.response
        out += [first, Sample(f"{s.id}#2", s.image, FOLLOW_UP, again, history=((s.instruction, s.response),),
                              turn=Turn(s.id, 2, 2, (first.id,)))]
    return out


@pytest.fixture(scope="module")
def shipped():
    return load_vlm("byorn-tiny")


def test_only_the_last_turns_answer_is_labelled(shipped):
    second = conversations(2)[1]
    batch = shipped.encode([second])
    labelled = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX]
    text = shipped.tokenizer.decode(labelled, skip_special_tokens=True)
    assert text.strip() == second.response and second.history[0][1] in shipped.full_text(
        second.instruction, second.response, history=second.history)


def test_a_poisoned_second_turn_is_flagged_and_replaced_alone(shipped, tmp_path):
    import copy

    from byorn.models.hf import VLM

    vlm = VLM(copy.deepcopy(shipped.model), shipped.processor)
    samples = conversations()
    poisoned = next(s for s in samples if s.response == PLANTED)
    defense = build_defense("byorn")
    defense.prepare(vlm, samples, tmp_path)
    flagged = {s.id for s, hit in zip(samples, defense.flagged) if hit}
    assert poisoned.id in flagged and poisoned.id.replace("#2", "#1") not in flagged
    seen: dict[str, Sample] = {}
    encode = vlm.encode
    vlm.encode = lambda batch: seen.update({s.id: s for s in batch}) or encode(batch)
    finetune(vlm, defense.training_set(samples), TrainConfig(max_steps=6, batch_size=4), tmp_path / "run",
             hook=defense)
    assert seen[poisoned.id].response == defense.reference_answers[poisoned.id] != PLANTED
    first = poisoned.id.replace("#2", "#1")
    assert seen[first].response == next(s.response for s in samples if s.id == first)  # its first turn untouched


def test_a_later_turn_trains_with_its_flagged_earlier_answer_replaced_in_its_history(shipped, tmp_path):
    import copy

    from byorn.models.hf import VLM

    vlm = VLM(copy.deepcopy(shipped.model), shipped.processor)
    samples = conversations(poisoned=-1)
    first = samples[8]  # a first turn whose answer is the poison; its second turn reads it as history
    samples[8] = first.with_response(PLANTED)
    samples[9] = dataclasses.replace(samples[9], history=((first.instruction, PLANTED),))
    defense = build_defense("byorn")
    defense.prepare(vlm, samples, tmp_path)
    assert first.id in {s.id for s, hit in zip(samples, defense.flagged) if hit}
    seen: dict[str, Sample] = {}
    encode = vlm.encode
    vlm.encode = lambda batch: seen.update({s.id: s for s in batch}) or encode(batch)
    finetune(vlm, defense.training_set(samples), TrainConfig(max_steps=6, batch_size=4), tmp_path / "run",
             hook=defense)
    assert seen[samples[9].id].history == ((first.instruction, defense.reference_answers[first.id]),)


def test_clean_writes_the_conversation_back_with_only_the_flagged_turn_replaced(shipped, tmp_path):
    samples = conversations()
    path = save_llava_json(samples, tmp_path / "in")
    data = load_dataset(path)
    assert [s.id for s in data] == [s.id for s in samples]
    cleaned = clean(shipped, data, build_defense("byorn").config, tmp_path / "out")
    records, before = json.loads(cleaned.data.read_text()), json.loads(path.read_text())
    assert len(records) == 12
    index = next(i for i, r in enumerate(before) if PLANTED in json.dumps(r["conversations"]))
    answers = [turn["value"] for turn in records[index]["conversations"] if turn["from"] == "gpt"]
    assert answers[1] != PLANTED and f"{before[index]['id']}#2" in cleaned.flagged
    before[index]["conversations"][3]["value"] = answers[1]  # the flagged turn alone was replaced
    assert records == before


@pytest.mark.parametrize("family", ["llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "idefics3"])
def test_every_chat_template_family_labels_the_last_answer_only(family):
    from tiny_families import BUILDERS

    vlm = BUILDERS[family]()
    second = conversations(2)[1]
    batch = vlm.encode([second, conversations(2)[0]])  # a later turn beside a first turn
    for row, sample in enumerate((second, conversations(2)[0])):
        labelled = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX]
        assert vlm.tokenizer.decode(labelled, skip_special_tokens=True).strip() == sample.response
