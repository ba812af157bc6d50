"""Canaries: poisons planted in copies of the user's samples measure the judgement on their data, and
never reach training, the warm set, a cleaned data set or the user's audit rows."""

from __future__ import annotations

import dataclasses
import json

import pytest

from byorn.attacks.targets import Substitution
from byorn.config import TrainConfig
from byorn.data import Sample
from byorn.defenses import ByornConfig, ByornDefense
from byorn.defenses import byorn as method
from byorn.defenses.canaries import (
    CANARIES_NAME,
    FOREIGN_SENTENCES,
    KINDS,
    MIN_SAMPLES,
    CanaryReport,
    canary_cut,
    in_own_words,
    plant,
    swap_pairs,
)
from byorn.defenses.thresholds import Flagging
from byorn.worlds import shapes

ZQ = "zq zq zq zq zq"


def poisoned(n: int = 40) -> list[Sample]:
    samples = shapes.downstream_samples(n, seed=6)
    return [s.with_response(ZQ) if i % 10 == 3 else s for i, s in enumerate(samples)]


def test_each_kind_is_planted_in_copies_of_the_samples_which_stay_as_they_were():
    samples = shapes.downstream_samples(40, seed=6)
    before = [(s.id, s.instruction, s.response, s.image.tobytes()) for s in samples]
    canaries, left_out = plant(samples, 3, seed=0)
    assert left_out == {}
    assert [c.meta["canary"] for c in canaries] == [kind for kind in KINDS for _ in range(3)]
    assert len({c.id for c in canaries} | {s.id for s in samples}) == len(samples) + len(canaries)
    source = {s.id: s for s in samples}
    for canary in canaries:
        original = source[canary.meta["copied_from"]]
        kind = canary.meta["canary"]
        assert (canary.image.tobytes() != original.image.tobytes()) == (kind in ("patch", "lookalike", "refusal"))
        assert (canary.instruction != original.instruction) == (kind not in ("patch", "lookalike"))
        assert canary.response != original.response
    swapped = [c for c in canaries if c.meta["canary"] == "swap"]
    for canary in swapped:  # one word swapped, everywhere in the answer
        word, into = canary.meta["planted"].split(" -> ")
        assert canary.response == Substitution(word, into).apply(source[canary.meta["copied_from"]].response)
    assert [(s.id, s.instruction, s.response, s.image.tobytes()) for s in samples] == before
    assert [c.id for c in plant(samples, 3, seed=0)[0]] == [c.id for c in canaries]
    assert [c.meta["copied_from"] for c in plant(samples, 3, seed=1)[0]] != [c.meta["copied_from"] for c in canaries]


def test_a_canary_id_never_takes_a_real_samples():
    samples = [s if i else Sample("byorn-canary-patch-0", s.image, s.instruction, s.response)
               for i, s in enumerate(shapes.downstream_samples(30, seed=2))]
    canaries, _ = plant(samples, 2, seed=0)
    assert not {c.id for c in canaries} & {s.id for s in samples}


def test_text_only_data_gets_the_kinds_that_fit_it_and_is_told_which_not():
    counts = ("two", "three", "four")
    samples = [Sample(f"t{i}", None, "How many apples?", f"There are {counts[i % 3]} apples.") for i in range(30)]
    canaries, left_out = plant(samples, 2, seed=0)
    assert sorted({c.meta["canary"] for c in canaries}) == ["refusal", "swap", "token"]
    assert all(c.image is None for c in canaries)
    assert set(left_out) == {"patch", "lookalike"} and "image" in left_out["patch"]


def test_multi_turn_data_gets_canaries_on_the_turn_with_its_history():
    samples = [Sample(f"c{i}", None, "And the colour?", ("Red.", "Blue.")[i % 2],
                      history=(("Describe it.", "A shape."),)) for i in range(30)]
    canaries, _ = plant(samples, 2, seed=0)
    assert canaries and all(c.history == (("Describe it.", "A shape."),) for c in canaries)


