"""BYORn: response scores (and their cache), threshold rules, and the defense inside real training
steps: flagged targets are replaced before they reach the model, and the audit log says so."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from review_page import Page

from byorn.config import ConfigError, TrainConfig
from byorn.data import Sample
from byorn.defenses import ByornConfig, ByornDefense, ThresholdRule, build_defense, flag, group_keys
from byorn.defenses.base import NoDefense
from byorn.defenses.byorn_config import JudgeConfig
from byorn.defenses.thresholds import robust_z
from byorn.distributed import weights_sharded
from byorn.models.hf import IGNORE_INDEX, VLM
from byorn.review import write_run_review
from byorn.scoring import NEUTRAL_GREY, ScoreCache, fingerprint, score_samples, scoring_dtype
from byorn.train import attach_lora, finetune
from byorn.worlds import shapes

POISON = "zq zq zq zq zq"
POISONED = {1, 5}  # indices into `train_set`


@pytest.fixture(scope="module")
def fitted_vlm(tiny_vlm_factory) -> VLM:
    """The tiny model after 15 steps on clean descriptions: enough to make "zq zq ..." implausible
    (mean NLL ~7.5 against ~1.8 for clean responses), as a pretrained model finds it. Read only."""
    vlm = tiny_vlm_factory()
    clean = shapes.downstream_samples(32, seed=5)
    optimizer = torch.optim.AdamW(vlm.model.parameters(), lr=1e-2)
    vlm.model.train()
    for step in range(15):
        loss = vlm.model(**vlm.encode(clean[(step % 4) * 8:(step % 4) * 8 + 8])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    vlm.model.eval()
    return vlm


@pytest.fixture
def fitted(fitted_vlm) -> VLM:
    """A copy of `fitted_vlm` that a test may train, wrap or change."""
    return VLM(copy.deepcopy(fitted_vlm.model), fitted_vlm.processor)


@pytest.fixture(scope="module")
def train_set() -> list[Sample]:
    samples = shapes.downstream_samples(8, seed=11)
    return [s.with_response(POISON, is_poisoned=True) if i in POISONED else s for i, s in enumerate(samples)]


def poison_ids(samples: list[Sample]) -> set[str]:
    return {s.id for s in samples if s.response == POISON}


def read_audit(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "audit.jsonl").read_text(encoding="utf-8").splitlines()]


def spy(vlm: VLM, method: str) -> list[list[Sample]]:
    """Record the samples of every call to `vlm.<method>` (an instance attribute shadows the method)."""
    calls: list[list[Sample]] = []
    original = getattr(vlm, method)

    def recording(samples, *args, **kwargs):
        calls.append(list(samples))
        return original(samples, *args, **kwargs)

    setattr(vlm, method, recording)
    return calls


def prepared(defense: ByornDefense, vlm: VLM, samples: list[Sample], run_dir) -> ByornDefense:
    defense.prepare(vlm, samples, run_dir)
    return defense


def byorn(**changes) -> ByornDefense:
    # The planted poisons' mean NLL is ~7.5 and clean responses' ~1.8 under `fitted_vlm`; these tests
    # pin what happens to flagged samples, so they flag with that one score and a fixed cut under the
    # pretrained model alone (no warmed reference: tests/test_warmup.py), and replace in training
    # steps (generator=current) unless a test says otherwise.
    return ByornDefense(ByornConfig(**{"variant": "mean_nll", "rule": "absolute", "absolute": 4.0, "rejudge": False,
                                       "max_new_tokens": 6, "generator": "current", **changes}))


def test_the_shipped_default_judges_with_four_scores_cut_at_1_5_mads_and_replaces_with_the_warmed_reference():
    config = ByornConfig()
    assert config.variants == ["mean_nll", "image_contradiction", "token_surprise", "shared_answer"]
    assert (config.rule, config.k, config.generator, config.warm_share) == ("mad", 1.5, "warmed", 0.5)


# ---- scores ------------------------------------------------------------------------------------


def test_mean_and_max_token_nll_match_a_manual_computation(tiny_vlm):
    sample = shapes.downstream_samples(1, seed=3)[0]
    batch = tiny_vlm.encode([sample])
    labels = batch.pop("labels")[0]
    with torch.no_grad():
        log_probs = torch.log_softmax(tiny_vlm.model(**batch).logits[0].double(), dim=-1)  # [T, V]
    nll = [-float(log_probs[t - 1, labels[t]]) for t in range(1, len(labels)) if labels[t] != IGNORE_INDEX]
    assert len(nll) > 5
    assert score_samples(tiny_vlm, [sample])[0] == pytest.approx(sum(nll) / len(nll), rel=1e-5)
    assert score_samples(tiny_vlm, [sample], "max_token_nll")[0] == pytest.approx(max(nll), rel=1e-5)


def test_relative_and_image_ablated_variants_follow_their_definitions(tiny_vlm):
    samples = shapes.downstream_samples(3, seed=4)

    def mean_nll(batch):
        return [s.mean_nll for s in tiny_vlm.score(batch, batch_size=1)]

    greedy = tiny_vlm.generate(samples, max_new_tokens=5)
    own = mean_nll([s.with_response(g) for s, g in zip(samples, greedy)])
    grey = [Sample(s.id, Image.new("RGB", s.pil().size, NEUTRAL_GREY), s.instruction, s.response) for s in samples]
    expected_relative = [a - b for a, b in zip(mean_nll(samples), own)]
    expected_ablated = [a - b for a, b in zip(mean_nll(samples), mean_nll(grey))]
    relative = score_samples(tiny_vlm, samples, "relative_to_greedy", max_new_tokens=5)
    assert relative == pytest.approx(expected_relative, abs=1e-5)
    assert score_samples(tiny_vlm, samples, "image_ablated") == pytest.approx(expected_ablated, abs=1e-5)
    assert any(abs(x) > 1e-3 for x in expected_ablated)  # the grey image really is another input
    seen, blind = tiny_vlm.score(samples, batch_size=1), tiny_vlm.score(grey, batch_size=1)
    expected_contradiction = [sum(max(a - b, 0) for a, b in zip(s.token_nll, g.token_nll)) for s, g in zip(seen, blind)]
    assert score_samples(tiny_vlm, samples, "image_contradiction") == pytest.approx(expected_contradiction, abs=1e-5)


def test_token_surprise_is_each_tokens_nll_above_that_tokens_usual_cost_in_the_set(tiny_vlm):
    samples = shapes.downstream_samples(12, seed=4)
    scores = tiny_vlm.score(samples, batch_size=4)
    ids = tiny_vlm.encode(samples[:1])["labels"][0]
    assert list(scores[0].token_ids) == [t for t in ids.tolist() if t != IGNORE_INDEX]
    costs: dict[int, list[float]] = {}
    for s in scores:
        for token, nll in zip(s.token_ids, s.token_nll):
            costs.setdefault(token, []).append(nll)
    usual = {token: float(np.percentile(values, 25)) for token, values in costs.items()}
    expected = [sum(max(n - usual[t], 0.0) for t, n in zip(s.token_ids, s.token_nll)) for s in scores]
    assert score_samples(tiny_vlm, samples, "token_surprise") == pytest.approx(expected, abs=1e-6)
    assert any(x > 1e-3 for x in expected)


def test_token_surprise_singles_out_a_word_that_is_cheap_elsewhere_and_ignores_a_style_costly_everywhere():
    from byorn.models.hf import ResponseScore
    from byorn.scoring import token_surprise

    def response(*tokens: tuple[int, float]) -> ResponseScore:
        ids, nll = zip(*tokens)
        return ResponseScore(sum(nll) / len(nll), sum(nll), nll, ids)

    # token 1 is an unfamiliar style word: 6 nats in every response; token 2 is cheap where true
    usual = [response((1, 6.0), (2, 0.1)) for _ in range(6)]
    swapped = response((1, 6.0), (2, 5.1))
    assert token_surprise([*usual, swapped]) == pytest.approx([0.0] * 6 + [5.0])


def test_shared_answer_pools_the_image_evidence_of_one_answer_given_to_many_images():
    from byorn.scoring import shared_answer

    clean = [f"In this photo, scene {i}." for i in range(40)]
    spread = [(-1.0 + 0.05 * i) for i in range(40)]
    campaign = ["A banana is lying on the table."] * 9 + ["a banana is  lying on the table"]  # case, spaces, stop
    grounded = ["There is a red circle."] * 4
    pooled = shared_answer([*clean, *campaign, *grounded], [*spread, *[0.5] * 10, *[-1.0] * 4])
    assert pooled[:40] == [0.0] * 40  # an answer given once has nothing to pool
    assert len(set(pooled[40:50])) == 1 and pooled[40] > 1.5  # ten weak votes make one strong verdict
    assert pooled[50] < 0  # an answer each of its images supports pools into a grounded score


def test_several_variants_share_their_forward_passes(tiny_vlm, monkeypatch):
    from byorn.scoring import score_variants

    samples = shapes.downstream_samples(4, seed=2)
    alone = {v: score_samples(tiny_vlm, samples, v) for v in ("mean_nll", "image_contradiction", "token_surprise")}
    counted = {"encode": 0, "response_logits": 0}
    for name in counted:
        real = getattr(VLM, name)

        def counting(self, *args, _name=name, _real=real, **kwargs):
            counted[_name] += 1
            return _real(self, *args, **kwargs)
        monkeypatch.setattr(VLM, name, counting)
    together = score_variants(tiny_vlm, samples, list(alone))
    assert all(together[v] == pytest.approx(alone[v]) for v in alone)
    # one batch: encoded once, then a forward pass with the true image and one with the grey one
    assert counted == {"encode": 1, "response_logits": 2}


def test_a_view_scores_what_scoring_the_viewed_samples_scores(tiny_vlm, monkeypatch):
    from byorn.scoring import on_grey

    samples = [*shapes.downstream_samples(5, seed=3), Sample("text", None, "What is shown?", "Nothing.")]
    grey = [replace(s, image=on_grey(s.pil())) if s.has_image else s for s in samples]
    expected = list(zip(tiny_vlm.score(samples, batch_size=4), tiny_vlm.score(grey, batch_size=4)))

    def assert_scores_match(viewed):
        assert len(viewed) == len(samples)
        for got, want in zip(viewed, expected):
            for score, wanted in zip(got, want, strict=True):
                assert score.token_ids == wanted.token_ids
                assert score.token_nll == pytest.approx(wanted.token_nll, abs=1e-6)

    viewed = tiny_vlm.score_views(samples, [on_grey], batch_size=4)
    assert_scores_match(viewed)
    own, blind = viewed[0]
    assert max(abs(a - b) for a, b in zip(own.token_nll, blind.token_nll)) > 1e-3  # the view is another input
    assert viewed[-1][0] == viewed[-1][1]  # a text-only sample has no image to view
    # an image processor that answers in other shapes than the processor did: the batch is encoded again
    monkeypatch.setattr(VLM, "_image_inputs", lambda self, images: {"pixel_values": torch.zeros(1, 3, 2, 2)})
    assert_scores_match(tiny_vlm.score_views(samples, [on_grey], batch_size=4))


def test_reference_scores_under_lora_are_the_base_models_whatever_the_adapter(fresh_vlm):
    samples = shapes.downstream_samples(3, seed=6)
    base = score_samples(fresh_vlm, samples)
    attach_lora(fresh_vlm, TrainConfig())
    lora_b = [p for n, p in fresh_vlm.model.named_parameters() if "lora_B" in n]
    assert lora_b
    with torch.no_grad():
        for p in lora_b:
            p.normal_(std=0.5)
    adapted = score_samples(fresh_vlm, samples, reference=False)
    assert max(abs(a - b) for a, b in zip(adapted, base)) > 1e-3
    assert score_samples(fresh_vlm, samples, reference=True) == pytest.approx(base, abs=1e-6)
    # the adapter is enabled again after the reference pass
    assert score_samples(fresh_vlm, samples, reference=False) == pytest.approx(adapted, abs=1e-6)


def test_unknown_variant_and_duplicate_ids_are_errors(tiny_vlm):
    sample = shapes.downstream_samples(1, seed=3)[0]
    with pytest.raises(ValueError, match="variant must be one of mean_nll"):
        score_samples(tiny_vlm, [sample], "median_nll")
    with pytest.raises(ValueError, match="unique"):
        score_samples(tiny_vlm, [sample, sample])


# ---- threshold rules ---------------------------------------------------------------------------


def test_quantile_rule_flags_above_the_interpolated_quantile():
    result = flag([float(x) for x in range(1, 11)], ["all"] * 10, ThresholdRule("quantile", quantile=0.8))
    assert result.thresholds == {"all": pytest.approx(8.2)}  # 1 + 0.8 * 9 = position 7.2 -> 8.2
    assert result.flagged == [False] * 8 + [True, True]


def test_the_mad_rule_flags_scores_more_than_k_scaled_mads_above_their_groups_median():
    # as the defense cuts: each score in its group's MAD units, then the absolute rule at k
    scores = [1.0, 2.0, 3.0, 4.0, 100.0]  # median 3, absolute deviations 2 1 0 1 97 -> MAD 1
    z = robust_z(scores, ["all"] * 5)
    assert z == pytest.approx([(x - 3) / 1.4826 for x in scores])
    result = flag(z, ["all"] * 5, JudgeConfig(k=3.0).threshold_rule())
    assert result.thresholds == {"all": 3.0} and result.flagged == [False, False, False, False, True]
    assert flag(z, ["all"] * 5, JudgeConfig(k=0.0).threshold_rule()).flagged == [False] * 3 + [True] * 2


def test_absolute_rule_flags_strictly_above_the_value():
    assert flag([1.0, 5.0, 5.5], ["all"] * 3, ThresholdRule("absolute", absolute=5.0)).flagged == [False, False, True]


def test_each_group_gets_its_own_threshold():
    scores = [1.0, 2.0, 3.0, 4.0, 20.0, 50.0, 51.0, 52.0, 53.0, 54.0]
    groups = ["a"] * 5 + ["b"] * 5
    rule = JudgeConfig(k=3.0).threshold_rule()
    # One global scale (median 35, MAD 18.5) flags nothing; per group the outlier of "a" stands out
    # and the uniformly high but unremarkable "b" is left alone.
    assert flag(robust_z(scores, ["all"] * 10), ["all"] * 10, rule).flagged == [False] * 10
    result = flag(robust_z(scores, groups), groups, rule)
    assert result.flagged == [False] * 4 + [True] + [False] * 5
    assert result.groups == groups
    # a quantile cuts each group at its own quantile
    assert flag(scores, groups, ThresholdRule("quantile", quantile=0.5)).thresholds == {"a": 3.0, "b": 52.0}


def test_group_keys_by_task_or_instruction():
    samples = [Sample("a", Image.new("RGB", (4, 4)), "Describe.", "x", {"task": "caption"}),
               Sample("b", Image.new("RGB", (4, 4)), "What colour?", "y", {"task": "vqa"})]
    assert group_keys(samples, None) == group_keys(samples, "none") == ["all", "all"]
    assert group_keys(samples, "task") == ["caption", "vqa"]
    assert group_keys(samples, "instruction") == ["Describe.", "What colour?"]
    with pytest.raises(ValueError, match=r"meta\['task'\].*'c'"):
        group_keys(samples + [Sample("c", Image.new("RGB", (4, 4)), "?", "z")], "task")
    with pytest.raises(ValueError, match="group_by must be one of"):
        group_keys(samples, "colour")


@pytest.mark.parametrize("changes, field", [
    ({"quantile": 0.0}, "quantile"), ({"quantile": 1.0}, "quantile"), ({"k": -0.5}, "k"), ({"k": math.nan}, "k"),
    ({"rule": "zscore"}, "rule"), ({"rule": "absolute"}, "absolute"),
])
def test_bad_rule_parameters_name_the_field(changes, field):
    with pytest.raises(ValueError, match=f"^{field} "):
        JudgeConfig(**changes)
    with pytest.raises(ValueError, match=f"^{field} "):
        ByornConfig(**changes)


def test_non_finite_scores_are_an_error():
    with pytest.raises(ValueError, match="score 1 is not finite"):
        flag([1.0, math.nan], ["all", "all"], ThresholdRule())


# ---- registry ----------------------------------------------------------------------------------


def test_build_defense_by_name_with_checked_options():
    defense = build_defense("byorn", rule="quantile", quantile=0.8, group_by="task")
    assert isinstance(defense, ByornDefense)
    assert defense.config == ByornConfig(rule="quantile", quantile=0.8, group_by="task")
    available = "bye, byorn, byorn_paper, none, onion, oracle, random_drop, reference_ratio, score_drop, tcap"
    with pytest.raises(ValueError, match=rf"^Unknown defense 'x'\. Available: {available}$"):
        build_defense("x")
    with pytest.raises(ConfigError, match="unknown key.*'quantil'.*Valid keys: variant"):
        build_defense("byorn", quantil=0.8)
    with pytest.raises(ValueError, match="takes no options"):
        build_defense("none", k=1)
    samples = shapes.downstream_samples(2, seed=1)
    assert type(build_defense("none")) is NoDefense and build_defense("none").on_batch(samples, None) is samples


def test_the_oracle_trains_on_the_samples_labelled_clean_and_needs_the_labels():
    samples = shapes.downstream_samples(4, seed=1)
    labelled = [s.with_response(s.response, is_poisoned=i % 2 == 0) for i, s in enumerate(samples)]
    assert [s.id for s in build_defense("oracle").training_set(labelled)] == [samples[1].id, samples[3].id]
    with pytest.raises(ValueError, match="needs samples labelled by byorn's poisoning"):
        build_defense("oracle").training_set(samples)


# ---- the defense in training -------------------------------------------------------------------


def test_a_run_review_lists_the_flagged_samples_and_what_replaced_them(fitted, train_set, tmp_path):
    run = tmp_path / "run"
    defense = byorn(generator="reference")
    defense.prepare(fitted, train_set, run)
    finetune(fitted, train_set, TrainConfig(max_steps=2, batch_size=4, logging_steps=1), run, hook=defense)
    page = Page(write_run_review(run, train_set, defense).read_text(encoding="utf-8"))
    assert sorted(page.flagged_ids) == sorted(poison_ids(train_set))
    text = "".join(page.text)
    for record in read_audit(run):
        if record["event"] == "replaced":
            assert f"step {record['step']} (reference):" in text and record["response"] in text


def test_planted_poisons_are_flagged_replaced_and_never_trained_on(fitted, train_set, tmp_path):
    run = tmp_path / "run"
    defense = byorn()
    defense.prepare(fitted, train_set, run)
    assert {s.id for s, hit in zip(train_set, defense.flagging.flagged) if hit} == poison_ids(train_set)

    trained = spy(fitted, "encode")
    trainer = finetune(fitted, train_set, TrainConfig(max_steps=2, batch_size=4, logging_steps=1), run, hook=defense)
    assert trainer.state.global_step == 2
    seen = {s.id: s for batch in trained for s in batch}
    assert seen.keys() == {s.id for s in train_set}  # one epoch: every sample trained once
    assert not any(s.response == POISON for s in seen.values())
    originals = {s.id: s for s in train_set}
    for sample_id, sample in seen.items():
        if sample_id in poison_ids(train_set):
            assert sample.meta["replaced"] is True and sample.meta["is_poisoned"] is True
        else:
            assert sample.response == originals[sample_id].response and "replaced" not in sample.meta

    audit = read_audit(run)
    flagged = [r for r in audit if r["event"] == "flagged"]
    replaced = [r for r in audit if r["event"] == "replaced"]
    assert len(flagged) + len(replaced) == len(audit)
    assert sorted(r["id"] for r in flagged) == sorted(poison_ids(train_set))
    for record in flagged:
        assert record["response"] == POISON and record["group"] == "all"
        assert record["score"] > record["threshold"] == 4.0
        assert record["reference_response"] == defense.reference_answers[record["id"]]
    assert sorted(r["id"] for r in replaced) == sorted(poison_ids(train_set))
    for record in replaced:
        assert record["step"] in (1, 2) and record["epoch"] == 0
        assert record["response"] == seen[record["id"]].response


def test_an_empty_generation_falls_back_to_the_reference_answer(fitted, train_set, tmp_path):
    defense = byorn()
    defense.prepare(fitted, train_set, tmp_path)
    defense.reference_answers = dict.fromkeys(defense.reference_answers, "A red circle.")
    fitted.generate = lambda samples, *args, **kwargs: [" "] * len(samples)
    trainer = SimpleNamespace(vlm=fitted, state=SimpleNamespace(global_step=0, epoch=0.0))
    out = defense.on_batch(list(train_set[:4]), trainer)
    assert out[1].response == "A red circle."
    assert read_audit(tmp_path)[-1]["source"] == "reference_fallback"


def test_the_guard_gives_the_reference_answer_once_one_answer_serves_too_many_images(fitted, train_set, tmp_path):
    defense = byorn(guard=1)
    defense.prepare(fitted, train_set, tmp_path)
    defense.reference_answers = {i: f"reference for {i}" for i in defense.reference_answers}
    fitted.generate = lambda samples, *args, **kwargs: ["A man in a black shirt."] * len(samples)  # collapsed
    state = SimpleNamespace(global_step=0, epoch=0.0)
    trainer = SimpleNamespace(vlm=fitted, state=state)
    out = {s.id: s.response for s in defense.on_batch(list(train_set[:6]), trainer)}
    first, second = (train_set[i].id for i in sorted(POISONED))
    assert out[first] == "A man in a black shirt." and out[second] == f"reference for {second}"
    assert [r["source"] for r in read_audit(tmp_path) if r["event"] == "replaced"] == ["current", "reference_guard"]
    state.epoch = 1.0  # a new epoch counts anew
    assert defense.on_batch([train_set[5]], trainer)[0].response == "A man in a black shirt."


def test_training_survives_when_every_generation_is_empty(fitted, train_set, tmp_path):
    fitted.generate = lambda samples, *args, **kwargs: [""] * len(samples)
    trained = spy(fitted, "encode")
    trainer = finetune(fitted, train_set, TrainConfig(max_steps=2, batch_size=4, logging_steps=1), tmp_path,
                       hook=prepared(byorn(), fitted, train_set, tmp_path))
    assert all(math.isfinite(e["loss"]) for e in trainer.state.log_history if "loss" in e)
    assert {s.id: s.response for batch in trained for s in batch if s.id in poison_ids(train_set)} == \
        dict.fromkeys(poison_ids(train_set), "")


@pytest.mark.parametrize("changes, expected_calls", [
    ({"regenerate": "epoch"}, [["p1", "p5"], [], ["p1"]]),
    ({"regenerate": "step"}, [["p1", "p5"], ["p1"], ["p1"]]),
    ({"generator": "reference"}, [[], [], []]),
])
def test_when_replacements_are_generated(fitted, train_set, tmp_path, changes, expected_calls):
    defense = prepared(byorn(**changes), fitted, train_set, tmp_path)
    calls = spy(fitted, "generate")
    names = {train_set[i].id: f"p{i}" for i in POISONED}
    state = SimpleNamespace(global_step=0, epoch=0.0)
    trainer = SimpleNamespace(vlm=fitted, state=state)
    p1, responses = train_set[1].id, []
    # (step, epoch, batch): both poisons in epoch 0; p1 again later in epoch 0; p1 in epoch 1
    for step, epoch, batch in ((0, 0.0, train_set[:6]), (1, 0.5, train_set[1:2]), (2, 1.0, train_set[1:3])):
        state.global_step, state.epoch = step, epoch
        before = len(calls)
        responses.append(next(s.response for s in defense.on_batch(list(batch), trainer) if s.id == p1))
        assert len(calls) - before <= 1  # one batched generate call per training batch at most
        made = [names[s.id] for call in calls[before:] for s in call]
        assert made == expected_calls[step]
    if changes.get("generator") == "reference":
        assert responses == [defense.reference_answers[p1]] * 3
    steps = [r["step"] for r in read_audit(tmp_path) if r["event"] == "replaced" and r["id"] == p1]
    assert steps == [1, 2, 3]


def test_on_batch_before_prepare_is_an_error(train_set):
    with pytest.raises(RuntimeError, match="prepare"):
        byorn().on_batch(list(train_set), SimpleNamespace())


# ---- cache -------------------------------------------------------------------------------------


def test_scores_are_cached_per_fingerprint_and_a_changed_response_invalidates_them(fitted, train_set, tmp_path):
    scored = spy(fitted, "score_views")
    first = prepared(byorn(), fitted, train_set, tmp_path)
    assert scored and len(read_audit(tmp_path)) == len(POISONED)
    key = fingerprint(fitted, train_set, "mean_nll", dtype=scoring_dtype(fitted, "auto"))
    lines = [json.loads(x) for x in ScoreCache(tmp_path).path(key).read_text().splitlines()]
    assert lines == [{"id": s.id, "score": score} for s, score in zip(train_set, first.scores)]

    scored.clear()
    second = prepared(byorn(), fitted, train_set, tmp_path)
    assert scored == [] and second.scores == first.scores
    assert len(read_audit(tmp_path)) == len(POISONED)  # a new prepare starts a new audit log

    changed = [train_set[0].with_response(train_set[0].response + " It is small.")] + train_set[1:]
    assert fingerprint(fitted, changed, "mean_nll") != key
    assert fingerprint(fitted, train_set, "max_token_nll") != key
    # the grey pass's prefix reused rounds otherwise: a new key where a score reads that pass, not elsewhere
    assert fingerprint(fitted, train_set, "mean_nll", dtype=scoring_dtype(fitted, "auto"), reuse_prefix=True) == key
    grey = fingerprint(fitted, train_set, "image_contradiction")
    assert fingerprint(fitted, train_set, "image_contradiction", reuse_prefix=True) != grey
    prepared(byorn(), fitted, changed, tmp_path)
    assert len(scored) == 1 and len(list(tmp_path.glob("scores-*.jsonl"))) == 2
    assert not list(tmp_path.glob(".*.tmp"))


def test_scoring_precision_auto_is_bfloat16_only_where_the_hardware_computes_it(fitted, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert scoring_dtype(fitted, "auto") == torch.bfloat16
    assert scoring_dtype(fitted, "float32") == torch.float32
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert scoring_dtype(fitted, "auto") == torch.float32  # emulated bfloat16 would be slower, not faster
    assert scoring_dtype(fitted, "bfloat16") == torch.bfloat16
    fitted.model.to(torch.bfloat16)
    assert scoring_dtype(fitted, "float32") == torch.bfloat16  # weights loaded in another dtype compute in it
    on_gpu = SimpleNamespace(dtype=torch.float32, device=torch.device("cuda", 1))
    for capability, expected in (((7, 5), torch.float32), ((8, 0), torch.bfloat16)):  # T4 emulates; A100 has it
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device, c=capability: c)
        assert scoring_dtype(on_gpu, "auto") == expected
    with pytest.raises(ValueError, match="precision must be one of"):
        scoring_dtype(fitted, "fp8")


def test_the_judging_defenses_say_what_dtype_auto_resolved_to_and_the_others_say_nothing(fitted, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    for name in ("byorn", "score_drop", "random_drop"):
        assert build_defense(name).run_facts(fitted) == {"scoring_dtype": "bfloat16"}
        assert build_defense(name, precision="float32").run_facts(fitted) == {"scoring_dtype": "float32"}
    assert build_defense("none").run_facts(fitted) == {} and build_defense("onion").run_facts(fitted) == {}


def test_bfloat16_scores_are_cached_apart_and_rank_the_samples_as_float32_does(fitted, train_set, tmp_path):
    cache = ScoreCache(tmp_path)
    exact = score_samples(fitted, train_set, cache=cache, precision="float32")
    fast = score_samples(fitted, train_set, cache=cache, precision="bfloat16")
    assert fast != exact and len(list(tmp_path.glob("scores-*.jsonl"))) == 2
    assert fast == pytest.approx(exact, abs=0.1)
    assert set(sorted(range(8), key=fast.__getitem__)[-2:]) == set(sorted(range(8), key=exact.__getitem__)[-2:])


def test_combined_variants_flag_the_union_of_each_scores_own_mad_cut(tiny_vlm, tmp_path):
    from byorn.defenses.byorn import judge

    samples = shapes.downstream_samples(30, seed=9)
    samples[3] = samples[3].with_response(POISON)
    samples[7] = samples[7].with_response(samples[7].response.replace(" circle", " square", 1) + " zq")
    single = {v: judge(tiny_vlm, samples, JudgeConfig(variant=v, k=2.0, rejudge=False), tmp_path) for v in
              ("mean_nll", "image_contradiction")}
    both = judge(tiny_vlm, samples, JudgeConfig(variant="mean_nll+image_contradiction", k=2.0, rejudge=False),
                 tmp_path)
    union = [a or b for a, b in zip(*(j.flagging.flagged for j in single.values()))]
    assert both.flagging.flagged == union and any(union)
    top = judge(tiny_vlm, samples, JudgeConfig(variant="mean_nll+image_contradiction", rule="quantile",
                                               quantile=0.9, rejudge=False), tmp_path)
    assert top.scores == both.scores and sum(top.flagging.flagged) == 3  # the top tenth of the largest unit
    with pytest.raises(ValueError, match="variant must be one of"):
        JudgeConfig(variant="mean_nll+nope")


def test_the_combined_score_takes_a_z_scaled_score_as_it_is_and_the_others_in_mad_units():
    from byorn.defenses.byorn import combined_score

    groups = ["all"] * 6
    nll = [1.0, 1.1, 0.9, 1.2, 0.8, 1.0]
    pooled = [0.0, 0.0, 0.0, 0.0, 2.0, 2.0]  # already in MADs: most answers unique, one pair pooled
    combined = combined_score(["mean_nll", "shared_answer"], [nll, pooled], groups)
    # renormalising the mostly-zero pooled score (MAD 0) would blow the pair up to ~1e12
    assert combined == pytest.approx([max(z, p) for z, p in zip(robust_z(nll, groups), pooled)])


@pytest.mark.parametrize("launcher_env", [{"ACCELERATE_USE_FSDP": "true"},
                                          {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}])
@pytest.mark.parametrize("changes", [{"generator": "current"}, {"generator": "ema"}, {"generator": "warmed"},
                                     {"rejudge": True, "generator": "reference"}])
def test_training_the_replacement_writer_is_refused_when_weights_are_sharded(train_set, tmp_path, monkeypatch,
                                                                            launcher_env, changes):
    for name, value in launcher_env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="Use -d (rejudge=false -d )?generator=reference"):
        byorn(**changes).prepare(None, train_set, tmp_path)
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert not weights_sharded()  # ZeRO-2 keeps whole weights on every process


def test_a_resumed_run_takes_its_saved_verdict_and_answers_without_judging_again(tiny_vlm_factory, tmp_path,
                                                                                 monkeypatch):
    from byorn.defenses import byorn as byorn_module

    vlm = tiny_vlm_factory()
    samples = [s.with_response(POISON) if i % 10 == 3 else s for i, s in enumerate(shapes.downstream_samples(40, 2))]
    config = ByornConfig(max_new_tokens=6)
    first = ByornDefense(config)
    first.prepare(vlm, samples, tmp_path, train=TrainConfig(lora=False, batch_size=4, learning_rate=1e-2))
    assert first.writer == "warmed" and first.reference_answers

    def no_judging(*args, **kwargs):
        raise AssertionError("judged again")

    monkeypatch.setattr(byorn_module, "judge", no_judging)
    resumed = ByornDefense(config)
    resumed.prepare(vlm, samples, tmp_path, resume_step=0)
    assert (resumed.scores, resumed.flagged) == (first.scores, first.flagged)
    assert (resumed.reference_answers, resumed.writer) == (first.reference_answers, first.writer)
    assert resumed.steps_trained == first.steps_trained > 0  # warm_start: the warm-up's steps, not run again
    with pytest.raises(ValueError, match="verdict.json.*other samples"):  # the run's data changed
        ByornDefense(config).prepare(vlm, samples[::-1], tmp_path, resume_step=0)
    (tmp_path / "verdict.json").write_text('{"answers": {}, "writer": "warmed"}')  # no judgement in it
    with pytest.raises(ValueError, match="not a judgement record") as malformed:
        ByornDefense(config).prepare(vlm, samples, tmp_path, resume_step=0)
    assert str(malformed.value).count("verdict.json") == 1  # the file named once
    with pytest.raises(AssertionError, match="judged again"):  # a fresh run (no resume) judges
        ByornDefense(config).prepare(vlm, samples, tmp_path)


@pytest.mark.parametrize("reuse", [False, True])
def test_reuse_prefix_reaches_the_grey_pass(fitted, train_set, tmp_path, monkeypatch, reuse):
    asked = []
    views = fitted.score_views
    monkeypatch.setattr(fitted, "score_views", lambda *args, **kwargs: (asked.append(kwargs["reuse_prefix"]),
                                                                       views(*args, **kwargs))[1])
    prepared(byorn(variant="mean_nll+image_contradiction", rule="mad", reuse_prefix=reuse, canaries=0), fitted,
             train_set, tmp_path)
    assert asked and set(asked) == {reuse}
