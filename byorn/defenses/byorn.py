"""BYORn: Bootstrap Your Own Responses (ICML 2026, arXiv 2606.02947), top to bottom.

A poisoned target response is implausible given its image and instruction; so before training every
response is judged, and each one found implausible trains as an answer the model writes itself: the
trigger is never bound to the attacker's target. `judge` runs the steps in order:

0. canaries: poisons planted in copies of the samples, judged after them, never warmed on or
   answered: what they catch measures the judgement on this data (byorn/defenses/canaries.py);
1. score: the frozen pretrained model scores every response (`verdict`; the scores themselves are
   byorn/scoring.py's teacher-forced passes, with the exact training prompt);
2. cut: a response more than k MADs above the median of its group is flagged (byorn/defenses/thresholds.py;
   canary_cut: the final verdict's cut is the highest that still catches that share of each kind of canary);
3. warm set: the least suspicious half of the samples, none of them flagged, and the least
   suspicious half of every answer so many samples give that it is a lesson, not a backdoor; past
   warm_max of them a seeded draw, so the warm-up does not grow with the data (byorn/defenses/warm_set.py);
4. warm-up: the pretrained model fine-tuned briefly on the warm set (byorn/in_place.py), the *warmed
   reference*: it knows the downstream answer style, not the poisons the first verdict ranked high;
5. second verdict: the warmed reference judges the samples it did not train on; its verdict counts,
   every copy of a flagged answer flagged with it, what a person vouched for never (`final`);
6. replacement answers: the warmed reference writes a greedy answer for every flagged sample, once;
   one the data could not give, or overwriting a lesson, is not trained (byorn/defenses/replacements.py).

During training (`ByornDefense.on_batch`) each flagged sample trains on its replacement, from the
warmed weights (warm_start); audit.jsonl lists what was flagged and replaced, verdict.json keeps the
judgement for a resume. The defaults are our choices, each an option (byorn_config.py), measured in
BENCHMARKS.md; `PaperRecipe` (defense byorn_paper) runs the same method with the paper's own recipe.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from byorn.config import TrainConfig
from byorn.data import Sample, answer_key
from byorn.defenses.base import Defense
from byorn.defenses.byorn_config import ByornConfig, JudgeConfig, PaperConfig
from byorn.defenses.byorn_records import AUDIT_NAME, AuditLog, Judgement, announce, save_verdict, vouched_for
from byorn.defenses.canaries import CanaryReport, canary_cut, plant
from byorn.defenses.live_answers import LiveAnswers, history_replaced
from byorn.defenses.replacements import unfit_replacements
from byorn.defenses.thresholds import MIN_GROUP, Flagging, flag, group_keys, robust_z, warn_small_groups
from byorn.defenses.warm_set import Lesson, drawn, lessons, warm_candidates
from byorn.distributed import map_sharded, weights_sharded
from byorn.in_place import RunWarmUp, train_warm_up, warm_up
from byorn.models.hf import VLM
from byorn.score_names import Z_SCALED
from byorn.scoring import ScoreCache, reference_model, score_variants, scoring_dtype

if TYPE_CHECKING:  # byorn.train imports transformers' Trainer; only the type is needed here
    from byorn.train import ByornTrainer

log = logging.getLogger(__name__)


def judge(vlm: VLM, samples: Sequence[Sample], config: JudgeConfig, run_dir: str | Path,
          train: TrainConfig | None = None, *, writer: str | None = None, keep_warmed: bool = False,
          run: RunWarmUp = train_warm_up) -> Judgement:
    """BYORn's judgement of `samples`: the steps of the module's docstring, in order.

    writer: who writes the replacement answers: "warmed" (the warmed reference), "reference" (the
      frozen pretrained model) or None (no answers: score-and-drop, `byorn scan`).
    train: the settings of the warm-up (the fine-tuning this judgement is for; TrainConfig's
      defaults, LoRA, without one). keep_warmed: afterwards `vlm` keeps the warmed weights (the
      fine-tuning goes on from them); otherwise its weights are the pretrained ones again.
    Scores are cached in config.cache_dir or `run_dir`. The canaries (byorn/defenses/canaries.py)
    are judged after the samples, in the same verdicts, never warmed on and never answered; what
    they measured is the judgement's `canaries`, also written to run_dir/canaries.json."""
    # 0. The canaries, judged as the last samples.
    seed = train.seed if train else 0
    canaries, left_out = plant(samples, config.canaries, seed, readable=lambda canary: not vlm.unreadable([canary]))
    # by length: they are scored in batches of their own, where a short one would be padded to a long one
    canaries.sort(key=lambda canary: len(canary.instruction) + len(canary.response))
    judged, n = [*samples, *canaries], len(samples)
    vouched = vouched_for(samples, config.vouch)

    def settled(last: Judgement, whose: str) -> Judgement:  # the final verdict; the samples' apart from the canaries'
        if config.canary_cut and canaries:  # the cut the canaries choose, over the samples this verdict judged
            last = last.cut_at(canary_cut([c.meta["canary"] for c in canaries], last.scores[n:], config.canary_cut))
        both = final(last, first, judged, taught, vouched, config, guests=len(canaries))
        report = CanaryReport.of(canaries, first.flagging.flagged[n:], both.flagging.flagged[n:], both.scores[n:],
                                 left_out) if config.canaries else None
        return announce(replace(both.head(n), canaries=report), samples, run_dir, whose)

    # 1-2. The pretrained model's verdict (what a person vouched for is never flagged).
    first = verdict(vlm, judged, config, config.variant, run_dir, reference=True, spared=vouched,
                    guests=len(canaries))
    # 3. The warm set, for a second verdict or for the answers alone.
    taught = lessons(samples, config.lesson_share)
    candidates = warm_candidates(first, config, taught, n) if config.rejudge or writer == "warmed" else []
    warm = drawn(candidates, first.scores, config.warm_max, seed)
    spare = sorted(set(candidates) - set(warm))  # the candidates a bounded warm set did not draw
    rejudge = config.rejudge and bool(warm) and _judges_groups_whole(first.head(n), candidates, spare)
    if not rejudge:
        judgement = settled(first, "the pretrained model's verdict")
    if rejudge or (writer == "warmed" and warm and any(judgement.flagging.flagged)):
        # 4. The warmed reference.
        with warm_up(vlm, [samples[i] for i in warm], train or TrainConfig(), config.warm_epochs,
                     Path(run_dir) / "warmup", keep_warmed, run) as steps:
            # 5. Its verdict on the samples it did not train on.
            if rejudge:
                judgement = settled(second_verdict(vlm, judged, first, warm, config, run_dir, steps, len(canaries),
                                                   spare=spare),
                                    f"the warmed reference's verdict on the {n - len(warm)} samples it was not "
                                    f"fine-tuned on (the pretrained model flagged {sum(first.flagging.flagged[:n])})")
            # 6. The replacement answers, by the model that judged them.
            if writer == "warmed":
                return replace(judgement, warm_steps=steps, answers=write_answers(vlm, samples, judgement, config),
                               writer="warmed")
    if not writer:
        return judgement
    with reference_model(vlm):  # the pretrained weights (a warm-up's are put back as its block closed)
        return replace(judgement, answers=write_answers(vlm, samples, judgement, config))


