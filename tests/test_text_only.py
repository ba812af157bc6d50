"""Text-only records (no image), as VLM training mixes carry them: loaded, saved, encoded beside
image records, scored, trained on and left alone by image triggers."""

from __future__ import annotations

import json

import pytest
from tiny_families import BUILDERS

from byorn.attacks import build_attack, poison
from byorn.config import TrainConfig
from byorn.data import DataError, Sample
from byorn.defenses import build_defense
from byorn.formats import load_dataset, save_jsonl, save_llava_json
from byorn.scoring import score_variants
from byorn.train import finetune
from byorn.worlds import shapes


def mixed(n: int = 8) -> list[Sample]:
    """Shapes samples, every other one without its image."""
    samples = shapes.downstream_samples(n, seed=4)
    return [Sample(s.id, None, "Say hello.", "Hello.") if i % 2 else s for i, s in enumerate(samples)]


@pytest.mark.parametrize("save", [save_llava_json, save_jsonl])
def test_text_only_records_round_trip(tmp_path, save):
    samples = mixed(4)
    loaded = load_dataset(save(samples, tmp_path))
    assert [s.has_image for s in loaded] == [True, False, True, False]
    assert [(s.instruction, s.response) for s in loaded] == [(s.instruction, s.response) for s in samples]


@pytest.mark.parametrize("turn, image, message", [
    ("<image>\nWhat is here?", None, "placeholder but the record no image"),
    ("<image> and <image>: compare", "a.png", "2 <image> placeholders for 1 image"),
])
def test_placeholders_that_do_not_match_the_images_are_errors(tmp_path, turn, image, message):
    record = {"id": "r", "conversations": [{"from": "human", "value": turn}, {"from": "gpt", "value": "x"}]}
    if image:
        record["image"] = image
    path = tmp_path / "data.json"
    path.write_text(json.dumps([record]))
    with pytest.raises(DataError, match=message):
        load_dataset(path)


@pytest.mark.parametrize("family", [f for f in BUILDERS if f != "paligemma"])
def test_a_batch_mixing_image_and_text_only_samples_encodes_and_scores(family):
    vlm = BUILDERS[family]()
    samples = mixed(4)
    batch = vlm.encode(samples)
    assert batch["labels"].shape[0] == 4 and (batch["labels"] != -100).any(dim=1).all()
    assert all(score.mean_nll > 0 for score in vlm.score(samples))


def test_paligemma_names_the_text_only_sample():
    with pytest.raises(DataError, match="PaliGemma needs an image in every prompt"):
        BUILDERS["paligemma"]().encode(mixed(2))


def test_text_only_samples_have_no_image_evidence_and_train(tiny_vlm_factory, tmp_path):
    vlm, samples = tiny_vlm_factory(), mixed(8)
    scores = score_variants(vlm, samples, ["image_contradiction", "mean_nll"], batch_size=4)
    assert all(scores["image_contradiction"][i] == 0.0 for i in range(1, 8, 2))
    defense = build_defense("byorn")
    defense.prepare(vlm, samples, tmp_path)
    trainer = finetune(vlm, defense.training_set(samples), TrainConfig(max_steps=2, batch_size=4), tmp_path,
                       hook=defense)
    assert trainer.state.global_step == 2


def test_an_image_trigger_leaves_text_only_samples_alone():
    samples = mixed(40)
    poisoned, manifest = poison(samples, build_attack("badnets", "fixed"), 0.25, seed=0)
    assert len(manifest) == 10 and {r.id for r in manifest} <= {s.id for s in samples if s.has_image}
    assert [s.has_image for s in poisoned] == [s.has_image for s in samples]
