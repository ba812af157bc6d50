"""Step 3 of BYORn (byorn/defenses/byorn.py): what the warmed reference is fine-tuned on.

The candidates are the least suspicious share of the samples by the first verdict, never a
flagged one, and the least suspicious share of every lesson (an answer so many samples give that
the data teaches it). Past `warm_max` candidates the warm set is a seeded draw from them: the
downstream style is learnt from a sample of a bounded size, so the warm-up costs the same at a
thousand samples and at a million, and a draw (not the least suspicious few) spans the candidates'
range, as the whole share does.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from byorn.data import Sample, answer_key
from byorn.defenses.byorn_config import JudgeConfig
from byorn.defenses.byorn_records import Judgement
from byorn.defenses.thresholds import MIN_GROUP


@dataclass(frozen=True)
class Lesson:
    """An answer so many samples give that the data teaches it (`lessons`): the samples giving it,
    and those of them the warmed reference may learn it from."""

    answer: str
    members: list[int]
    warmable: list[int]


def lessons(samples: Sequence[Sample], share: float) -> dict[str, Lesson]:
    """The answers (by `answer_key`) that at least `share` of the samples give, and at least
    MIN_GROUP of them: so many that an attacker, who controls a few percent of the data, cannot have
    written them all (and in a small data set a few copies are no evidence of a lesson).

    Warmable: the members whose question the data also asks with another answer, so that the
    image, not the question, decides the answer. A trigger in the question makes it one that always
    comes with the attacker's answer (a one-word swap into a lesson's answer, say), and a warm-up on
    such samples would learn the backdoor and clear its copies. A share of 1 makes none."""
    if share >= 1.0:  # the option's "never": not even an answer every sample gives
        return {}
    given: dict[str, list[int]] = {}
    answered: dict[str, set[str]] = {}
    asked = [_asked(s) for s in samples]
    for i, s in enumerate(samples):
        key = answer_key(s.response)
        given.setdefault(key, []).append(i)
        answered.setdefault(asked[i], set()).add(key)
    return {key: Lesson(samples[members[0]].response, members, [i for i in members if len(answered[asked[i]]) > 1])
            for key, members in given.items() if len(members) >= max(share * len(samples), MIN_GROUP)}


def warm_candidates(judgement: Judgement, config: JudgeConfig, taught: dict[str, Lesson] | None = None,
                    real: int | None = None) -> list[int]:
    """What the warmed reference may be fine-tuned on, in score order: the warm_share of all
    samples outside the lessons with the lowest scores, never a flagged one (the poisons the verdict
    ranks high, even those under the cut, are not among them), and the warm_share of each lesson's
    warmable samples with the lowest scores, flagged or not (the first verdict's blind spot, learnt
    before the rest of it is judged); none when warm_epochs is 0. real: only the first `real`
    samples are candidates (those after them are canaries)."""
    if config.warm_epochs <= 0:
        return []
    scores, flagged = judgement.scores, judgement.flagging.flagged
    real = len(scores) if real is None else real
    taught = taught or {}
    in_lessons = {i for lesson in taught.values() for i in lesson.members}
    rest = [i for i in range(real) if i not in in_lessons]
    chosen = sorted((i for i in rest if not flagged[i]), key=scores.__getitem__)[: round(config.warm_share * len(rest))]
    for lesson in taught.values():
        chosen += sorted(lesson.warmable, key=scores.__getitem__)[: round(config.warm_share * len(lesson.warmable))]
    return sorted(chosen, key=scores.__getitem__)


def drawn(candidates: Sequence[int], scores: Sequence[float], warm_max: int, seed: int) -> list[int]:
    """The warm set: every candidate, or past `warm_max` (0: no bound) that many drawn at random
    with `seed`, from the candidates in sample order (which samples are candidates decides the
    draw, not how near-equal scores rounded); in score order, the order the warm-up trains in."""
    if 0 < warm_max < len(candidates):
        candidates = random.Random(seed).sample(sorted(candidates), warm_max)
    return sorted(candidates, key=scores.__getitem__)


def warm_set(judgement: Judgement, config: JudgeConfig, taught: dict[str, Lesson] | None = None,
             real: int | None = None, seed: int = 0) -> list[int]:
    """The samples the warmed reference is fine-tuned on (`warm_candidates`, `drawn`)."""
    return drawn(warm_candidates(judgement, config, taught, real), judgement.scores, config.warm_max, seed)


def _asked(sample: Sample) -> str:
    """The question this turn asks (spacing aside); the earlier turns of a conversation differ with
    every image, and a trigger in the question is in this turn's instruction."""
    return " ".join(sample.instruction.split())
