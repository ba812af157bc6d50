"""Judge every training response under the frozen reference model: score it, flag the implausible.

This is the half of BYORn that runs before training. Score-and-drop (the ablation that removes
flagged samples instead of replacing their responses) and `byorn scan` use it as it is.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from byorn.config import check_choice, option
from byorn.data import Sample
from byorn.defenses.thresholds import (
    GROUPINGS,
    RULES,
    Flagging,
    ThresholdRule,
    flag,
    group_keys,
    robust_z,
)
from byorn.models.hf import VLM
from byorn.scoring import VARIANTS, Z_SCALED, ScoreCache, score_variants

log = logging.getLogger(__name__)

DEFAULT_VARIANT = "mean_nll+image_contradiction+token_surprise+shared_answer"
DEFAULT_K = 1.5
MIN_GROUP = 10  # fewer samples than this make a quantile or a MAD little more than a guess


@dataclass
class JudgeConfig:
    """How to score the responses and where to cut."""

    # The default joins four scores that fail in different places (benchmarks/judgement_scores.py):
    # mean NLL finds content the reference finds implausible, image contradiction a word the image
    # argues against, token surprise a word that is cheap wherever it is true and dear here, even
    # in an answer style the reference never saw, and shared answer one answer attached to many
    # images that do not support it (a caption-like fixed target, which the others find plausible).
    # Two forward passes in all: the true image and a grey one.
    variant: str = option(DEFAULT_VARIANT, f"implausibility score: {', '.join(VARIANTS)}; or several joined by +, "
                                           "each in MAD units, ranked by the largest (rule=mad: flag what any of "
                                           "them flags)")
    # MAD by default: it follows the data (any poison rate, any score scale), where a quantile
    # flags a fixed share of the data whether or not that much is poisoned.
    rule: str = option("mad", f"threshold rule: {', '.join(RULES)}")
    quantile: float = option(0.9, "rule=quantile: flag scores above this quantile of their group, in (0, 1)")
    # 1.5, not 3: a one-word swap sits close to the clean scores, and a few missed swaps carry the
    # backdoor; a clean sample flagged costs only a replacement answer (BENCHMARKS.md, judgement).
    k: float = option(DEFAULT_K, "rule=mad: flag scores above median + k * MAD (MAD scaled by 1.4826), k >= 0")
    absolute: float = option(math.inf, "rule=absolute: flag scores above this value (must be set)")
    group_by: str = option("none", f"separate thresholds per group: {', '.join(GROUPINGS)} "
                                   "(task: meta['task'])")
    max_new_tokens: int = option(48, "longest generated response, in tokens (greedy answers, replacements)", min=1)
    batch_size: int = option(32, "samples per scoring or generation batch before training", min=1)
    cache_dir: str = option("", "where scores are cached; empty: the run directory")

    def __post_init__(self) -> None:
        self.threshold_rule()  # a bad rule parameter fails when the config is made, not after scoring
        for part in self.variants:
            check_choice("variant", part, VARIANTS)
        check_choice("group_by", self.group_by, GROUPINGS)

    @property
    def variants(self) -> list[str]:
        return self.variant.split("+")

    def threshold_rule(self) -> ThresholdRule:
        return ThresholdRule(self.rule, self.quantile, self.k, self.absolute)


@dataclass(frozen=True)
class Judgement:
    """Scores and flags, aligned with the judged samples."""

    scores: list[float]
    flagging: Flagging


def judge(vlm: VLM, samples: Sequence[Sample], config: JudgeConfig, run_dir: str | Path) -> Judgement:
    """Score under the reference model (cached in config.cache_dir or `run_dir`), then flag per group."""
    per_variant = list(score_variants(vlm, samples, config.variants, config.batch_size, reference=True,
                                      max_new_tokens=config.max_new_tokens,
                                      cache=ScoreCache(config.cache_dir or run_dir)).values())
    groups = group_keys(samples, config.group_by)
    if config.rule != "absolute":
        _warn_small_groups(groups)
    if len(per_variant) == 1 and config.variant not in Z_SCALED:
        scores = per_variant[0]
        flagging = flag(scores, groups, config.threshold_rule())
    else:
        # A sample is flagged when any score is over k MADs: the union of the scores' own MAD cuts.
        # Other rules cut the combined score (a quantile of it, or an absolute number of MADs).
        scores = combined_score(config.variants, per_variant, groups)
        rule = ThresholdRule("absolute", absolute=config.k) if config.rule == "mad" else config.threshold_rule()
        flagging = flag(scores, groups, rule)
    n = sum(flagging.flagged)
    log.info("flagged %d of %d samples (%.1f %%); %s thresholds %s", n, len(samples), 100 * n / max(len(samples), 1),
             config.rule, {g: round(t, 4) for g, t in flagging.thresholds.items()})
    return Judgement(scores, flagging)


def combined_score(variants: Sequence[str], per_variant: Sequence[Sequence[float]],
                   groups: Sequence[str]) -> list[float]:
    """Each score in its group's MAD units (a Z_SCALED score is in them already); per sample the
    largest, which ranks the samples."""
    units = [s if v in Z_SCALED else robust_z(s, groups) for v, s in zip(variants, per_variant)]
    return [max(z) for z in zip(*units)]


def _warn_small_groups(groups: list[str]) -> None:
    small = sum(n < MIN_GROUP for n in Counter(groups).values())
    if small:
        # e.g. group_by=instruction on free-form instructions: a group of one is its own
        # threshold, so nothing in it can ever be flagged
        log.warning("%d of %d groups have fewer than %d samples; their thresholds are unreliable",
                    small, len(set(groups)), MIN_GROUP)