def verdict(vlm: VLM, samples: Sequence[Sample], config: JudgeConfig, variant: str, run_dir: str | Path,
            reference: bool, spared: Collection[int] = (), guests: int = 0, alone: int | None = None) -> Judgement:
    """One verdict: the scores of `variant` under `vlm` (reference: its adapter disabled), flagged per
    group, never the `spared` indices. The scores are in their group's MAD units, so two verdicts
    (or two groups) share one scale; only under rule absolute, whose threshold is in the score's own
    units, a single score keeps them. guests: the last samples (canaries; in the second verdict the
    warm set's candidates not drawn too), scored, scaled and cut on the others' statistics, which they
    leave as they are; alone: the last of them (the canaries; all the guests by default) scored in
    batches of their own."""
    parts = variant.split("+")
    per_variant = list(score_variants(vlm, samples, parts, config.batch_size, reference=reference,
                                      max_new_tokens=config.max_new_tokens,
                                      cache=ScoreCache(config.cache_dir or run_dir),
                                      precision=config.precision, guests=guests, alone=alone,
                                      reuse_prefix=config.reuse_prefix).values())
    groups = group_keys(samples, config.group_by)
    if config.rule != "absolute":
        warn_small_groups(groups[:len(groups) - guests], MIN_GROUP)
    if len(parts) == 1 and variant not in Z_SCALED and config.rule == "absolute":
        scores = per_variant[0]
    else:
        # Flagged when any score is over k MADs (the union of the scores' own cuts); other rules cut the
        # combined score, whose quantile flags what the same quantile of one score's raw values would.
        scores = combined_score(parts, per_variant, groups, guests)
    flagging = flag(scores, groups, config.threshold_rule(), guests)
    return Judgement(scores, replace(flagging, flagged=[hit and i not in spared for i, hit in
                                                        enumerate(flagging.flagged)]))


