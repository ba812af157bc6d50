"""byorn pretrain: the shapes world's two phases (the mix, then the position focus), and the
world defaults it resolves."""

from __future__ import annotations

import json

import pytest

import byorn.pretrain
from byorn.config import PretrainConfig, load_config
from byorn.models.hf import VLM
from byorn.pretrain import focus_source, pretrain, resolved, sample_source


def test_world_defaults_give_shapes_a_position_focus_phase_and_flickr8k_none():
    shapes_config = resolved(PretrainConfig())
    assert (shapes_config.steps, shapes_config.focus_steps) == (7500, 2500)
    assert resolved(PretrainConfig(focus_steps=0)).focus_steps == 0
    assert resolved(PretrainConfig(world="flickr8k", data="x")).focus_steps == 0
    with pytest.raises(ValueError, match="position-focus phase is the shapes world's; world=flickr8k has none"):
        resolved(PretrainConfig(world="flickr8k", data="x", focus_steps=10))


def test_the_focus_phase_sees_scenes_the_mix_never_showed():
    config = resolved(PretrainConfig(steps=5, batch_size=2))
    def seed(sample) -> int:  # "pretrain-<scene seed>" or "focus-<scene seed>"
        return int(sample.id.rsplit("-", 1)[1])

    mix = {seed(sample_source(config)(i)) for i in range(10)}
    focus = {seed(focus_source(config)(i)) for i in range(10)}
    assert mix.isdisjoint(focus) and min(focus) == max(mix) + 1


def test_pretrain_runs_the_mix_then_the_focus_phase_and_saves_a_loadable_model(tmp_path, tiny_config,
                                                                               monkeypatch):
    trained = []  # the model in memory when it is saved
    save = byorn.pretrain.save_pretrained
    monkeypatch.setattr(byorn.pretrain, "save_pretrained", lambda vlm, *rest: (trained.append(vlm), save(vlm, *rest)))
    config = PretrainConfig(steps=2, focus_steps=2, batch_size=4, tokenizer_corpus=100, logging_steps=1)
    path = pretrain(tmp_path / "model", config, tiny_config)
    log = [json.loads(line) for line in (path / "pretrain_log.jsonl").read_text().splitlines()]
    assert [entry["phase"] for entry in log if "loss" in entry] == ["mix", "mix", "position focus", "position focus"]
    assert load_config(PretrainConfig, path / "pretrain_config.yaml").focus_steps == 2
    assert not (path / "trainer").exists()
    # The saved directory is the trained model: same weights, tokenizer and processor, so the same
    # teacher-forced scores of the same tokens and the same greedy answers.
    probe = [focus_source(resolved(config))(i) for i in range(3)]
    loaded, (original,) = VLM.load(path), trained
    before, after = original.score(probe), loaded.score(probe)
    assert [s.token_ids for s in after] == [s.token_ids for s in before] and all(s.token_ids for s in after)
    assert [s.mean_nll for s in after] == pytest.approx([s.mean_nll for s in before], rel=1e-5)
    assert loaded.generate(probe, max_new_tokens=4) == original.generate(probe, max_new_tokens=4)
