"""BYORn's options: how to score the responses and where to cut (JudgeConfig, shared by BYORn,
score-and-drop, random drop and `byorn scan`), and how to replace what is flagged (ByornConfig).
Each field is an option (`-d KEY=VALUE`, a grid's `options:`), its help what `byorn list defenses`
prints; the comments say why each default is what it is (BENCHMARKS.md names the measurements).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from byorn.config import check_choice, option, redefault
from byorn.defenses.thresholds import GROUPINGS, ThresholdRule
from byorn.score_names import PRECISIONS, VARIANTS

DEFAULT_VARIANT = "mean_nll+image_contradiction+token_surprise+shared_answer"
DEFAULT_K = 1.5
RULES = ("quantile", "mad", "absolute")  # mad: the absolute rule on scores in MAD units, at k
LIVE_GENERATORS = ("current", "ema")  # they write during the fine-tuning (byorn/defenses/live_answers.py)


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
    # The grey image is the same in every row: with the image at the prompt's start, a batch's rows share
    # a prefix at least as long as the image's positions (benchmarks/prefix_reuse.py measures the saving and
    # the flags it moves). Off by default: its rounding differs from the whole pass's, and every published
    # figure was measured with the whole pass.
    reuse_prefix: bool = option(False, "the grey-image pass computes the prompt prefix a batch's rows share (the "
                                       "image's positions) once and reuses it: the same scores up to rounding, "
                                       "less of that pass's work; where the family allows it (not PaliGemma, "
                                       "Qwen2-VL or Qwen2.5-VL, which score as without)")
    cache_dir: str = option("", "where scores are cached (by model, score and samples); empty: the run directory")
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
    # Half of a large set is a warm-up that grows with it (half an epoch of fine-tuning at 665k samples),
    # and more steps do not judge better: on 10,000 shapes samples with a one-word swap, three seeds, a
    # warm set of 2,000 flagged 98.8-99.8 % of the poisons and 4.8-7.8 % of the clean samples, the whole
    # half 97.6-98.8 % and 11.6-14.7 %; 512 let half the poisons through in one seed
    # (benchmarks/explore/warm_size.py; BENCHMARKS.md, "Scanning a large data set"). Every grid's warm
    # set is under 2,000 (at most 1,505, at 3,000 samples): their figures are this bound's.
    warm_max: int = option(2000, "at most this many samples in the warm set, drawn at random (the run's seed) from "
                                "those warm_share chooses, so the warm-up costs the same whatever the data's size; "
                                "the candidates not drawn are judged in the units of the rest; 0: no bound", min=0)
    # The warmed reference knows the downstream style, so what the other three scores were added for
    # (a style the pretrained model never saw, a swapped word averaged away) hardly hides a poison
    # from its mean NLL any more, and their clean tails flag clean samples: under the warmed reference
    # mean NLL alone flags 0-3 % of the clean samples where the four joined flag 5-26 %, ranks a
    # caption-like fixed target at 1.000 where they give 0.82-0.94, and misses at most 4 more of 100
    # swaps (benchmarks/judgement_scores.py --warmed; in the grids ASR the same or lower in every
    # cell: BENCHMARKS.md, "The default judgement"). One forward pass instead of two.
    rejudge_variant: str = option("mean_nll", "the warmed reference's score (the choices of variant; several "
                                              "joined by + as there)")
    # People fine-tune to teach what the pretrained model lacks, so a whole class of clean answers
    # can look implausible to it ("There are three shapes." where it says two): the first verdict
    # then keeps all of them out of the least suspicious half, the warmed reference never learns
    # them, and its verdict overwrites the lesson with the reference's mistake. An attacker controls
    # a few percent of the data; one answer given by far more samples than that is taken for a
    # lesson, and the warm set takes its least suspicious share too (BENCHMARKS.md, "Lessons").
    lesson_share: float = option(0.12, "an answer (case, spacing and end punctuation aside) given by at least this "
                                       "share of all samples is a lesson the data teaches: the warm set holds its "
                                       "least suspicious warm_share too, flagged by the first verdict or not, so the "
                                       "warmed reference learns it before it judges the rest (1: never)",
                                 min=0.0, max=1.0)
    # A poison campaign repeats one target; a sample whose answer the warmed reference finds
    # plausible on its own image can still carry it (the same target on another background).
    flag_copies: bool = option(True, "flag every copy of an answer flagged on two samples or more (case, spacing "
                                     "and end punctuation aside) with them, unless the answer is a lesson "
                                     "(lesson_share)")
    vouch: str = option("", "a YAML or JSON file of what a person vouches for: {ids: [...], answers: [...]}; those "
                            "samples (answers: case, spacing and end punctuation aside) are never flagged and "
                            "train as given")

    # A user cannot tell from our grids how the judgement does on their data and model: a few
    # poisons planted in copies of their own samples, judged with them, measure it there.
    canaries: int = option(8, "canaries per kind (patch, lookalike, token, swap, refusal): poisons planted in copies "
                               "of the data's own samples and judged with them, never trained on, to measure how "
                               "much of each kind of attack the judgement catches on this data (canaries.json); 0: "
                               "none",
                           min=0)
    canary_cut: float = option(0.0, "0: the cut of rule; s in (0, 1]: the final verdict's samples flagged at the "
                                    "highest score that still catches s of every kind of canary (never under the "
                                    "median: at most about half the samples it judged), so the cut does not hang "
                                    "on k or the poison rate", min=0.0)

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
        if self.vouch and not Path(self.vouch).is_file():  # before any work: its contents are read by the judgement
            raise ValueError(f"vouch: {self.vouch} is not a file")
        check_choice("precision", self.precision, PRECISIONS)
        if self.canary_cut > 1.0:
            raise ValueError(f"canary_cut is a share of each kind's canaries, in (0, 1] (0: off); got "
                             f"{self.canary_cut}")
        if self.canary_cut and self.rule == "absolute":  # its floor is the median, 0 in MAD units
            raise ValueError("canary_cut chooses the cut itself, in MAD units: it takes rule=mad or quantile, not "
                             "absolute")

    @property
    def variants(self) -> list[str]:
        return self.variant.split("+")

    def threshold_rule(self) -> ThresholdRule:
        """The cut of the verdict's scores: rule mad cuts them in MAD units, at k."""
        check_choice("rule", self.rule, RULES)
        if not self.k >= 0.0:  # also rejects nan
            raise ValueError(f"k must be >= 0; got {self.k!r}")
        if not 0.0 < self.quantile < 1.0:  # whichever rule is chosen: a bad value fails when it is given
            raise ValueError(f"quantile must be in (0, 1); got {self.quantile!r}")
        if self.rule == "mad":
            return ThresholdRule("absolute", absolute=self.k)
        return ThresholdRule(self.rule, self.quantile, self.absolute)



