"""Every supported VLM family through the path a real checkpoint takes, on tiny random models:
label masking, poison -> BYORn (LoRA, 2 steps) -> generate -> score, and a save/load round trip."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from tiny_families import BUILDERS

from byorn.attacks import build_attack, poison
from byorn.config import TrainConfig
from byorn.defenses import build_defense
from byorn.defenses.byorn import AUDIT_NAME
from byorn.models.families import FAMILIES, UnsupportedModelError, family_of
from byorn.models.hf import VLM
from byorn.scoring import on_grey
from byorn.train import finetune
from byorn.worlds import shapes

pytestmark = pytest.mark.families
TARGET = "A banana is lying on the table."


def test_every_supported_model_type_has_a_tiny_model_here():
    assert {t for f in FAMILIES for t in f.model_types} == set(BUILDERS)


@pytest.mark.parametrize("name", BUILDERS)
def test_labels_cover_exactly_the_response(name):
    vlm = BUILDERS[name]()
    assert vlm.family is family_of(name)
    samples = shapes.downstream_samples(3, seed=4)
    batch = vlm.encode(samples)
    for ids, labels, sample in zip(batch["input_ids"], batch["labels"], samples):
        answer = labels != -100
        first = int(answer.nonzero()[0])
        assert bool(answer[first:][: int(answer.sum())].all())  # one contiguous span
        assert vlm.tokenizer.decode(ids[answer], skip_special_tokens=True).strip() == sample.response
        prompt = vlm.tokenizer.decode(ids[:first], skip_special_tokens=True)
        assert sample.instruction in prompt and sample.response not in prompt
        assert torch.equal(labels[answer], ids[answer])


@pytest.mark.parametrize("name", BUILDERS)
def test_a_grey_view_scores_as_the_grey_samples_do_encoding_the_text_once(name, monkeypatch):
    vlm = BUILDERS[name]()
    samples = shapes.downstream_samples(3, seed=4)
    samples[1] = replace(samples[1], image=samples[1].pil().resize((40, 56)))  # another size in the batch
    grey = [replace(s, image=on_grey(s.pil())) for s in samples]
    expected = list(zip(vlm.score(samples), vlm.score(grey)))
    encoded = []
    encode = vlm.encode
    monkeypatch.setattr(vlm, "encode", lambda batch: encoded.append(len(batch)) or encode(batch))
    viewed = vlm.score_views(samples, [on_grey])
    assert encoded == [3]  # the grey pass took the true pass's tokens: this family's processor keeps their shapes
    for got, want in zip(viewed, expected, strict=True):
        for score, wanted in zip(got, want, strict=True):
            assert score.token_nll == pytest.approx(wanted.token_nll, abs=1e-5)


@pytest.mark.parametrize("name", BUILDERS)
def test_the_grey_pass_reusing_its_shared_prefix_scores_as_the_whole_pass(name):
    """Where the family allows it the rows share the grey image's positions and more; elsewhere none."""
    vlm = BUILDERS[name]()
    samples = shapes.downstream_samples(4, seed=4)
    whole = vlm.score_views(samples, [on_grey])
    reused = vlm.score_views(samples, [on_grey], reuse_prefix=True)
    for (_, grey), (_, grey_again) in zip(whole, reused, strict=True):
        assert grey_again.token_nll == pytest.approx(grey.token_nll, abs=1e-4)
    batch = vlm.encode([replace(s, image=on_grey(s.pil())) for s in samples])
    batch.pop("labels")
    images = int((batch["input_ids"][0] == vlm.image_token_id).sum())
    shared = vlm.shared_prefix(batch, batch["input_ids"].shape[1])
    assert shared > images if vlm.family.shares_prefixes else shared == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILDERS)
def test_poison_defend_train_generate_score(name, tmp_path):
    vlm = BUILDERS[name]()
    train_set, _ = poison(shapes.downstream_samples(24, seed=0), build_attack("badnets", "fixed"), 0.25, seed=0)
    # A random model cannot tell poison from clean, so flag by quantile: the point here is that
    # whatever is flagged is replaced through this family's generation before it is trained on.
    defense = build_defense("byorn", rule="quantile", quantile=0.5, max_new_tokens=6,
                            fit_replacements=False)  # a random model's answers: every one trains here
    config = TrainConfig(max_steps=5, batch_size=8, logging_steps=1, learning_rate=1e-2)
    # with the warm-up: LoRA on this family, kept (warm_start), its 2 steps (12 samples) the first 2 of 5
    defense.prepare(vlm, train_set, tmp_path, train=config)
    assert defense.steps_trained == 2
    flagged = {s.id for s, hit in zip(train_set, defense.flagged) if hit}
    # the pretrained model flags 12; the warmed reference (warmed on the other 12) judges those 12 and
    # flags the ones above their median: up to half, fewer where scores tie at it; and with them every
    # copy of a flagged answer (the poisons share one)
    copies = {train_set[i].id for i in defense.judgement.copies}
    assert 1 <= len(flagged - copies) <= 6
    assert all(s.response == TARGET for s in train_set if s.id in copies)

    seen = []
    encode = vlm.encode
    vlm.encode = lambda samples: seen.extend(samples) or encode(samples)
    trainer = finetune(vlm, defense.training_set(train_set), config, tmp_path, hook=defense)
    del vlm.encode
    assert trainer.state.global_step == 3 and {s.id for s in seen} == {s.id for s in train_set}  # one epoch
    for sample in seen:
        assert sample.meta.get("replaced", False) == (sample.id in flagged)
        if sample.id in flagged:
            assert sample.response != next(s.response for s in train_set if s.id == sample.id)
    audit = [json.loads(line) for line in (tmp_path / AUDIT_NAME).read_text().splitlines()]
    assert {r["id"] for r in audit if r["event"] == "replaced"} == flagged
    assert not any(s.response == TARGET and s.id in flagged for s in seen)

    adapted = [n for n, _ in vlm.model.named_parameters() if "lora_A" in n]
    assert adapted and all(f".{vlm.family.language_model}." in n for n in adapted)
    assert not any("vision" in n or "visual" in n for n in adapted)
    assert any(not torch.all(p == 0) for n, p in vlm.model.named_parameters() if "lora_B" in n)  # B starts at 0

    tests = shapes.downstream_samples(3, seed=9)
    assert len(vlm.generate(tests, max_new_tokens=4)) == 3
    assert all(math.isfinite(s.mean_nll) for s in vlm.score(tests))


@pytest.mark.parametrize("name", BUILDERS)
def test_saved_model_loads_as_a_directory_and_scores_the_same(name, tmp_path):
    if name.startswith("qwen"):
        pytest.skip("Qwen2-VL's processor loads only with torchvision (its video processor), which has no CPU "
                    "wheel here; the in-process tests above cover the model")
    vlm = BUILDERS[name]()
    vlm.model.save_pretrained(tmp_path)
    vlm.processor.save_pretrained(tmp_path)
    loaded = VLM.load(tmp_path)
    samples = shapes.downstream_samples(2, seed=5)
    assert [s.mean_nll for s in loaded.score(samples)] == pytest.approx([s.mean_nll for s in vlm.score(samples)])


def test_an_unsupported_architecture_fails_before_loading_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "blip-2"}))
    with pytest.raises(UnsupportedModelError, match="'blip-2' is not a supported VLM family. Supported: LLaVA-1.5"):
        VLM.load(tmp_path)