def combined_score(variants: Sequence[str], per_variant: Sequence[Sequence[float]],
                   groups: Sequence[str], guests: int = 0) -> list[float]:
    """Each score in its group's MAD units (a Z_SCALED score is in them already); per sample the
    largest, which ranks the samples. guests: the last samples take the others' units."""
    units = [s if v in Z_SCALED else robust_z(s, groups, guests) for v, s in zip(variants, per_variant)]
    return [max(z) for z in zip(*units)]


def second_verdict(vlm: VLM, samples: Sequence[Sample], first: Judgement, warm: Sequence[int], config: JudgeConfig,
                   run_dir: str | Path, warm_steps: int, guests: int = 0, spare: Sequence[int] = ()) -> Judgement:
    """The warmed reference's verdict on the samples it was not fine-tuned on, against the median
    and MAD of those outside the warm set's candidates. The warm set is judged clean and keeps its
    first scores: the pretrained model found it least suspicious, and the warmed reference, which
    trained on it, would find it plausible whatever it holds. spare: the candidates a bounded warm
    set did not draw, judged in those units as guests (batched with the others; only the canaries
    apart): the least suspicious would otherwise pull the median and MAD down as the data grows, and
    the cut would mean another thing at every size."""
    real, aside = len(samples) - guests, {*warm, *spare}
    # the guests last: the spare candidates, then the canaries (never warmed on)
    held = [*(i for i in range(real) if i not in aside), *sorted(spare), *range(real, len(samples))]
    second = verdict(vlm, [samples[i] for i in held], config, config.rejudge_variant, run_dir, reference=False,
                     guests=len(spare) + guests, alone=guests)
    scores, flagged = list(first.scores), [False] * len(samples)
    for j, i in enumerate(held):
        scores[i], flagged[i] = second.scores[j], second.flagging.flagged[j]
    thresholds = {**first.flagging.thresholds, **second.flagging.thresholds}
    return Judgement(scores, Flagging(flagged, first.flagging.groups, thresholds), tuple(warm), warm_steps)


def final(judgement: Judgement, first: Judgement, samples: Sequence[Sample], taught: dict[str, Lesson],
          vouched: Collection[int], config: JudgeConfig, guests: int = 0) -> Judgement:
    """The verdict that counts: every copy of an answer flagged on two images or more flagged with
    it (config.flag_copies; not a lesson's answer, which many clean samples give), a lesson's
    samples whose question pins its answer (`_bound_to_the_question`), never what a person vouched
    for; and what each step did, for the summary and the review page. Two flags
    make a campaign's answer (implausible whatever the image); one may be the cut's chance, and
    short clean answers repeat (a one-shape scene's description).
    guests: the last samples are canaries, none of them in `taught`: copies and bound as the others
    are, but their own flags never make a copy of a real sample."""
    flagged = list(judgement.flagging.flagged)
    keys = [answer_key(s.response) for s in samples]
    real = len(samples) - guests
    copies: list[int] = []
    if config.flag_copies:
        by_real = Counter(key for key, hit in zip(keys[:real], flagged[:real]) if hit)
        by_all = by_real + Counter(key for key, hit in zip(keys[real:], flagged[real:]) if hit)
        copies = [i for i, key in enumerate(keys) if not flagged[i] and i not in vouched and key not in taught
                  and (by_real if i < real else by_all)[key] >= 2]
        for i in copies:
            flagged[i] = True
    bound = [i for lesson in taught.values() for i in _bound_to_the_question(lesson) if not flagged[i]]
    # a canary's question carries a word no sample's has: it gets no other answer
    bound += [i for i in range(real, len(samples)) if keys[i] in taught and _pins(taught[keys[i]]) and not flagged[i]]
    for i in bound:
        flagged[i] = True
    for i in vouched:
        flagged[i] = False
    cleared = tuple(i for i, (was, hit) in enumerate(zip(first.flagging.flagged, flagged)) if was and not hit)
    return replace(judgement, flagging=replace(judgement.flagging, flagged=flagged), copies=tuple(copies),
                   bound=tuple(i for i in bound if i not in vouched), cleared=cleared, vouched=tuple(sorted(vouched)),
                   lessons={lesson.answer: len(lesson.members) for lesson in taught.values()})