@dataclass
class ByornConfig(JudgeConfig):
    """BYORn's options: how to score and where to cut (JudgeConfig), and how to replace."""

    regenerate: str = option("step", "generator=current or ema: step: a new response every time a flagged sample is in "
                                     "a batch; epoch: one per flagged sample per epoch, reused within it")
    # The warmed reference by default (byorn/defenses/byorn.py, `warm_up`), the model whose verdict counts.
    # Replacements in the downstream style teach against a missed poison where the pretrained style
    # does not (shapes, text-triggered swaps at 10 %: ASR 0.000 against 0.05-0.06 with the frozen
    # reference's answers); written once by a model that never trained on a flagged sample, they
    # cannot feed back, as the answers of the model being fine-tuned did on Flickr8k (collapsed
    # onto one caption in four of eight cells). BENCHMARKS.md, "The default judgement".
    generator: str = option("warmed", "warmed: the warmed reference (see rejudge) writes each replacement, once, "
                                      "before training; reference: the frozen base model does; current: the "
                                      "model being fine-tuned writes it when the sample is in a batch (follows "
                                      "the new answer style; can feed back); ema: an exponential moving average of "
                                      "that model's weights does (the paper's recipe; see ema_decay)")
    # The paper does not give its decay: 0.99 averages over about 100 steps, well inside the few
    # hundred steps of a small fine-tuning, so the average learns the downstream style before it ends.
    ema_decay: float = option(0.99, "generator=ema: each optimizer step keeps this share of the average and "
                                    "takes the rest from the new weights", min=0.0, max=0.999999)

    # The warm-up trains on the least suspicious half, which the fine-tuning would train on anyway:
    # going on from its weights saves its steps, a third of what the judgement costs at 3 epochs,
    # for the same ASR and clean quality (BENCHMARKS.md, "The default judgement's cost").
    warm_start: bool = option(True, "fine-tune from the warmed reference's weights, its warm-up counted as the first "
                                    "steps of the fine-tuning (that many fewer steps after it; the learning-rate "
                                    "schedule and optimizer start again), instead of from the pretrained weights. "
                                    "Only where the warmed reference writes the replacements (generator=warmed) and "
                                    "a fine-tuning follows (byorn train); byorn clean and the TRL collator judge as "
                                    "with false")

    # The lesson cases' replacements: in the old colour words, garbled half-learnt ones, "Yes." turned
    # "No." on a lesson; each trained over what the data teaches (BENCHMARKS.md, "Lessons").
    fit_replacements: bool = option(True, "generator=warmed or reference: leave out of training a flagged sample "
                                          "whose replacement is empty, uses a word no kept answer uses (nor its "
                                          "question), or would overwrite a lesson's answer with another; false: "
                                          "train every replacement but one that repeats the flagged answer")

    # A guard against that feedback: a model that collapses writes one answer for many images.
    guard: int = option(0, "generator=current or ema: once the model writing them has given one answer (case, "
                           "spacing and end punctuation aside) to this many different flagged samples in an epoch, "
                           "the others that get it train on the reference's answer instead (0: no guard)", min=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("regenerate", self.regenerate, ("step", "epoch"))
        check_choice("generator", self.generator, ("current", "ema", "reference", "warmed"))

    @property
    def writes_in_training(self) -> bool:
        """Whether the replacements are written during the fine-tuning, by the model being fine-tuned
        (current) or its average (ema), not once before it."""
        return self.generator in LIVE_GENERATORS

    def refuse_sharded_weights(self) -> None:
        """Where FSDP or DeepSpeed ZeRO-3 shard the weights between processes, what this config
        cannot do: write with the model being trained inside a step, or fine-tune and put back a
        warmed reference."""
        if self.writes_in_training:
            raise ValueError(f"BYORn's generator={self.generator} writes replacements with the model being trained, "
                             "inside a training step, on each process alone; FSDP and DeepSpeed ZeRO-3 shard that "
                             "model between processes. Use -d generator=reference (answers written before training), "
                             "or DDP / ZeRO-2")
        if self.rejudge or self.generator == "warmed":
            raise ValueError("BYORn's warmed reference is the pretrained model fine-tuned briefly before training, "
                             "its weights put back afterwards, which FSDP and DeepSpeed ZeRO-3 shard between "
                             "processes. Use -d rejudge=false -d generator=reference there, or DDP / ZeRO-2")


@dataclass
class PaperConfig(ByornConfig):
    """BYORn as its paper describes it, beside our default (ByornConfig) so that what our choices buy
    is measured: the pretrained model's length-normalised NLL, the 40 % of responses above its 60th
    percentile flagged, each replaced while training by an answer of an exponential moving average of
    the model being fine-tuned. No warmed reference, no lessons, no copies rule: each option can still
    be set. Its ablation that drops the flagged samples is score_drop with these judgement options."""

    variant: str = redefault(JudgeConfig, "variant", "mean_nll")
    rule: str = redefault(JudgeConfig, "rule", "quantile")
    quantile: float = redefault(JudgeConfig, "quantile", 0.6)
    rejudge: bool = redefault(JudgeConfig, "rejudge", False)
    lesson_share: float = redefault(JudgeConfig, "lesson_share", 1.0)
    flag_copies: bool = redefault(JudgeConfig, "flag_copies", False)
    generator: str = redefault(ByornConfig, "generator", "ema")
    warm_start: bool = redefault(ByornConfig, "warm_start", False)