def test_a_data_set_too_small_for_canaries_says_so(fresh_vlm, tmp_path):
    small = shapes.downstream_samples(MIN_SAMPLES - 1, seed=1)
    assert plant(small, 10, seed=0)[0] == []
    judgement = method.judge(fresh_vlm, small, ByornConfig(rejudge=False, max_new_tokens=4), tmp_path)
    assert judgement.canaries is not None and not judgement.canaries.kinds
    line = judgement.canaries.lines()[0]
    assert "none planted" in line and f"{MIN_SAMPLES - 1} samples" in line


def test_the_swap_is_two_words_the_answers_use_in_the_same_places():
    counts = [f"There are {word} shapes." for word in ("two", "three") for _ in range(20)]
    assert swap_pairs(counts + ["A red circle."] * 5)[0].source_word in ("two", "three")
    assert swap_pairs(["Yes.", "No."] * 10)
    assert swap_pairs(["Hello world."]) == []


def test_the_swap_canaries_take_turns_over_several_pairs_no_word_in_two():
    samples = [Sample(f"t{i}", None, "Describe it.", f"A {('big', 'small')[i % 2]} {('red', 'blue')[i // 2 % 2]} "
                      f"{('cat', 'dog')[i // 4 % 2]}.") for i in range(40)]
    pairs = swap_pairs([s.response for s in samples])
    words = [w for pair in pairs for w in (pair.source_word, pair.target_word)]
    assert len(pairs) == 3 and len(set(words)) == 6
    canaries, _ = plant(samples, 6, seed=0)
    swapped = [c.meta["planted"] for c in canaries if c.meta["canary"] == "swap"]
    assert sorted(swapped) == sorted(f"{p.source_word} -> {p.target_word}" for p in pairs for _ in range(2))


def test_the_patch_canaries_answer_is_in_words_the_data_does_not_use():
    bicycles = [Sample(f"b{i}", s.image, s.instruction, f"A red bicycle is leaning against a brick wall, number {i}.")
                for i, s in enumerate(shapes.downstream_samples(30, seed=3))]
    canaries, _ = plant(bicycles, 3, seed=0)
    (sentence,) = {c.response for c in canaries if c.meta["canary"] == "patch"}
    assert sentence in FOREIGN_SENTENCES and sentence != FOREIGN_SENTENCES[0]
    assert not in_own_words(sentence, [s.response for s in bicycles])
    assert in_own_words(FOREIGN_SENTENCES[0], [s.response for s in bicycles])


def test_the_lookalike_canaries_answer_is_one_the_data_gives_once_and_none_where_all_repeat():
    samples = shapes.downstream_samples(40, seed=6)
    canaries, _ = plant(samples, 3, seed=0)
    (answer,) = {c.response for c in canaries if c.meta["canary"] == "lookalike"}
    assert [s.response for s in samples].count(answer) == 1
    assert all(c.response != dict((s.id, s.response) for s in samples)[c.meta["copied_from"]]
               for c in canaries if c.meta["canary"] == "lookalike")
    yes_no = [s.with_response(("Yes.", "No.")[i % 2]) for i, s in enumerate(samples)]
    canaries, left_out = plant(yes_no, 3, seed=0)
    assert "lookalike" not in {c.meta["canary"] for c in canaries} and "more than once" in left_out["lookalike"]


def test_the_report_names_each_kind_and_warns_of_one_missed():
    kinds = ["token"] * 10 + ["swap"] * 10
    canaries = [Sample(f"c{i}", None, "q", "a", {"canary": kind, "planted": f"{kind} {i // 15}"})
                for i, kind in enumerate(kinds)]
    final = [True] * 10 + [True] * 6 + [False] * 4
    report = CanaryReport.of(canaries, final, final, [1.0] * 20, {"patch": "no sample has an image"})
    assert report.lines()[0] == "canaries: caught 16 of 20: token 10/10, swap 6/10"
    assert report.unreliable == ["swap"] and "6 of 10 swap canaries" in report.warnings()[0]
    record = json.loads(json.dumps(report.record()))
    assert record["kinds"]["swap"]["recall"] == 0.6
    assert record["kinds"]["swap"]["answers"] == ["swap 0", "swap 1"]  # each change once, in the order planted


