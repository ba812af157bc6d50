"""Judge every training response: score it, flag the implausible.

This is the half of BYORn that runs before training. Score-and-drop (the ablation that removes
flagged samples instead of replacing their responses) and `byorn scan` use it as it is.

Two stages by default. The frozen pretrained model judges first; but it judges in its own answer
style, so a downstream set written in another style looks implausible all over, and a poison
written like the pretraining data (a caption-like fixed target) looks plausible. So the pretrained
model is then fine-tuned briefly on the half of the samples it found least suspicious (the warmed
reference, byorn.defenses.warmup), which learns the downstream style but not the poisons, and
judges the other half again, by default by its mean NLL alone (a style it knows no longer makes
every clean answer look implausible); its verdict is the one that counts.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from byorn.config import TrainConfig, check_choice, option
from byorn.data import Sample
from byorn.defenses.base import Defense
from byorn.defenses.thresholds import (
    GROUPINGS,
    RULES,
    Flagging,
    ThresholdRule,
    flag,
    group_keys,
    robust_z,
)
from byorn.defenses.warmup import WarmUp, least_suspicious, warmed_reference
from byorn.models.hf import VLM
from byorn.scoring import (
    PRECISIONS,
    VARIANTS,
    Z_SCALED,
    ScoreCache,
    reference_model,
    score_variants,
    scoring_dtype,
)

log = logging.getLogger(__name__)

DEFAULT_VARIANT = "mean_nll+image_contradiction+token_surprise+shared_answer"
DEFAULT_K = 1.5
MIN_GROUP = 10  # fewer samples than this make a quantile or a MAD little more than a guess


@dataclass
class JudgeConfig:
    """How to score the responses and where to cut."""

    # The pretrained model's verdict joins four scores that fail in different places (benchmarks/judgement_scores.py):
    # mean NLL finds content the reference finds implausible, image contradiction a word the image
    # argues against, token surprise a word that is cheap wherever it is true and dear here, even
    # in an answer style the reference never saw, and shared answer one answer attached to many
    # images that do not support it (a caption-like fixed target, which the others find plausible).
    # Two forward passes in all: the true image and a grey one.
    variant: str = option(DEFAULT_VARIANT, f"the pretrained model's implausibility score: {', '.join(VARIANTS)}; or "
                                           "several joined by +, each in MAD units, ranked by the largest (rule=mad: "
                                           "flag what any of them flags)")
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
    # Scoring is most of what the judgement costs; bfloat16 keeps the ranking (byorn/scoring.py).
    precision: str = option("auto", f"what the scoring passes compute in: {', '.join(PRECISIONS)} (auto: bfloat16 "
                                    "where the device computes it natively and the weights are float32; otherwise "
                                    "the weights' dtype)")
    cache_dir: str = option("", "where scores are cached; empty: the run directory. Where set (byorn bench sets "
                                "its grid's), a full fine-tuning's warm-up is saved there too, and loaded when the "
                                "same warm-up comes again")
    # The pretrained model's verdict alone misranks what is written in its own style (BENCHMARKS.md,
    # "The default judgement": on Flickr8k a caption-like fixed target at AUROC 0.86-0.94, with the
    # warmed reference's verdict 0.92-0.97 and half as many clean notes flagged; on shapes the
    # one-word swaps at 0.89-0.95 against 0.98-1.00).
    rejudge: bool = option(True, "judge again under the warmed reference (the pretrained model fine-tuned on the "
                                 "least suspicious samples: the downstream answer style, not the poisons); its "
                                 "verdict counts. Its warm-up takes the training config's settings")
    warm_share: float = option(0.5, "the share of all samples, least suspicious first (never a flagged one), the "
                                    "warmed reference is fine-tuned on", min=0.0, max=1.0)
    warm_epochs: float = option(1.0, "epochs of that fine-tune (the training config's other settings; TrainConfig's "
                                     "defaults without one)", min=0.0)
    # The warmed reference knows the downstream style, so what the other three scores were added for
    # (a style the pretrained model never saw, a swapped word averaged away) hardly hides a poison
    # from its mean NLL any more, and their clean tails flag clean samples: under the warmed reference
    # mean NLL alone flags 0-3 % of the clean samples where the four joined flag 5-26 %, ranks a
    # caption-like fixed target at 1.000 where they give 0.82-0.94, and misses at most 4 more of 100
    # swaps (benchmarks/judgement_scores.py --warmed; in the grids ASR the same or lower in every
    # cell: BENCHMARKS.md, "The default judgement"). One forward pass instead of two.
    rejudge_variant: str = option("mean_nll", "the warmed reference's score (the choices of variant; several "
                                              "joined by + as there)")

    def __post_init__(self) -> None:
        self.threshold_rule()  # a bad rule parameter fails when the config is made, not after scoring
        for part in self.variants:
            check_choice("variant", part, VARIANTS)
        for part in self.rejudge_variant.split("+"):
            check_choice("rejudge_variant", part, VARIANTS)
        if self.rule == "absolute" and self.rejudge and self.variant != self.rejudge_variant:
            # one value in one score's own units cannot cut two different scores
            raise ValueError(f"rule=absolute cuts both verdicts at one value: give rejudge_variant the score of "
                             f"variant ({self.variant!r}), or rejudge=false")
        check_choice("group_by", self.group_by, GROUPINGS)
        check_choice("precision", self.precision, PRECISIONS)

    @property
    def variants(self) -> list[str]:
        return self.variant.split("+")

    def threshold_rule(self) -> ThresholdRule:
        return ThresholdRule(self.rule, self.quantile, self.k, self.absolute)


class Judging(Defense):
    """The base of the defenses that judge with a JudgeConfig (BYORn, score-and-drop, random drop):
    what they tell a results row beyond their options."""

    config: JudgeConfig

    def run_facts(self, vlm: VLM) -> dict[str, str]:
        """The dtype the scoring passes ran in (precision=auto resolves by hardware)."""
        dtype = str(scoring_dtype(vlm, self.config.precision)).removeprefix("torch.")
        return {**super().run_facts(vlm), "scoring_dtype": dtype}


@dataclass(frozen=True)
class Judgement:
    """Scores and flags, aligned with the judged samples; `warmed_on`: the indices of the samples
    the warmed reference was fine-tuned on (empty when the pretrained model's verdict stands)."""

    scores: list[float]
    flagging: Flagging
    warmed_on: tuple[int, ...] = ()
    warm_steps: int = 0  # the warm-up's optimizer steps
    warm_loaded_from: str | None = None  # where the warmed weights came from, when a grid had them (byorn.trained)


def judge(vlm: VLM, samples: Sequence[Sample], config: JudgeConfig, run_dir: str | Path,
          train: TrainConfig | None = None) -> Judgement:
    """The judgement of `samples` (see `judging`), the model as it was afterwards."""
    with judging(vlm, samples, config, run_dir, train) as judgement:
        return judgement


@contextlib.contextmanager
def judging(vlm: VLM, samples: Sequence[Sample], config: JudgeConfig, run_dir: str | Path,
            train: TrainConfig | None = None, keep_warmed: bool = False) -> Iterator[Judgement]:
    """Judge under the pretrained model, then (config.rejudge) under the warmed reference, whose
    verdict on the samples it did not train on counts (scores in MAD units of those samples; the
    warm set keeps its first scores and is not flagged). Inside the block `vlm` is the model that
    gave the verdict; afterwards its weights are the pretrained ones again, unless `keep_warmed`.
    Scores are cached in config.cache_dir or `run_dir`.

    train: the settings of the warm-up (the fine-tuning this judgement is for).
    keep_warmed: afterwards `vlm` keeps the warmed weights (the fine-tuning goes on from them)."""
    first = _judge_under(vlm, samples, config, config.variant, run_dir, reference=True)
    warm = warm_indices(first, config) if config.rejudge else []
    # The warm set is judged clean: the pretrained model found it least suspicious, and the warmed
    # reference, which trained on it, would find it plausible whatever it holds. The warmed
    # reference judges the others, against their own median and MAD.
    warm_set = set(warm)
    held = [i for i in range(len(samples)) if i not in warm_set]
    sizes = Counter(first.flagging.groups[i] for i in held)
    if warm and (not sizes or min(sizes.values()) < MIN_GROUP):
        log.warning("the pretrained model's verdict stands: a warmed reference would judge a group of fewer than %d "
                    "samples", MIN_GROUP)
        warm = []
    if not warm:
        _log_verdict(first, "the pretrained model's verdict")
        with reference_model(vlm):
            yield first
        return
    with warmed(vlm, samples, warm, config, train, run_dir, keep_warmed) as warm_up:
        second = _judge_under(vlm, [samples[i] for i in held], config, config.rejudge_variant, run_dir,
                              reference=False)
        scores, flagged = list(first.scores), [False] * len(samples)  # the warm set keeps its first scores
        for j, i in enumerate(held):
            scores[i], flagged[i] = second.scores[j], second.flagging.flagged[j]
        thresholds = {**first.flagging.thresholds, **second.flagging.thresholds}
        judgement = Judgement(scores, Flagging(flagged, first.flagging.groups, thresholds), tuple(warm),
                              warm_up.steps, warm_up.loaded_from)
        _log_verdict(judgement, f"the warmed reference's verdict on the {len(held)} samples it was not fine-tuned "
                                f"on (the pretrained model flagged {sum(first.flagging.flagged)})")
        yield judgement


def judgement_record(judgement: Judgement, samples: Sequence[Sample]) -> dict:
    """The judgement as JSON-ready data, keyed by sample id (`judgement_from_record` reads it back)."""
    return {"thresholds": judgement.flagging.thresholds, "warmed_on": [samples[i].id for i in judgement.warmed_on],
            "samples": [{"id": s.id, "score": score, "flagged": hit, "group": group} for s, score, hit, group in
                        zip(samples, judgement.scores, judgement.flagging.flagged, judgement.flagging.groups)]}


def judgement_from_record(record: dict, samples: Sequence[Sample], source: str | Path) -> Judgement:
    """The judgement `judgement_record` wrote, for exactly these samples in this order."""
    try:
        rows = record["samples"]
        ids = [row["id"] for row in rows]
        if ids != [s.id for s in samples]:
            differ = next((i for i, (a, b) in enumerate(zip(ids, (s.id for s in samples))) if a != b),
                          min(len(ids), len(samples)))
            raise ValueError(f"{source}: judged other samples than these ({len(ids)} against {len(samples)}; "
                             f"the first difference at position {differ})")
        index = {sample_id: i for i, sample_id in enumerate(ids)}
        flagging = Flagging([bool(row["flagged"]) for row in rows], [str(row["group"]) for row in rows],
                            {str(g): float(t) for g, t in record["thresholds"].items()})
        return Judgement([float(row["score"]) for row in rows], flagging,
                         tuple(index[sample_id] for sample_id in record["warmed_on"]))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{source}: not a judgement record ({type(exc).__name__}: {exc})") from exc


def warm_indices(judgement: Judgement, config: JudgeConfig) -> list[int]:
    """The samples a warmed reference is fine-tuned on: the warm_share least suspicious of
    `judgement`, never a flagged one; none when warm_epochs is 0."""
    return least_suspicious(judgement.scores, judgement.flagging.flagged, config.warm_share) \
        if config.warm_epochs > 0 else []


def warmed(vlm: VLM, samples: Sequence[Sample], indices: Sequence[int], config: JudgeConfig,
           train: TrainConfig | None, run_dir: str | Path,
           keep: bool = False) -> contextlib.AbstractContextManager[WarmUp]:
    """`vlm` warmed on `samples[indices]` inside the block, which gets the warm-up
    (byorn.defenses.warmup.warmed_reference; shared through config.cache_dir where one is set);
    without a training config (byorn clean, the TRL collator) the warm-up is LoRA at TrainConfig's
    defaults."""
    return warmed_reference(vlm, [samples[i] for i in indices], train or TrainConfig(), config.warm_epochs,
                            Path(run_dir) / "warmup", keep, cache_dir=config.cache_dir or None)


def _log_verdict(judgement: Judgement, whose: str) -> None:
    n, total = sum(judgement.flagging.flagged), len(judgement.scores)
    log.info("flagged %d of %d samples (%.1f %%): %s; thresholds %s", n, total, 100 * n / max(total, 1), whose,
             {g: round(t, 4) for g, t in judgement.flagging.thresholds.items()})


def _judge_under(vlm: VLM, samples: Sequence[Sample], config: JudgeConfig, variant: str, run_dir: str | Path,
                 reference: bool) -> Judgement:
    """One verdict: the scores of `variant` under `vlm` (reference: its adapter disabled), flagged per
    group. The scores are in their group's MAD units, so two verdicts (or two groups) share one
    scale; only under rule absolute, whose threshold is in the score's own units, a single score
    keeps them."""
    parts = variant.split("+")
    per_variant = list(score_variants(vlm, samples, parts, config.batch_size, reference=reference,
                                      max_new_tokens=config.max_new_tokens,
                                      cache=ScoreCache(config.cache_dir or run_dir),
                                      precision=config.precision).values())
    groups = group_keys(samples, config.group_by)
    if config.rule != "absolute":
        _warn_small_groups(groups)
    if len(parts) == 1 and variant not in Z_SCALED and config.rule == "absolute":
        scores = per_variant[0]
        flagging = flag(scores, groups, config.threshold_rule())
    else:
        # A sample is flagged when any score is over k MADs: the union of the scores' own MAD cuts.
        # Other rules cut the combined score (a quantile of it, or an absolute number of MADs); a
        # quantile of one score in MAD units flags what the same quantile of its raw values flags.
        scores = combined_score(parts, per_variant, groups)
        rule = ThresholdRule("absolute", absolute=config.k) if config.rule == "mad" else config.threshold_rule()
        flagging = flag(scores, groups, rule)
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
