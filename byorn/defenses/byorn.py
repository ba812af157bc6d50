"""BYORn: Bootstrap Your Own Responses (ICML 2026, arXiv 2606.02947).

A poisoned target response is implausible given its image and instruction under the pretrained
model. So, before training, judge every response (`prepare`; byorn.defenses.judging: the frozen
reference model, then by default the warmed reference, which has seen the downstream answer
style), flag the implausible ones, and whenever a flagged sample is in a batch, train on a
response the model generates itself instead of the given one (`on_batch`): the trigger is never
bound to the attacker's target. By default that response is written once, in `prepare`, by the
warmed reference. Everything flagged and replaced goes to `audit.jsonl` in the run directory.

The paper's exact score, threshold and generator are not public; the defaults below are our
choices, each an option of ByornConfig (`byorn list defenses` describes them) and switchable.

Empty generations: a model early in fine-tuning can answer with end-of-turn at once. Training on
that empty answer would teach it to say nothing, which it would then generate again: a collapse
that feeds itself. So an empty answer from the current model is replaced by the reference
model's greedy answer, computed once in `prepare` for every flagged sample. If that is empty as
well, the step trains on the empty response: it is then exactly the reference's own behaviour,
and it encodes fine (the target is the end-of-turn marker alone).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from byorn.config import TrainConfig, check_choice, option
from byorn.data import Sample, answer_key, conversation_of, turn_id
from byorn.defenses.judging import (
    JudgeConfig,
    Judgement,
    Judging,
    judgement_from_record,
    judgement_record,
    judging,
    warm_indices,
    warmed,
)
from byorn.defenses.thresholds import Flagging
from byorn.distributed import all_gather, barrier, is_main, map_sharded, weights_sharded
from byorn.fileio import append_jsonl, atomic_write_text, write_jsonl
from byorn.models.hf import VLM
from byorn.scoring import reference_model

if TYPE_CHECKING:  # byorn.train imports transformers' Trainer; only the type is needed here
    from byorn.train import ByornTrainer

log = logging.getLogger(__name__)

AUDIT_NAME = "audit.jsonl"
VERDICT_NAME = "verdict.json"  # the judgement and the replacement answers, for a resumed run


@dataclass
class ByornConfig(JudgeConfig):
    """BYORn's options: how to score and where to cut (JudgeConfig), and how to replace."""

    regenerate: str = option("step", "generator=current: step: a new response every time a flagged sample is in "
                                     "a batch; epoch: one per flagged sample per epoch, reused within it")
    # The warmed reference by default (byorn/defenses/warmup.py), the model whose verdict counts.
    # Replacements in the downstream style teach against a missed poison where the pretrained style
    # does not (shapes, text-triggered swaps at 10 %: ASR 0.000 against 0.05-0.06 with the frozen
    # reference's answers); written once by a model that never trained on a flagged sample, they
    # cannot feed back, as the answers of the model being fine-tuned did on Flickr8k (collapsed
    # onto one caption in four of eight cells). BENCHMARKS.md, "The default judgement".
    generator: str = option("warmed", "warmed: the warmed reference (see rejudge) writes each replacement, once, "
                                      "before training; reference: the frozen base model does; current: the "
                                      "model being fine-tuned writes it when the sample is in a batch (follows "
                                      "the new answer style; can feed back)")

    # The warm-up trains on the least suspicious half, which the fine-tuning would train on anyway:
    # going on from its weights saves its steps, a third of what the judgement costs at 3 epochs,
    # for the same ASR and clean quality (BENCHMARKS.md, "The default judgement's cost").
    warm_start: bool = option(True, "fine-tune from the warmed reference's weights, its warm-up counted as the first "
                                    "steps of the fine-tuning (that many fewer steps after it; the learning-rate "
                                    "schedule and optimizer start again), instead of from the pretrained weights. "
                                    "Only where the warmed reference writes the replacements (generator=warmed) and "
                                    "a fine-tuning follows (byorn train); byorn clean and the TRL collator judge as "
                                    "with false")

    # A guard against that feedback: a model that collapses writes one answer for many images.
    guard: int = option(0, "generator=current: once the model being fine-tuned has given one answer (case, spacing "
                           "and end punctuation aside) to this many different flagged samples in an epoch, the "
                           "others that get it train on the reference's answer instead (0: no guard)", min=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("regenerate", self.regenerate, ("step", "epoch"))
        check_choice("generator", self.generator, ("current", "reference", "warmed"))


class ByornDefense(Judging):
    """BYORn: score and flag in `prepare`; replace flagged responses in `on_batch`.

    After `prepare`: `scores` and `flagging` are aligned with the samples it was given (for
    detection metrics), `reference_answers` maps each flagged id to the greedy answer written before
    training (by the warmed reference with the default, by the frozen one otherwise).
    """

    name = "byorn"
    config_class = ByornConfig

    def __init__(self, config: ByornConfig | None = None) -> None:
        self.config = config or ByornConfig()
        self.scores: list[float] = []
        self.flagging: Flagging | None = None
        self.reference_answers: dict[str, str] = {}
        self.judged: dict[str, str] = {}  # id -> the response judged, for a batch built elsewhere to be checked
        self.writer = "reference"  # which model wrote reference_answers: "warmed" or "reference"
        self._generated: dict[str, tuple[int, str]] = {}  # id -> (epoch, answer), for regenerate="epoch"
        self._answered: dict[tuple[int, str], set[str]] = {}  # (epoch, answer key) -> ids it was trained on, for guard
        self._audit: Path | None = None
        self.steps_trained = 0  # optimizer steps of the fine-tuning already run (warm_start: the warm-up's)

    # ---- before training ---------------------------------------------------------------------

    def prepare(self, vlm: VLM, samples: Sequence[Sample], run_dir: str | Path, *,
                train: TrainConfig | None = None, resume_step: int | None = None) -> None:
        cfg = self.config
        if cfg.generator == "current" and weights_sharded():
            raise ValueError("BYORn's generator=current writes replacements with the model being trained, inside a "
                             "training step, on each process alone; FSDP and DeepSpeed ZeRO-3 shard that model between "
                             "processes. Use -d generator=reference (answers written before training), or DDP / ZeRO-2")
        if (cfg.rejudge or cfg.generator == "warmed") and weights_sharded():
            raise ValueError("BYORn's warmed reference is the pretrained model fine-tuned briefly before training, "
                             "its weights put back afterwards, which FSDP and DeepSpeed ZeRO-3 shard between "
                             "processes. Use -d rejudge=false -d generator=reference there, or DDP / ZeRO-2")
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)

        # A resumed run takes the verdict and answers it started with: judging again would repeat the
        # warm-up, and on a GPU not bit for bit.
        saved = run_dir / VERDICT_NAME
        if resume_step is not None:
            judgement, answers = self._load_verdict(saved, samples)
        else:
            judgement, answers = self._judge(vlm, samples, run_dir, train)
            if is_main():
                atomic_write_text(saved, json.dumps({**judgement_record(judgement, samples), "writer": self.writer,
                                                     "answers": answers, "steps_trained": self.steps_trained},
                                                    ensure_ascii=False))
        self.scores, self.flagging = judgement.scores, judgement.flagging
        flagged = [i for i, hit in enumerate(judgement.flagging.flagged) if hit]
        groups = self.flagging.groups
        self.reference_answers = answers
        self.judged = {s.id: s.response for s in samples}
        self._generated.clear()
        self._answered.clear()

        # A fresh audit log per prepare, written whole: a rerun in the same run directory must not
        # leave the previous run's lines in it. A resumed run keeps the replacements made up to
        # its checkpoint (and the answers of this epoch that regenerate="epoch" reuses).
        self._audit = run_dir / AUDIT_NAME
        lines = [{"event": "flagged", "id": samples[i].id, "score": self.scores[i],
                  "threshold": self.flagging.thresholds[groups[i]], "group": groups[i],
                  "response": samples[i].response, "reference_response": answers[samples[i].id]}
                 for i in flagged]
        if resume_step is not None:
            lines += self._replacements_until(resume_step)
        barrier()  # every process has read the old log before the main one rewrites it
        if is_main():
            write_jsonl(self._audit, lines, ensure_ascii=False)

    def _judge(self, vlm: VLM, samples: Sequence[Sample], run_dir: Path,
               train: TrainConfig | None) -> tuple[Judgement, dict[str, str]]:
        """The judgement, and the replacement answer (flagged id -> answer) of every flagged sample."""
        cfg = self.config

        def write(flagged: list[int]) -> dict[str, str]:  # by the model in place when called
            answers = map_sharded(lambda share: vlm.generate(share, cfg.max_new_tokens, cfg.batch_size,
                                                             desc=f"{cfg.generator} answers"),
                                  [samples[i] for i in flagged])
            return {samples[i].id: answer for i, answer in zip(flagged, answers)}

        answers = None
        keep = self._warm_start(train)
        with judging(vlm, samples, cfg, run_dir, train, keep_warmed=keep) as judgement:
            flagged = [i for i, hit in enumerate(judgement.flagging.flagged) if hit]
            if cfg.generator == "warmed" and judgement.warmed_on:
                answers, self.writer = write(flagged), "warmed"  # the warmed reference that judged them
        self.steps_trained = judgement.warm_steps if keep else 0
        self.loaded_from = judgement.warm_loaded_from
        if answers is None:  # no second verdict: warm a reference for the answers alone, if asked
            warm = warm_indices(judgement, cfg) if cfg.generator == "warmed" and flagged else []
            if not warm:  # with nothing to warm on (warm_share or warm_epochs 0) the frozen reference writes
                with reference_model(vlm):
                    answers, self.writer = write(flagged), "reference"
            else:
                with warmed(vlm, samples, warm, cfg, train, run_dir, keep=keep) as warm_up:
                    answers, self.writer = write(flagged), "warmed"
                self.steps_trained = warm_up.steps if keep else 0
                self.loaded_from = warm_up.loaded_from
        return judgement, answers

    def _warm_start(self, train: TrainConfig | None) -> bool:
        """Whether the fine-tuning goes on from the warm-up's weights: asked for, the warmed reference
        writes the replacements (the frozen reference's answers, and generator=current's fallbacks,
        need the pretrained weights a kept warm-up replaces), and the fine-tuning's config is known
        (without it the warm-up is LoRA at TrainConfig's defaults, which need not be the fine-tuning)."""
        cfg = self.config
        if not cfg.warm_start:
            return False
        why = f"generator={cfg.generator} writes with the pretrained weights" if cfg.generator != "warmed" else \
            "prepare() was given no training config (train=)" if train is None else ""
        if why:
            log.info("warm_start does not apply (%s): the fine-tuning starts from the pretrained weights", why)
        return not why

    def _load_verdict(self, path: Path, samples: Sequence[Sample]) -> tuple[Judgement, dict[str, str]]:
        if not path.exists():  # judging again could flag other samples than the kept audit log replaced
            raise FileNotFoundError(f"cannot resume BYORn: no {VERDICT_NAME} in the run directory")
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            answers, self.writer = {str(k): str(v) for k, v in record["answers"].items()}, str(record["writer"])
            self.steps_trained = int(record.get("steps_trained", 0))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"cannot resume BYORn from {path}: {type(exc).__name__}: {exc}") from exc
        judgement = judgement_from_record(record, samples, f"cannot resume BYORn from {path}")
        missing = [s.id for s, hit in zip(samples, judgement.flagging.flagged) if hit and s.id not in answers]
        if missing:
            raise ValueError(f"cannot resume BYORn from {path}: no answer for flagged sample {missing[0]!r}")
        log.info("resumed with the verdict of %s: %d of %d samples flagged", path, len(answers), len(samples))
        return judgement, answers

    def _replacements_until(self, step: int) -> list[dict]:
        """The audit log's replacements of steps <= `step`; they also refill the reuse cache."""
        if self._audit is None or not self._audit.exists():
            raise FileNotFoundError(f"cannot resume BYORn: no {AUDIT_NAME} in the run directory")
        records = [json.loads(line) for line in self._audit.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = [r for r in records if r.get("event") == "replaced" and r["step"] <= step]
        for r in kept:
            # a fallback stands for an empty generation, which falls back again when reused
            self._generated[r["id"]] = (r["epoch"], r["response"] if r["source"] == "current" else "")
            if r["source"] == "current":
                self._answered.setdefault((r["epoch"], answer_key(r["response"])), set()).add(r["id"])
        return kept


    @property
    def suspicion(self) -> list[float] | None:
        return self.scores if self.flagging is not None else None

    @property
    def flagged(self) -> list[bool] | None:
        return self.flagging.flagged if self.flagging is not None else None

    # ---- during training ---------------------------------------------------------------------

    def on_batch(self, samples: list[Sample], trainer: ByornTrainer) -> list[Sample]:
        if self._audit is None:
            raise RuntimeError("ByornDefense.prepare() must run before training")
        todo = [s for s in samples if s.id in self.reference_answers]
        step = trainer.state.global_step + 1  # the step this batch trains, as train_log.jsonl counts it
        epoch = math.floor(trainer.state.epoch or 0)
        new = self._replacements(todo, trainer.vlm, epoch) if todo else {}
        records = [{"event": "replaced", "id": s.id, "step": step, "epoch": epoch, "source": new[s.id][1],
                    "response": new[s.id][0]} for s in todo]
        # Each process replaces in its own share of the batch; the main one logs them all, once.
        # Every process takes part in the gather, with or without flagged samples of its own.
        records = [record for share in all_gather(records) for record in share]
        if is_main():
            for record in records:  # line by line: a crash loses at most the line being written
                append_jsonl(self._audit, record, ensure_ascii=False)
        replaced = [s.with_response(new[s.id][0], replaced=True) if s.id in new else s for s in samples]
        return [self._history_replaced(s) for s in replaced]

    def _history_replaced(self, sample: Sample) -> Sample:
        """A later turn of a conversation with its flagged earlier answers replaced in its history,
        as `byorn clean` writes the conversation back: the attacker's answer is not kept as context."""
        record = conversation_of(sample)
        if record is None or not sample.history:
            return sample
        history = tuple((asked, self.reference_answers.get(turn_id(record, turn), answered))
                        for turn, (asked, answered) in enumerate(sample.history, 1))
        return sample if history == sample.history else dataclasses.replace(sample, history=history)

    def _replacements(self, todo: list[Sample], vlm: VLM, epoch: int) -> dict[str, tuple[str, str]]:
        """id -> (new response, which model wrote it) for the flagged samples of a batch."""
        if self.config.generator != "current":
            # Written once in prepare(), greedily, by the warmed or the frozen reference.
            return {s.id: (self.reference_answers[s.id], self.writer) for s in todo}
        reuse = self.config.regenerate == "epoch"  # an answer generated earlier in this epoch stands
        stale = [s for s in todo if not (reuse and self._generated.get(s.id, (None, ""))[0] == epoch)]
        if stale:
            # One batched call (a single chunk) for all of this batch's stale samples.
            answers = vlm.generate(stale, self.config.max_new_tokens, batch_size=len(stale), desc="BYORn responses")
            self._generated.update({s.id: (epoch, answer) for s, answer in zip(stale, answers)})
        new = {}
        for s in todo:
            answer = self._generated[s.id][1]
            if not answer.strip():
                new[s.id] = (self.reference_answers[s.id], "reference_fallback")
                continue
            owners = self._answered.setdefault((epoch, answer_key(answer)), set())
            if self.config.guard and len(owners - {s.id}) >= self.config.guard:
                new[s.id] = (self.reference_answers[s.id], "reference_guard")  # one answer for too many images
                continue
            owners.add(s.id)
            new[s.id] = (answer, "current")
        return new
