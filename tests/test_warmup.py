"""The warmed reference (BYORn's default replacement writer): fine-tuned only on the samples the
judgement found least suspicious, its weights put back exactly afterwards, its answers the
replacements that training then uses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from peft import PeftModel

from byorn import in_place
from byorn.config import TrainConfig
from byorn.defenses import ByornConfig, ByornDefense
from byorn.defenses.byorn import judge
from byorn.defenses.byorn_config import JudgeConfig
from byorn.defenses.byorn_records import Judgement
from byorn.defenses.thresholds import Flagging
from byorn.defenses.warm_set import drawn, warm_set
from byorn.in_place import warm_up
from byorn.train import finetune
from byorn.worlds import shapes

POISON = "zq zq zq zq zq"


def test_the_warm_set_takes_the_lowest_scores_and_never_a_flagged_sample():
    judgement = Judgement([5.0, 1.0, 3.0, 0.0, 2.0, 4.0], Flagging([True, False, False, True, False, False],
                                                                 ["all"] * 6, {"all": 0.0}))
    assert warm_set(judgement, JudgeConfig(warm_share=0.5)) == [1, 4, 2]
    assert warm_set(judgement, JudgeConfig(warm_share=1.0)) == [1, 4, 2, 5]  # all asked for: still none flagged
    assert warm_set(judgement, JudgeConfig(warm_share=0.0)) == []
    assert warm_set(judgement, JudgeConfig(warm_epochs=0.0)) == []


def test_a_bounded_warm_set_is_a_seeded_draw_from_what_the_share_chooses():
    scores = [float(i % 97) for i in range(1000)]
    judgement = Judgement(scores, Flagging([s > 90 for s in scores], ["all"] * 1000, {"all": 90.0}))
    whole = warm_set(judgement, JudgeConfig(warm_share=0.5))
    bounded = warm_set(judgement, JudgeConfig(warm_share=0.5, warm_max=100), seed=3)
    assert len(bounded) == 100 and set(bounded) <= set(whole)
    assert bounded == sorted(bounded, key=scores.__getitem__)  # still trained in score order
    assert bounded == warm_set(judgement, JudgeConfig(warm_share=0.5, warm_max=100), seed=3)
    assert bounded != warm_set(judgement, JudgeConfig(warm_share=0.5, warm_max=100), seed=4)
    # a draw, not the least suspicious hundred: it spans the half's range of scores
    assert max(scores[i] for i in bounded) > max(scores[i] for i in whole[:100]) + 10
    assert warm_set(judgement, JudgeConfig(warm_share=0.5, warm_max=len(whole))) == whole  # a bound not reached
    assert warm_set(judgement, JudgeConfig(warm_share=0.5, warm_max=0)) == whole  # no bound
    # the draw follows which samples are candidates, not their scores' order (near-equal scores round
    # otherwise in another number of processes)
    tied = Judgement([0.0] * 1000, Flagging([False] * 1000, ["all"] * 1000, {"all": 1.0}))
    assert set(warm_set(tied, JudgeConfig(warm_share=1.0, warm_max=100), seed=3)) == \
        set(drawn(list(range(999, -1, -1)), [0.0] * 1000, 100, 3))

def mean_nll(vlm, samples) -> list[float]:
    return [s.mean_nll for s in vlm.score(samples, batch_size=8)]


@pytest.mark.parametrize("lora", [False, True])
def test_the_warmed_reference_is_trained_inside_the_block_and_restored_after_it(tiny_vlm_factory, tmp_path, lora):
    vlm = tiny_vlm_factory()
    weights = {name: p.detach().clone() for name, p in vlm.model.named_parameters()}
    vlm.model.get_input_embeddings().weight.requires_grad_(False)  # a frozen part stays frozen, the rest trainable
    trainable = {name: p.requires_grad for name, p in vlm.model.named_parameters()}
    samples = shapes.downstream_samples(16, seed=3)
    before = mean_nll(vlm, samples)
    config = TrainConfig(lora=lora, batch_size=4, learning_rate=1e-2, logging_steps=1)
    with warm_up(vlm, samples, config, 1.0, tmp_path / "warmup"):
        inside = mean_nll(vlm, samples)
    assert sum(inside) < sum(before)  # it learnt the downstream answers it was warmed on
    assert mean_nll(vlm, samples) == before
    assert not isinstance(vlm.model, PeftModel)
    assert all(torch.equal(weights[name], p) for name, p in vlm.model.named_parameters())
    assert trainable == {name: p.requires_grad for name, p in vlm.model.named_parameters()}
    assert not (tmp_path / "warmup").exists()


@pytest.mark.parametrize("lora", [False, True])
def test_a_kept_warm_up_leaves_the_warmed_weights_and_says_how_many_steps_it_took(tiny_vlm_factory, tmp_path, lora):
    vlm = tiny_vlm_factory()
    samples = shapes.downstream_samples(16, seed=3)
    config = TrainConfig(lora=lora, batch_size=4, learning_rate=1e-2)
    with warm_up(vlm, samples, config, 1.0, tmp_path / "warmup", keep=True) as steps:
        inside = mean_nll(vlm, samples)
    assert steps == 4  # one epoch of 16 samples in batches of 4, trained here
    assert mean_nll(vlm, samples) == inside
    assert isinstance(vlm.model, PeftModel) == lora  # under LoRA the adapter stays, to be trained on


def test_warm_start_fine_tunes_from_the_warm_up_for_the_steps_it_did_not_take(tiny_vlm_factory, tmp_path):
    vlm = tiny_vlm_factory()
    samples = shapes.downstream_samples(40, seed=6)
    train = TrainConfig(lora=False, batch_size=4, learning_rate=1e-2, epochs=2)
    pretrained = checksum(vlm)
    defense = ByornDefense(ByornConfig(warm_start=True, max_new_tokens=6))
    defense.prepare(vlm, samples, tmp_path, train=train)
    assert checksum(vlm) != pretrained  # the fine-tuning starts from the warmed weights
    assert defense.steps_trained == 5  # the warm-up: one epoch on the 20 least suspicious samples, batches of 4
    trainer = finetune(vlm, defense.training_set(samples), train, tmp_path / "run", hook=defense)
    assert trainer.state.global_step == 20 - 5  # 2 epochs of 10 steps, less the warm-up's


@pytest.mark.parametrize("options, train", [({"generator": "reference"}, TrainConfig(lora=False)),
                                            ({}, None)])
def test_warm_start_does_not_apply_without_the_warmed_writer_or_the_fine_tunings_config(tiny_vlm_factory, tmp_path,
                                                                                      options, train):
    # the frozen reference's answers need the pretrained weights; without train= the warm-up is LoRA
    # at TrainConfig's defaults, which need not be the fine-tuning
    vlm = tiny_vlm_factory()
    pretrained = checksum(vlm)
    defense = ByornDefense(ByornConfig(warm_start=True, max_new_tokens=6, **options))
    defense.prepare(vlm, shapes.downstream_samples(40, seed=6), tmp_path, train=train)
    assert checksum(vlm) == pretrained
    assert defense.steps_trained == 0


def test_byorn_warms_the_reference_on_unflagged_samples_and_replaces_with_its_answers(tiny_vlm_factory, tmp_path,
                                                                                      monkeypatch):
    vlm = tiny_vlm_factory()
    samples = shapes.downstream_samples(12, seed=4)
    samples = [s.with_response(POISON, is_poisoned=True) if i in (2, 7) else s for i, s in enumerate(samples)]
    warmed_on, written = [], {}
    real_train = in_place.train_steps

    def recording_train(vlm, warm, *args, **kwargs):
        warmed_on.extend(s.id for s in warm)
        trainer = real_train(vlm, warm, *args, **kwargs)
        written.update(zip([s.id for s in samples], vlm.generate(samples, 6)))  # the warmed model's answers
        return trainer

    monkeypatch.setattr(in_place, "train_steps", recording_train)
    before = mean_nll(vlm, samples)
    defense = ByornDefense(ByornConfig(variant="mean_nll", rule="quantile", quantile=0.75, max_new_tokens=6,
                                       generator="warmed", warm_share=0.5, warm_start=False))
    defense.prepare(vlm, samples, tmp_path, train=TrainConfig(lora=False, batch_size=4, learning_rate=1e-2))
    flagged = {s.id for s, hit in zip(samples, defense.flagged) if hit}
    assert {samples[2].id, samples[7].id} <= flagged
    assert len(warmed_on) == 6 and not set(warmed_on) & flagged
    assert defense.reference_answers == {i: written[i] for i in flagged}
    assert mean_nll(vlm, samples) == before  # without warm_start training starts from the pretrained weights


def test_with_nothing_to_warm_on_the_frozen_reference_writes(tiny_vlm_factory, tmp_path, monkeypatch):
    vlm = tiny_vlm_factory()
    samples = shapes.downstream_samples(6, seed=4)
    monkeypatch.setattr(in_place, "train_steps", lambda *args, **kwargs: pytest.fail("no warm-up expected"))
    defense = ByornDefense(ByornConfig(variant="mean_nll", rule="quantile", quantile=0.5, max_new_tokens=6,
                                       generator="warmed", warm_share=0.0))
    defense.prepare(vlm, samples, tmp_path)
    flagged = [s for s, hit in zip(samples, defense.flagged) if hit]
    assert defense.reference_answers == dict(zip([s.id for s in flagged], vlm.generate(flagged, 6)))


def checksum(vlm) -> float:
    return float(sum(p.detach().double().sum() for p in vlm.model.parameters()))


def warmed_then(record, measure, *args):
    """A warm-up runner that records `measure(vlm, *args)` of the warmed model, as the judgement sees it."""
    def run(vlm, samples, config, fine_tune):
        steps = fine_tune()
        record(measure(vlm, *args))
        return steps
    return run


def test_the_warmed_reference_judges_the_samples_it_did_not_train_on(tiny_vlm_factory, tmp_path):
    vlm = tiny_vlm_factory()
    samples = shapes.downstream_samples(40, seed=6)
    poisons = {i for i in range(40) if i % 10 == 3}
    samples = [s.with_response(POISON) if i in poisons else s for i, s in enumerate(samples)]
    train = TrainConfig(lora=False, batch_size=4, learning_rate=1e-2)
    first = judge(vlm, samples, JudgeConfig(rejudge=False), tmp_path / "first")
    pretrained = checksum(vlm)
    inside = []
    judgement = judge(vlm, samples, JudgeConfig(), tmp_path / "both", train, run=warmed_then(inside.append, checksum))
    assert inside[0] != pretrained and checksum(vlm) == pretrained  # judged by the warmed model, then restored
    warm = set(judgement.warmed_on)
    assert len(warm) == 20 and not any(first.flagging.flagged[i] for i in warm)
    # the warm set keeps the pretrained model's scores and is never flagged; the others are judged again
    assert all(judgement.scores[i] == first.scores[i] and not judgement.flagging.flagged[i] for i in warm)
    assert any(judgement.scores[i] != first.scores[i] for i in set(range(40)) - warm)
    assert poisons <= {i for i, hit in enumerate(judgement.flagging.flagged) if hit}


@pytest.mark.parametrize("rule", ["mad", "quantile"])
def test_the_second_verdict_is_the_warmed_references_mean_nll_in_mad_units_of_what_it_judges(tiny_vlm_factory,
                                                                                              tmp_path, rule):
    vlm = tiny_vlm_factory()
    samples = shapes.downstream_samples(40, seed=6)
    train = TrainConfig(lora=False, batch_size=4, learning_rate=1e-2)
    config = JudgeConfig(rule=rule, precision="float32")  # as mean_nll below scores
    warmed = []
    judgement = judge(vlm, samples, config, tmp_path, train, run=warmed_then(warmed.append, mean_nll, samples))
    held = [i for i in range(40) if i not in set(judgement.warmed_on)]
    warmed_nll = [warmed[0][i] for i in held]
    assert judgement.warmed_on
    # one scale for both verdicts (the warm set keeps the first verdict's MAD units), whatever the rule
    expected = (np.array(warmed_nll) - np.median(warmed_nll)) / (1.4826 * np.median(np.abs(
        np.array(warmed_nll) - np.median(warmed_nll))))
    assert [judgement.scores[i] for i in held] == pytest.approx(expected.tolist(), rel=1e-4, abs=1e-4)


def test_a_warmed_reference_would_judge_too_few_so_the_pretrained_verdict_stands(tiny_vlm_factory, tmp_path, caplog):
    vlm = tiny_vlm_factory()
    samples = shapes.downstream_samples(12, seed=6)
    judgement = judge(vlm, samples, JudgeConfig(), tmp_path)
    assert judgement.warmed_on == ()
    assert judgement.scores == judge(vlm, samples, JudgeConfig(rejudge=False), tmp_path).scores
    assert "verdict stands" in caplog.text


def test_byorns_default_replacements_are_written_by_the_warmed_reference_that_judged(tiny_vlm_factory, tmp_path):
    vlm = tiny_vlm_factory()
    samples = shapes.downstream_samples(40, seed=6)
    samples = [s.with_response(POISON) if i % 10 == 3 else s for i, s in enumerate(samples)]
    pretrained, at_generation = checksum(vlm), []
    generate = vlm.generate
    vlm.generate = lambda batch, *args, **kw: at_generation.append(checksum(vlm)) or generate(batch, *args, **kw)
    defense = ByornDefense(ByornConfig(max_new_tokens=6))
    defense.prepare(vlm, samples, tmp_path, train=TrainConfig(lora=False, batch_size=4, learning_rate=1e-2))
    assert defense.writer == "warmed" and defense.reference_answers
    assert at_generation and all(c != pretrained for c in at_generation)  # inside the warmed block
    assert checksum(vlm) == at_generation[-1] and defense.steps_trained == 5  # warm_start: training goes on from it


def test_a_warm_up_that_cannot_start_raises_its_own_error_and_changes_nothing(tiny_vlm_factory, tmp_path):
    vlm = tiny_vlm_factory()
    before = checksum(vlm)
    config = TrainConfig(lora=True, lora_target="no_module_is_called_this")
    with pytest.raises(ValueError, match="no_module_is_called_this"):
        with warm_up(vlm, shapes.downstream_samples(4, seed=1), config, 1.0, tmp_path / "warmup"):
            pass
    assert checksum(vlm) == before and not isinstance(vlm.model, PeftModel)


def test_the_warm_up_is_refused_when_weights_are_sharded(tiny_vlm_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ValueError, match="rejudge=false"):
        judge(tiny_vlm_factory(), shapes.downstream_samples(40, seed=6), JudgeConfig(), tmp_path)


def test_options_that_would_mix_the_verdicts_or_lose_the_warm_up_are_refused(tiny_vlm_factory, tmp_path):
    with pytest.raises(ValueError, match="rule=absolute cuts both verdicts"):  # MAD units and nats at one value
        ByornConfig(rule="absolute", absolute=2.0)
    ByornConfig(rule="absolute", absolute=2.0, rejudge=False)
    ByornConfig(rule="absolute", absolute=2.0, variant="mean_nll")  # one score, one scale
    samples = shapes.downstream_samples(24, seed=6)
    with pytest.raises(FileNotFoundError, match="no verdict.json"):  # a resumed run never judges again
        ByornDefense(ByornConfig()).prepare(tiny_vlm_factory(), samples, tmp_path, resume_step=3)


def test_candidates_a_bounded_warm_set_left_out_are_judged_in_the_units_of_the_rest(monkeypatch):
    """The warmed reference's median and MAD come from the samples outside the warm set's candidates,
    as when the whole share is warmed on; the candidates not drawn and the canaries are its guests."""
    from byorn.defenses import byorn as method

    seen = {}

    def stub_verdict(vlm, samples, config, variant, run_dir, reference, spared=(), guests=0, alone=None):
        seen["ids"], seen["guests"], seen["alone"] = [s.id for s in samples], guests, alone
        return Judgement([float(k) for k in range(len(samples))],
                         Flagging([False] * len(samples), ["all"] * len(samples), {"all": 1.0}))

    monkeypatch.setattr(method, "verdict", stub_verdict)
    samples = shapes.downstream_samples(10, 0) + [shapes.downstream_samples(1, 1)[0]]  # the last: a canary
    first = Judgement([0.0] * 11, Flagging([False] * 11, ["all"] * 11, {"all": 1.0}))
    judged = method.second_verdict(None, samples, first, warm=[1, 3], config=JudgeConfig(), run_dir="unused",
                                   warm_steps=2, guests=1, spare=[0, 2])
    hosts, spare = [4, 5, 6, 7, 8, 9], [0, 2]
    assert seen["ids"] == [samples[i].id for i in [*hosts, *spare, 10]] and seen["guests"] == 3
    assert seen["alone"] == 1  # the canary in batches of its own; the candidates batched with the rest
    assert [judged.scores[i] for i in [*hosts, *spare, 10]] == [float(k) for k in range(9)]
    assert judged.warmed_on == (1, 3) and judged.scores[1] == judged.scores[3] == 0.0  # the warm set keeps its first


def test_judge_warms_on_the_draw_and_judges_the_candidates_left_as_guests(monkeypatch, tmp_path):
    """judge's wiring of a bounded warm set: the warm-up gets the draw, the second verdict the samples
    outside the candidates, then the candidates not drawn as guests batched with them."""
    from contextlib import contextmanager

    from byorn.defenses import byorn as method

    calls, warmed = [], []

    def stub_verdict(vlm, samples, config, variant, run_dir, reference, spared=(), guests=0, alone=None):
        calls.append(([s.id for s in samples], guests, alone))
        scores = [float(int(s.id.rsplit("-", 1)[1])) for s in samples]  # the first verdict: in sample order
        return Judgement(scores, Flagging([False] * len(samples), ["all"] * len(samples), {"all": 99.0}))

    @contextmanager
    def stub_warm_up(vlm, samples, train, epochs, folder, keep, run):
        warmed.extend(s.id for s in samples)
        yield 1

    monkeypatch.setattr(method, "verdict", stub_verdict)
    monkeypatch.setattr(method, "warm_up", stub_warm_up)
    samples = shapes.downstream_samples(60, 0)
    config = JudgeConfig(warm_max=5, canaries=0, lesson_share=1.0)
    judgement = method.judge(None, samples, config, tmp_path)
    candidates = [s.id for s in samples[:30]]  # the lowest half of the first verdict's scores
    assert len(warmed) == 5 and set(warmed) <= set(candidates)
    spare = [i for i in candidates if i not in warmed]
    assert calls[1] == ([s.id for s in samples[30:]] + spare, 25, 0)
    assert [samples[i].id for i in judgement.warmed_on] == warmed
    unbounded = method.judge(None, samples, JudgeConfig(warm_max=0, canaries=0, lesson_share=1.0), tmp_path)
    assert len(unbounded.warmed_on) == 30 and calls[-1] == ([s.id for s in samples[30:]], 0, 0)