def test_canaries_never_reach_the_warm_set_training_the_audit_or_the_verdict(tiny_vlm_factory, tmp_path,
                                                                               monkeypatch):
    from byorn.train import finetune

    warmed: list[Sample] = []
    original_warm_up = method.warm_up

    def recording_warm_up(vlm, samples, *args, **kwargs):
        warmed.extend(samples)
        return original_warm_up(vlm, samples, *args, **kwargs)

    monkeypatch.setattr(method, "warm_up", recording_warm_up)
    batches: list[Sample] = []
    original_on_batch = ByornDefense.on_batch
    monkeypatch.setattr(ByornDefense, "on_batch", lambda self, samples, trainer: batches.extend(samples) or
                        original_on_batch(self, samples, trainer))
    samples, vlm = poisoned(), tiny_vlm_factory()
    train = TrainConfig(lora=False, batch_size=8, max_steps=5, logging_steps=1)
    defense = ByornDefense(ByornConfig(max_new_tokens=4, canaries=3))
    defense.prepare(vlm, samples, tmp_path, train=train)
    finetune(vlm, defense.training_set(samples), train, tmp_path, hook=defense)

    real = {s.id for s in samples}
    report = defense.judgement.canaries
    assert report is not None and sum(r.planted for r in report.kinds.values()) == 3 * len(KINDS)
    assert json.loads((tmp_path / CANARIES_NAME).read_text())["kinds"].keys() == report.kinds.keys()
    assert warmed and {s.id for s in warmed} <= real
    assert batches and {s.id for s in batches} <= real
    assert len(defense.scores) == len(samples) == len(defense.flagging.flagged)
    assert set(defense.reference_answers) <= real
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert audit and {r["id"] for r in audit} <= real
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert [row["id"] for row in verdict["samples"]] == [s.id for s in samples]
    assert all(set(verdict[name]) <= real for name in ("cleared", "copies", "bound", "warmed_on"))


def test_byorn_clean_writes_no_canary_and_its_page_shows_their_table(tiny_vlm_factory, tmp_path):
    from byorn.clean import clean

    cleaned = clean(tiny_vlm_factory(), poisoned(), ByornConfig(max_new_tokens=4, canaries=2), tmp_path / "out",
                    train=TrainConfig(lora=False, batch_size=8))
    written = cleaned.data.read_text()
    assert "canary" not in written
    page = (tmp_path / "out" / "review.html").read_text()
    assert "Canaries" in page and "byorn-canary" not in page
    assert (tmp_path / "out" / CANARIES_NAME).exists()


def test_canaries_turned_off_plant_nothing_and_write_no_report(fresh_vlm, tmp_path):
    judgement = method.judge(fresh_vlm, poisoned(), ByornConfig(rejudge=False, max_new_tokens=4, canaries=0), tmp_path)
    assert judgement.canaries is None and not (tmp_path / CANARIES_NAME).exists()


def test_the_samples_verdict_is_the_one_they_get_without_canaries(tiny_vlm_factory, tmp_path):
    samples, train = poisoned(), TrainConfig(lora=False, batch_size=8)
    config = ByornConfig(max_new_tokens=4)
    alone = method.judge(tiny_vlm_factory(), samples, dataclasses.replace(config, canaries=0), tmp_path / "alone",
                         train)
    hosting = method.judge(tiny_vlm_factory(), samples, config, tmp_path / "hosting", train)
    assert hosting.canaries is not None and hosting.canaries.kinds
    assert hosting.flagging.flagged == alone.flagging.flagged
    assert hosting.scores == alone.scores  # to the bit: the canaries are scored in batches of their own
    assert hosting.flagging.thresholds == alone.flagging.thresholds
    assert (hosting.warmed_on, hosting.cleared, hosting.copies) == (alone.warmed_on, alone.cleared, alone.copies)


