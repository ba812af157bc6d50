"""Which scores are too high: a threshold rule applied within groups of samples.

Rules: "quantile" (above the q-th quantile of the group's scores), "absolute" (above a fixed value).
A sample is flagged when its score is strictly above its group's threshold. BYORn's MAD rule is the
absolute rule on scores in their group's MAD units (`robust_z`: above k MADs over the median).

Groups exist because plausibility depends on the task: a data set that mixes a familiar and an
unfamiliar answer style gives two clusters of clean scores, and a subtle poison that stands out
within its own style can still score below the other style's clean samples (BENCHMARKS.md, "BYORn
on a mix of two task styles": against concept substitution one global cut flags none of the
poisons, per-task cuts 31 %). Each group gets its own threshold.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from byorn.config import check_choice
from byorn.data import Sample
from byorn.robust import mad_z

log = logging.getLogger(__name__)

RULES = ("quantile", "absolute")
GROUPINGS = ("none", "task", "instruction")
ALL = "all"  # the one group when samples are not grouped
MIN_GROUP = 10  # fewer samples than this make a quantile or a MAD little more than a guess


@dataclass(frozen=True)
class ThresholdRule:
    """A rule and its parameters; invalid values fail here, naming the field."""

    rule: str = "quantile"
    quantile: float = 0.9
    absolute: float = math.inf

    def __post_init__(self) -> None:
        check_choice("rule", self.rule, RULES)
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1); got {self.quantile!r}")
        if self.rule == "absolute" and not math.isfinite(self.absolute):
            raise ValueError(f"absolute must be a finite number with rule='absolute'; got {self.absolute!r}")

    def threshold(self, scores: np.ndarray) -> float:
        if self.rule == "quantile":
            return float(np.quantile(scores, self.quantile))
        return self.absolute


@dataclass(frozen=True)
class Flagging:
    """The outcome for one list of samples, aligned with it."""

    flagged: list[bool]
    groups: list[str]  # each sample's group
    thresholds: dict[str, float]  # group -> its threshold

    def at(self, scores: Sequence[float], cut: float, exempt: Collection[int] = ()) -> Flagging:
        """Every sample but the `exempt` flagged where its score is at least `cut`, one cut for every
        group (the scores in their groups' MAD units)."""
        exempt = set(exempt)
        return Flagging([i not in exempt and score >= cut for i, score in enumerate(scores)], self.groups,
                        dict.fromkeys(self.thresholds, cut))


def group_keys(samples: Sequence[Sample], group_by: str | None) -> list[str]:
    """Each sample's group: all one group (None or "none"), meta["task"], or the instruction text."""
    if group_by is None or group_by == "none":
        return [ALL] * len(samples)
    check_choice("group_by", group_by, GROUPINGS)
    if group_by == "instruction":
        return [s.instruction for s in samples]
    missing = [s.id for s in samples if "task" not in s.meta]
    if missing:
        raise ValueError(f"group_by='task' needs meta['task'] on every sample; {len(missing)} have none, "
                         f"e.g. {missing[0]!r}")
    return [str(s.meta["task"]) for s in samples]


def robust_z(scores: Sequence[float], groups: Sequence[str], guests: int = 0) -> list[float]:
    """(score - group median) / (1.4826 * group MAD): the unit the MAD rule's k is in, so scores
    on different scales can be compared. A group without spread (MAD 0) divides by a tiny number.
    guests: the last scores (canaries) are measured in the units of the others of their group."""
    values, keys = np.asarray(scores, dtype=float), np.asarray(groups, dtype=object)
    guest = np.arange(len(values)) >= len(values) - guests
    z = np.empty_like(values)
    for g in dict.fromkeys(groups):
        member = keys == g
        # mad_z's guests are the last values it is given: the group's guests, after its other members
        order = np.concatenate([np.flatnonzero(member & ~guest), np.flatnonzero(member & guest)])
        z[order] = mad_z(values[order], int((member & guest).sum()))
    return z.tolist()


def flag(scores: Sequence[float], groups: Sequence[str], rule: ThresholdRule, guests: int = 0) -> Flagging:
    """Flag the scores above their group's threshold. guests: the last scores (canaries) are cut at
    the threshold of the others of their group, which they do not move (a group of guests alone
    at its own)."""
    if len(scores) != len(groups):
        raise ValueError(f"scores and groups differ in length: {len(scores)} vs {len(groups)}")
    values = np.asarray(scores, dtype=float)
    if not np.isfinite(values).all():
        # a nan makes every quantile nan and silently flags nothing
        raise ValueError(f"score {int(np.flatnonzero(~np.isfinite(values))[0])} is not finite")
    keys = np.asarray(groups, dtype=object)
    host = np.arange(len(values)) < len(values) - guests
    thresholds = {g: rule.threshold(values[(keys == g) & host] if ((keys == g) & host).any() else values[keys == g])
                  for g in dict.fromkeys(groups)}
    flagged = [bool(v > thresholds[g]) for v, g in zip(values, groups)]
    return Flagging(flagged, list(groups), thresholds)


def warn_small_groups(groups: list[str], minimum: int) -> None:
    """Say how many groups hold fewer than `minimum` samples: their cuts are little more than a guess."""
    small = sum(n < minimum for n in Counter(groups).values())
    if small:
        # e.g. group_by=instruction on free-form instructions: a group of one is its own
        # threshold, so nothing in it can ever be flagged
        log.warning("%d of %d groups have fewer than %d samples; their thresholds are unreliable",
                    small, len(set(groups)), minimum)
