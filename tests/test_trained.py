"""Fine-tunes found again (byorn.trained): keyed by everything the weights depend on, and shared by
a grid's cells that would repeat them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from byorn import bench, scoring, trained
from byorn.config import TrainConfig
from byorn.defenses import attention, build_defense
from byorn.in_place import warm_up
from byorn.report import cost_ratios, cost_table
from byorn.scoring import model_fingerprint
from byorn.train import finetune, train_steps
from byorn.trained import trained_in_place_or_found, trained_or_found, training_key
from byorn.worlds import shapes

CONFIG = TrainConfig(lora=False, max_steps=2, batch_size=4, learning_rate=1e-3)


def test_the_key_follows_weights_samples_and_settings_but_not_where_a_run_logs(tiny_vlm, tiny_vlm_factory):
    samples = shapes.downstream_samples(8, seed=1)
    key = training_key(tiny_vlm, samples, CONFIG)
    assert training_key(tiny_vlm_factory(), samples, CONFIG) == key
    assert training_key(tiny_vlm, samples, dataclasses.replace(CONFIG, logging_steps=1, save_steps=5)) == key
    changed = [samples[0].with_response(samples[0].response + " It is small."), *samples[1:]]
    others = [training_key(tiny_vlm, changed, CONFIG), training_key(tiny_vlm, samples[::-1], CONFIG),
              training_key(tiny_vlm, samples, dataclasses.replace(CONFIG, learning_rate=2e-3)),
              training_key(tiny_vlm, samples, dataclasses.replace(CONFIG, seed=1)),
              training_key(tiny_vlm_factory(seed=1), samples, CONFIG)]
    assert len({key, *others}) == 6


def test_a_second_fine_tune_of_the_same_inputs_loads_the_first_ones_weights(tiny_vlm_factory, tmp_path):
    samples = shapes.downstream_samples(8, seed=1)
    runs = []

    def train_in(folder):
        def train():
            vlm = tiny_vlm_factory()
            finetune(vlm, samples, CONFIG, tmp_path / folder)
            runs.append(folder)
            return vlm
        return train

    first, found = trained_or_found(tiny_vlm_factory(), samples, CONFIG, tmp_path / "cache", train_in("a"),
                                    tmp_path / "a")
    assert found is None and runs == ["a"]
    second, found = trained_or_found(tiny_vlm_factory(), samples, CONFIG, tmp_path / "cache", train_in("b"),
                                     tmp_path / "b")
    assert found == tmp_path / "a" / "model" and runs == ["a"]  # loaded, not trained
    weights = dict(first.model.named_parameters())
    assert all(torch.equal(p, weights[name]) for name, p in second.model.named_parameters())
    # other samples, LoRA, or no cache: trained
    trained_or_found(tiny_vlm_factory(), samples[1:], CONFIG, tmp_path / "cache", train_in("c"), tmp_path / "c")
    lora = dataclasses.replace(CONFIG, lora=True)
    trained_or_found(tiny_vlm_factory(), samples, lora, tmp_path / "cache", lambda: runs.append("d"), tmp_path / "d")
    trained_or_found(tiny_vlm_factory(), samples, CONFIG, None, lambda: runs.append("e"), tmp_path / "e")
    assert runs == ["a", "c", "d", "e"]


def test_a_model_indexed_but_since_removed_is_trained_again(tiny_vlm, tmp_path):
    index = trained.TrainedModels(tmp_path)
    index.add("k", tmp_path / "gone")
    with (tmp_path / trained.INDEX_NAME).open("a") as index_file:
        index_file.write('{"key": "k", "mod')  # a line being written
    assert index.find("k") is None and index.find("other") is None


def test_an_in_place_fine_tune_of_the_same_inputs_loads_the_first_ones_weights_and_steps(tiny_vlm_factory, tmp_path):
    samples = shapes.downstream_samples(8, seed=1)
    runs = []

    def train_in(vlm, folder):
        def train():
            runs.append(folder)
            return train_steps(vlm, samples, CONFIG, tmp_path / folder).state.global_step
        return train

    first = tiny_vlm_factory()
    assert trained_in_place_or_found(first, samples, CONFIG, tmp_path / "cache", train_in(first, "a")) == (2, None)
    second = tiny_vlm_factory()
    steps, found = trained_in_place_or_found(second, samples, CONFIG, tmp_path / "cache", train_in(second, "b"))
    assert runs == ["a"] and steps == 2 and found.parent == tmp_path / "cache" / trained.WEIGHTS_DIR
    weights = dict(first.model.named_parameters())
    assert all(torch.equal(p, weights[name]) for name, p in second.model.named_parameters())
    # no cache, or LoRA: trained, nothing saved
    third = tiny_vlm_factory()
    assert trained_in_place_or_found(third, samples, CONFIG, None, train_in(third, "c")) == (2, None)
    assert trained_in_place_or_found(third, samples, dataclasses.replace(CONFIG, lora=True), tmp_path / "cache",
                                     lambda: runs.append("d") or 0) == (0, None)
    assert runs == ["a", "c", "d"] and len(list((tmp_path / "cache" / trained.WEIGHTS_DIR).iterdir())) == 1
    # a weights file cut short (a crash while copying the folder, say): trained again, and saved whole
    found.write_bytes(found.read_bytes()[:100])
    fourth = tiny_vlm_factory()
    assert trained_in_place_or_found(fourth, samples, CONFIG, tmp_path / "cache", train_in(fourth, "e")) == (2, None)
    assert runs[-1] == "e" and trained_in_place_or_found(tiny_vlm_factory(), samples, CONFIG, tmp_path / "cache",
                                                        lambda: 0)[1] == found


@pytest.mark.parametrize("spoil", ["reshaped", "missing", "foreign"])
def test_a_weights_file_that_does_not_fit_leaves_the_model_untouched(spoil, tiny_vlm_factory, tmp_path):
    import safetensors.torch

    vlm = tiny_vlm_factory()
    before = {k: v.clone() for k, v in vlm.model.state_dict().items()}
    weights = {k: torch.full_like(v, 7.0) for k, v in before.items()}  # every tensor would change
    last = sorted(weights)[-1]
    if spoil == "reshaped":
        weights[last] = torch.zeros(3, 3)
    elif spoil == "missing":
        del weights[last]
    else:
        weights["not.in.this.model"] = torch.zeros(1)
    safetensors.torch.save_file(weights, tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="tensor"):
        trained.load_whole(vlm.model, tmp_path / "w.safetensors")
    assert all(torch.equal(v, before[k]) for k, v in vlm.model.state_dict().items())
    # the whole file of this model's shapes loads
    safetensors.torch.save_model(tiny_vlm_factory().model, str(tmp_path / "whole.safetensors"))
    trained.load_whole(vlm.model, tmp_path / "whole.safetensors")


def test_a_loaded_warm_up_leaves_the_model_as_a_trained_one_does(tiny_vlm_factory, tmp_path):
    samples = shapes.downstream_samples(8, seed=1)
    states = []
    for name in ("trained", "loaded"):
        vlm = tiny_vlm_factory()
        vlm.model.config.use_cache = True  # a Trainer sets it false: the warm-up puts it back
        warm_ups = trained.WarmUps(tmp_path / "cache")
        with warm_up(vlm, samples, CONFIG, 1.0, tmp_path / name, keep=True, run=warm_ups) as steps:
            states.append((steps, vlm.model.training, vlm.model.config.use_cache,
                           model_fingerprint(vlm, reference=False)))
        assert (not warm_ups.loaded) == (name == "trained")
    assert states[0] == states[1] and states[0][:3] == (2, vlm.model.training, True)


@pytest.mark.slow
@pytest.mark.parametrize("first", ["byorn", "score_drop"])
def test_a_judgement_loads_the_warm_up_the_other_defense_ran_and_judges_the_same(first, tiny_vlm_factory, tmp_path,
                                                                                   monkeypatch):
    samples = shapes.downstream_samples(40, seed=2)
    train = TrainConfig(lora=False, batch_size=4, learning_rate=1e-2, epochs=1)
    options = {"max_new_tokens": 6}
    alone, alone_vlm = build_defense("byorn", **options), tiny_vlm_factory()
    alone.prepare(alone_vlm, samples, tmp_path / "alone", train=train)
    order = [first, *({"byorn", "score_drop"} - {first})]
    shared = {name: build_defense(name, **options, cache_dir=str(tmp_path / "cache")) for name in order}
    for defense in shared.values():  # as a grid runs them
        defense.run_warm_up = trained.WarmUps(tmp_path / "cache")
    vlms = {name: tiny_vlm_factory() for name in order}
    scored = []
    monkeypatch.setattr(scoring, "_compute", lambda *a, _real=scoring._compute, **k: scored.append(len(a[1])) or
                        _real(*a, **k))
    for name in order:
        scored.append(name)
        shared[name].prepare(vlms[name], samples, tmp_path / name, train=train)
    # the second loads the first one's warmed weights, and with them finds every score it needs cached
    assert shared[first].run_warm_up.loaded == [] and scored[-1] == order[1]
    assert [Path(p).parent for p in shared[order[1]].run_warm_up.loaded] == [tmp_path / "cache" / trained.WEIGHTS_DIR]
    assert shared["byorn"].flagged == alone.flagged == shared["score_drop"].flagged
    assert shared["byorn"].scores == alone.scores
    assert shared["byorn"].reference_answers == alone.reference_answers
    assert shared["byorn"].steps_trained == alone.steps_trained > 0
    warmed = dict(alone_vlm.model.named_parameters())  # BYORn goes on from its warm-up's weights: the same
    assert all(torch.equal(p, warmed[name]) for name, p in vlms["byorn"].model.named_parameters())


def test_only_a_defense_that_leaves_the_fine_tuning_alone_may_load_another_cells_fine_tune():
    assert all(build_defense(name).passive for name in ("none", "oracle", "bye", "onion", "score_drop"))
    assert not build_defense("byorn").passive  # its hook replaces flagged responses during training
    warm_started = build_defense("none")
    warm_started.steps_trained = 3  # prepare ran the fine-tuning's first steps
    assert not warm_started.passive


@pytest.mark.slow
def test_a_grid_fine_tunes_the_oracle_and_byes_probe_once_with_the_same_results(tmp_path, monkeypatch,
                                                                               tiny_vlm_factory):
    monkeypatch.setattr(bench, "load_vlm", lambda name: tiny_vlm_factory())
    trainings = []
    for module in (bench, attention):
        real = module.finetune
        monkeypatch.setattr(module, "finetune", lambda vlm, samples, *a, _real=real, _name=module.__name__, **k:
                            trainings.append(_name) or _real(vlm, samples, *a, **k))
    grid = {"attacks": [{"trigger": "badnets", "target": "fixed"}, {"trigger": "blended", "target": "fixed"}],
            "defenses": ["none", "bye", "oracle"], "poison_rates": [0.2], "seeds": [0], "n_train": 20, "n_test": 4,
            "train": {"max_steps": 2, "batch_size": 4, "lora": False}}
    path = tmp_path / "grid.yaml"
    path.write_text(json.dumps(grid))
    rows = {(r["attack"], r["defense"]): r for r in bench.run_grid(path, tmp_path / "results.jsonl", tmp_path / "runs")}
    # both attacks poison the same 4 indices: the second oracle loads the first one's model; BYE's
    # probe is each attack's undefended fine-tune
    first_oracle = rows["badnets+fixed", "oracle"]["run_dir"] + "/model"
    assert rows["blended+fixed", "oracle"]["loaded_from"] == [first_oracle]
    assert rows["badnets+fixed", "oracle"]["loaded_from"] == []
    for attack in ("badnets+fixed", "blended+fixed"):
        assert rows[attack, "none"]["loaded_from"] == []
        assert rows[attack, "bye"]["loaded_from"][0] == rows[attack, "none"]["run_dir"] + "/model"
    assert "byorn.defenses.attention" not in trainings  # no probe trained
    assert trainings.count("byorn.bench") == 2 + 1 + sum(len(rows[a, "bye"]["loaded_from"]) == 1 for a in
                                                         ("badnets+fixed", "blended+fixed"))
    assert rows["blended+fixed", "oracle"]["clean_score"] == rows["badnets+fixed", "oracle"]["clean_score"]
    # a cell that loaded another's fine-tune tells nothing of its defense's cost
    assert set(cost_ratios(list(rows.values()))) == {"none", "oracle"}
    assert "| bye | not measured: every cell loaded a fine-tune an earlier cell ran | |" in \
        cost_table(list(rows.values())).splitlines()