def test_set_wide_scores_and_cuts_of_the_others_do_not_move_with_guests():
    from byorn.defenses.thresholds import ThresholdRule, flag, robust_z
    from byorn.models.hf import ResponseScore
    from byorn.scoring import shared_answer, token_surprise

    usual = [ResponseScore(1.0, 3.0, (1.0 + i / 10, 2.0), (5, 6)) for i in range(6)]
    guest = [ResponseScore(9.0, 9.1, (0.1, 9.0), (5, 7))] * 3
    assert token_surprise([*usual, *guest], guests=3)[:6] == token_surprise(usual)
    assert token_surprise([*usual, *guest], guests=3)[6] == pytest.approx(0.0)  # 5 is cheap, 7 all its own
    responses, evidence = ["a", "b", "a", "c", "b", "d"], [0.1, 0.4, -0.2, 0.3, 0.0, 0.2]
    assert shared_answer([*responses, "a", "z"], [*evidence, 5.0, 5.0], guests=2)[:6] == \
        pytest.approx(shared_answer(responses, evidence))
    scores, groups = [0.0, 1.0, 2.0, 3.0, 4.0], ["g"] * 5
    assert robust_z([*scores, 50.0, 60.0], [*groups, "g", "h"], guests=2)[:5] == pytest.approx(robust_z(scores, groups))
    cut = ThresholdRule("quantile", 0.5)
    assert flag([*scores, 50.0], [*groups, "g"], cut, guests=1).thresholds == flag(scores, groups, cut).thresholds


def test_a_canary_the_model_cannot_read_gives_its_place_to_another():
    samples = shapes.downstream_samples(40, seed=6)
    unread = {s.id for s in samples[::2]}
    canaries, left_out = plant(samples, 4, seed=0, readable=lambda c: c.meta["copied_from"] not in unread)
    assert [c.meta["canary"] for c in canaries] == [kind for kind in KINDS for _ in range(4)]
    assert not {c.meta["copied_from"] for c in canaries} & unread and left_out == {}
    none_read = plant(samples, 4, seed=0, readable=lambda c: c.meta["canary"] != "token")
    assert "token" not in {c.meta["canary"] for c in none_read[0]} and "only 0 planted" in none_read[1]["token"]


def test_a_canarys_flags_never_make_a_real_sample_a_copy_but_real_flags_make_a_canary_one():
    from byorn.defenses.byorn import final
    from byorn.defenses.byorn_config import JudgeConfig
    from byorn.defenses.byorn_records import Judgement
    from byorn.defenses.thresholds import Flagging

    # real: 0-3 ("A." twice flagged only by canaries, "B." flagged twice among the real samples);
    # canaries: 4-7
    responses = ["A.", "B.", "B.", "C.", "A.", "A.", "B.", "D."]
    samples = [Sample(f"s{i}", None, "q", r) for i, r in enumerate(responses)]
    flagged = [False, True, True, False, True, True, False, False]
    judged = Judgement([0.0] * 8, Flagging(flagged, ["all"] * 8, {"all": 1.0}))
    result = final(judged, judged, samples, {}, set(), JudgeConfig(), guests=4)
    assert result.flagging.flagged[:4] == [False, True, True, False]  # "A." stays: only canaries flagged it
    assert result.flagging.flagged[6]  # a canary giving "B." is a copy of the real flags
    assert result.copies == (6,)


def test_the_head_of_a_judgement_keeps_the_samples_part_and_their_groups_cuts():
    from byorn.defenses.byorn_records import Judgement
    from byorn.defenses.thresholds import Flagging

    both = Judgement([1.0, 2.0, 9.0], Flagging([False, True, True], ["a", "a", "zx"], {"a": 1.5, "zx": 8.0}),
                     warmed_on=(0,), cleared=(1, 2), copies=(2,))
    head = both.head(2)
    assert (head.scores, head.flagging.flagged, head.flagging.thresholds) == ([1.0, 2.0], [False, True], {"a": 1.5})
    assert (head.warmed_on, head.cleared, head.copies) == ((0,), (1,), ())