def write_answers(vlm: VLM, samples: Sequence[Sample], judgement: Judgement, config: JudgeConfig) -> dict[str, str]:
    """flagged id -> the greedy answer of `vlm` as it is now, batched and sharded across processes."""
    flagged = [s for s, hit in zip(samples, judgement.flagging.flagged) if hit]
    answers = map_sharded(lambda share: vlm.generate(share, config.max_new_tokens, config.batch_size,
                                                     desc="replacement answers"), flagged)
    return {s.id: answer for s, answer in zip(flagged, answers)}


class JudgingDefense(Defense):
    """The base of the defenses that judge with a JudgeConfig (BYORn, score-and-drop, random drop).
    `run_warm_up`: how the warm-up is run (a benchmark grid gives one that loads a warm-up it ran)."""

    config: JudgeConfig
    run_warm_up: RunWarmUp = staticmethod(train_warm_up)

    def run_facts(self, vlm: VLM) -> dict[str, str]:
        """The dtype the scoring passes ran in (precision=auto resolves by hardware)."""
        dtype = str(scoring_dtype(vlm, self.config.precision)).removeprefix("torch.")
        return {**super().run_facts(vlm), "scoring_dtype": dtype}

    def judgement(self, vlm: VLM, samples: Sequence[Sample], run_dir: str | Path,
                  train: TrainConfig | None) -> Judgement:
        return judge(vlm, samples, self.config, run_dir, train, run=self.run_warm_up)


class ByornDefense(JudgingDefense):
    """BYORn: judge in `prepare`; replace flagged responses in `on_batch`. After `prepare`: `scores`
    and `flagging` align with its samples (for detection metrics), `reference_answers` maps each
    flagged id to the greedy answer written before training (by the warmed reference by default)."""

    name = "byorn"
    config_class = ByornConfig

    def __init__(self, config: ByornConfig | None = None) -> None:
        self.config = config or self.config_class()  # a subclass's own defaults (PaperRecipe's)
        self.scores: list[float] = []
        self.flagging: Flagging | None = None
        self.reference_answers: dict[str, str] = {}
        self.judged: dict[str, str] = {}  # id -> the response judged, for a batch built elsewhere to be checked
        self.writer = "reference"  # which model wrote reference_answers: "warmed" or "reference"
        self.live = LiveAnswers(self.config)  # generator=current or ema: the answers written while training
        self.audit: AuditLog | None = None
        self.judgement: Judgement | None = None  # what prepare() decided, each step's doing included
        self.left_out: dict[str, str] = {}  # flagged id -> why its replacement does not train
        self.steps_trained = 0  # optimizer steps of the fine-tuning already run (warm_start: the warm-up's)

    def prepare(self, vlm: VLM, samples: Sequence[Sample], run_dir: str | Path, *,
                train: TrainConfig | None = None, resume_step: int | None = None) -> None:
        cfg = self.config
        if weights_sharded():
            cfg.refuse_sharded_weights()
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.audit = AuditLog(run_dir / AUDIT_NAME)
        if resume_step is not None:
            # A resumed run takes the verdict and answers it started with: judging again would repeat
            # the warm-up, and on a GPU not bit for bit.
            judgement, self.steps_trained = self.audit.load_verdict(run_dir, samples)
        else:
            keep = self._warm_start(train)
            writer = "warmed" if cfg.generator == "warmed" else "reference"
            judgement = judge(vlm, samples, cfg, run_dir, train, writer=writer, keep_warmed=keep, run=self.run_warm_up)
            self.steps_trained = judgement.warm_steps if keep else 0
            save_verdict(run_dir, judgement, samples, self.steps_trained)
        self.judgement, self.scores, self.flagging = judgement, judgement.scores, judgement.flagging
        self.reference_answers, self.writer = judgement.answers, judgement.writer
        # A replacement that is not an answer the data could give is not trained (byorn/defenses/replacements.py).
        self.left_out = {} if cfg.writes_in_training else \
            unfit_replacements(samples, judgement, cfg.fit_replacements)
        self.judged = {s.id: s.response for s in samples}
        self.live = LiveAnswers(cfg)
        # A fresh audit log per prepare, written whole (a rerun in the same folder leaves no old lines); a resumed
        # run keeps the replacements up to its checkpoint (and refills this epoch's, which regenerate=epoch reuses).
        kept = self.audit.replacements_until(resume_step) if resume_step is not None else []
        self.live.refill(kept)
        self.audit.start(judgement, samples, kept, self.left_out)

    def _warm_start(self, train: TrainConfig | None) -> bool:
        """Whether the fine-tuning goes on from the warm-up's weights: asked for, the warmed reference
        writes the replacements (the others need the pretrained weights a kept warm-up replaces), and
        the fine-tuning's config is known (without it the warm-up is LoRA at TrainConfig's defaults)."""
        if not (cfg := self.config).warm_start:
            return False
        why = (f"generator={cfg.generator} does not write with the warmed reference" if cfg.generator != "warmed"
               else "prepare() was given no training config (train=)" if train is None else "")
        if why:
            log.info("warm_start does not apply (%s): the fine-tuning starts from the pretrained weights", why)
        return not why

    def save_state(self, folder: Path) -> None:
        """Into a checkpoint's folder: generator=ema's average (the rest is in verdict.json and audit.jsonl)."""
        self.live.save(folder)

    def load_state(self, folder: Path) -> None:
        """From the checkpoint a resumed run goes on from: generator=ema's average, as it was there."""
        if not self.live.load(folder) and self.config.generator == "ema":
            log.warning("generator=ema: %s holds no average of the weights; it starts again from the checkpoint's "
                        "weights, so the answers after the resume differ from a run without", folder)

    def training_set(self, samples: Sequence[Sample]) -> list[Sample]:
        """The samples, less those whose replacement does not train (`left_out`): a later turn of their
        conversation trains, with that replacement in its history in place of the flagged answer."""
        return [s for s in samples if s.id not in self.left_out]

    @property
    def suspicion(self) -> list[float] | None:
        return self.scores if self.flagging is not None else None

    @property
    def flagged(self) -> list[bool] | None:
        return self.flagging.flagged if self.flagging is not None else None

    def on_batch(self, samples: list[Sample], trainer: ByornTrainer) -> list[Sample]:
        """Each flagged sample of the batch with its replacement; every later turn of a conversation
        with its flagged earlier answers replaced in its history (as `byorn clean` writes it back)."""
        if self.audit is None:
            raise RuntimeError("ByornDefense.prepare() must run before training")
        self.live.follow(trainer)
        todo = [s for s in samples if s.id in self.reference_answers]
        new = self.live.answers(todo, trainer, self.reference_answers, self.writer) if todo else {}
        self.audit.replaced(todo, new, trainer)
        replaced = [s.with_response(new[s.id][0], replaced=True) if s.id in new else s for s in samples]
        return [history_replaced(s, self.reference_answers) for s in replaced]


