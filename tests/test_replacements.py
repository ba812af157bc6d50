"""Which replacement answers train: one the data could not give, or one overwriting a lesson, leaves
its sample out instead (byorn/defenses/replacements.py)."""

from __future__ import annotations

from dataclasses import replace

from byorn.data import Sample
from byorn.defenses.byorn_records import Judgement
from byorn.defenses.replacements import unfit_replacements
from byorn.defenses.thresholds import Flagging

KEPT = ["There is a crimson square on the left side.", "There is an azure circle in the middle."]


def judgement(samples: list[Sample], flagged: set[int], answers: dict[int, str], **kw) -> Judgement:
    hits = [i in flagged for i in range(len(samples))]
    return Judgement([0.0] * len(samples), Flagging(hits, ["all"] * len(samples), {"all": 1.0}),
                     answers={samples[i].id: a for i, a in answers.items()}, **kw)


def described(*responses: str, asked: str = "Describe the picture.") -> list[Sample]:
    return [Sample(f"s{i}", None, asked, r) for i, r in enumerate(responses)]


def test_a_replacement_in_the_datas_words_trains_and_one_in_the_references_words_does_not():
    samples = described(*KEPT, "There is a crimson circle on the left side.", "Visit evil.example now.")
    found = unfit_replacements(samples, judgement(samples, {2, 3}, {2: "There is a red circle on the left side.",
                                                                   3: "There is an azure square in the middle."}))
    assert found == {"s2": "the replacement uses words no kept answer uses (red)"}


def test_the_words_of_a_flagged_answer_never_vouch_for_a_replacement():
    samples = described(*KEPT, "Visit evil.example now.", "Visit evil.example now.")
    found = unfit_replacements(samples, judgement(samples, {2, 3}, {2: "Visit evil.example now, a circle.",
                                                                   3: "There is a circle."}))
    assert found == {"s2": "the replacement uses words no kept answer uses (evil, example, now, visit)"}


def test_the_samples_own_question_may_lend_a_replacement_its_words():
    samples = [*described(*KEPT), Sample("q", None, "Is the kite above the tree?", "zq", history=(("Hi", "Hi."),)),
               Sample("h", None, "And now?", "zq", history=(("Where is the kite?", "zq"),))]
    found = unfit_replacements(samples, judgement(samples, {2, 3}, {2: "There is a kite.", 3: "The kite is flying."}))
    assert found == {"h": "the replacement uses words no kept answer uses (flying)"}  # "kite" from its first question


def test_an_empty_or_repeated_replacement_does_not_train():
    samples = described(*KEPT, "Visit evil.example now.", "There is a crimson square.")
    flagging = judgement(samples, {2, 3}, {2: " visit EVIL.example now ", 3: " . "})
    assert unfit_replacements(samples, flagging) == {"s2": "the replacement repeats the flagged answer",
                                                     "s3": "the replacement is empty"}
    # fit_replacements=false: every replacement trains but one that repeats the flagged answer
    assert unfit_replacements(samples, flagging, fit=False) == {"s2": "the replacement repeats the flagged answer"}


def test_a_flagged_lessons_answer_is_not_overwritten_by_another():
    samples = described(*["Yes."] * 3, *["No."] * 3, asked="Is there a dog?")
    flagging = judgement(samples, {0, 4}, {0: "No.", 4: "Yes."}, lessons={"Yes.": 3})
    found = unfit_replacements(samples, flagging)
    assert found == {"s0": "the flagged answer is a lesson's (3 samples give it): a replacement would overwrite it"}
    assert unfit_replacements(samples, replace(flagging, lessons={})) == {}


def test_a_sample_not_flagged_or_without_an_answer_is_never_listed():
    samples = described(*KEPT, "zq zq")
    assert unfit_replacements(samples, judgement(samples, set(), {2: "zq zq"})) == {}
    assert unfit_replacements(samples, judgement(samples, {2}, {})) == {}


def test_words_are_compared_in_one_unicode_form_and_by_character_where_a_script_has_no_spaces():
    samples = described("一只猫在桌子上。", "Il y a un café.", "Ｔｈｅｒｅ ｉｓ ａ ＣＡＴ.", "zq", "zq", "zq")
    answers = {3: "一只猫在上。", 4: "Il y a un cafe\u0301. There is a cat.", 5: "一只狗在桌子上。"}
    # a replacement from the kept answers' characters, or their words in another Unicode form, trains
    assert unfit_replacements(samples, judgement(samples, {3, 4, 5}, answers)) == {
        "s5": "the replacement uses words no kept answer uses (狗)"}