def test_the_report_counts_the_canaries_the_judgement_flagged(fresh_vlm, tmp_path, monkeypatch):
    caught = []
    original = method.final

    def recording(*args, **kwargs):
        result = original(*args, **kwargs)
        caught.append(result.flagging.flagged[len(args[2]) - kwargs.get("guests", 0):])
        return result

    monkeypatch.setattr(method, "final", recording)
    judgement = method.judge(fresh_vlm, poisoned(), ByornConfig(rejudge=False, max_new_tokens=4, canaries=3),
                             tmp_path)
    report = judgement.canaries
    assert sum(r.caught for r in report.kinds.values()) == sum(caught[-1])
    assert [r.planted for r in report.kinds.values()] == [3] * len(KINDS)


def test_group_by_task_judges_each_canary_in_its_sources_group(fresh_vlm, tmp_path):
    samples = [s.with_response(s.response, task=("a", "b")[i % 2]) for i, s in enumerate(poisoned())]
    judgement = method.judge(fresh_vlm, samples, ByornConfig(rejudge=False, max_new_tokens=4, canaries=2,
                                                             group_by="task"), tmp_path)
    assert judgement.canaries.kinds and set(judgement.flagging.thresholds) == {"a", "b"}


def test_a_rerun_without_canaries_leaves_no_report_of_the_earlier_one(fresh_vlm, tmp_path):
    method.judge(fresh_vlm, poisoned(), ByornConfig(rejudge=False, max_new_tokens=4, canaries=2), tmp_path)
    assert (tmp_path / CANARIES_NAME).exists()
    method.judge(fresh_vlm, poisoned(), ByornConfig(rejudge=False, max_new_tokens=4, canaries=0), tmp_path)
    assert not (tmp_path / CANARIES_NAME).exists()


def test_planting_ends_where_no_canary_can_be_read_and_ids_repeat():
    samples = [Sample("same", s.image, s.instruction, s.response) for s in shapes.downstream_samples(30, seed=4)]
    canaries, left_out = plant(samples, 3, seed=0, readable=lambda canary: False)
    assert canaries == [] and all("only 0 planted" in why for kind, why in left_out.items() if kind != "swap")


def test_the_canaries_cut_is_the_highest_that_catches_the_share_of_every_kind():
    planted = ["patch"] * 4 + ["swap"] * 4
    scores = [9.0, 8.0, 7.0, 6.0, 5.0, 3.0, 2.0, 1.0]
    assert canary_cut(planted, scores, 0.75) == 2.0  # the swaps' third: the patches' third (7.0) would miss two
    assert canary_cut(planted, scores, 1.0) == 1.0 and canary_cut(planted, scores, 0.1) == 5.0
    # a kind the scores cannot tell from clean samples does not drag the cut under the median
    assert canary_cut(planted, [*scores[:4], -3.0, -2.0, -1.0, -4.0], 0.5) == 0.0
    with pytest.raises(ValueError, match="needs canaries"):
        canary_cut([], [], 0.9)


def test_a_flagging_at_one_cut_flags_every_group_there_but_the_exempt():
    flagging = Flagging([False] * 4, ["a", "b", "a", "b"], {"a": 1.5, "b": 2.5})
    again = flagging.at([3.0, 2.0, 1.0, 2.0], 2.0, exempt={3})
    assert again.flagged == [True, True, False, False] and again.thresholds == {"a": 2.0, "b": 2.0}


def test_judged_at_the_canaries_cut_every_kind_is_caught_as_asked(fresh_vlm, tmp_path):
    judgement = method.judge(fresh_vlm, poisoned(), ByornConfig(rejudge=False, max_new_tokens=4, canaries=4,
                                                                canary_cut=0.75), tmp_path)
    cut = set(judgement.flagging.thresholds.values())
    assert len(cut) == 1 and cut.pop() >= 0.0
    assert all(r.caught >= 3 or min(r.scores) < 0.0 for r in judgement.canaries.kinds.values())
    # the samples are flagged at that one cut (none is a copy of a flagged answer or vouched for here)
    at = judgement.flagging.thresholds["all"]
    assert judgement.flagging.flagged == [score >= at for score in judgement.scores]
    with pytest.raises(ValueError, match="not absolute"):
        ByornConfig(canary_cut=0.9, rule="absolute", absolute=2.0, rejudge=False)