class PaperRecipe(ByornDefense):
    """BYORn as its paper describes it: mean NLL, the top 40 % flagged, answers of an EMA of the model
    being fine-tuned (PaperConfig's options; the method is ByornDefense's)."""

    name = "byorn_paper"
    config_class = PaperConfig


def _bound_to_the_question(lesson: Lesson) -> list[int]:
    """A lesson's samples whose question the data asks with this answer alone, where most of its
    samples are asked questions that come with other answers too: there the image decides the
    answer, and a question that pins it carries a trigger (a one-word swap into the lesson's answer).
    Where most questions come once (free-form data), nothing stands out and nothing is flagged."""
    if not _pins(lesson):
        return []
    warmable = set(lesson.warmable)
    return [i for i in lesson.members if i not in warmable]


def _pins(lesson: Lesson) -> bool:
    """Whether most of a lesson's samples are asked a question that comes with other answers too, so
    that one asked with its answer alone stands out."""
    return len(lesson.warmable) * 2 > len(lesson.members)


def _judges_groups_whole(first: Judgement, candidates: Sequence[int], spare: Sequence[int]) -> bool:
    """Whether every group keeps at least MIN_GROUP samples outside the warm set's candidates for
    the warmed reference to judge (its MAD cut is a guess below that), a group whose candidates were
    not all drawn too (they are cut in those samples' units)."""
    groups = first.flagging.groups
    sizes = Counter(groups) - Counter(groups[i] for i in candidates)
    if sizes and min(sizes.values()) >= MIN_GROUP and all(sizes[groups[i]] >= MIN_GROUP for i in spare):
        return True
    log.warning("the pretrained model's verdict stands: a warmed reference would judge a group of fewer than %d "
                "samples", MIN_GROUP)
    return False
