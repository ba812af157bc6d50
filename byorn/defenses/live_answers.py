"""Which answer a flagged sample trains on in a batch, and the history a later turn reads.

With generator=warmed or reference the answer was written once before training; with
generator=current the model being fine-tuned writes it when the sample is in a batch (regenerate:
every time, or once an epoch), with generator=ema the average of its weights over the steps so far
(byorn/defenses/ema.py).

Empty generations: a model early in fine-tuning can answer with end-of-turn at once. Training on
that empty answer would teach it to say nothing, which it would then generate again: a collapse that
feeds itself. So an empty answer from the current model is replaced by the reference's greedy answer,
written before training for every flagged sample. If that is empty as well, the step trains on the
empty response: it is then exactly the reference's own behaviour, and it encodes fine (the target
is the end-of-turn marker alone). The guard stops the other collapse: one answer for many images.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING

from byorn.data import Sample, answer_key
from byorn.defenses.byorn_config import LIVE_GENERATORS, ByornConfig
from byorn.defenses.ema import EmaWeights

if TYPE_CHECKING:  # byorn.train imports transformers' Trainer; only the type is needed here
    from byorn.train import ByornTrainer


class LiveAnswers:
    """The answers written during the fine-tuning (generator=current or ema), with their fallbacks."""

    def __init__(self, config: ByornConfig) -> None:
        self.config = config
        self._generated: dict[str, tuple[int, str]] = {}  # id -> (epoch, answer), for regenerate="epoch"
        self._answered: dict[tuple[int, str], set[str]] = {}  # (epoch, answer key) -> ids it was trained on, for guard
        self.ema = EmaWeights(config.ema_decay) if config.generator == "ema" else None

    def refill(self, replaced: list[dict]) -> None:
        """What a resumed run had generated up to its checkpoint (audit.jsonl's replaced lines)."""
        for r in replaced:
            live = r["source"] in LIVE_GENERATORS
            # a fallback stands for an empty generation, which falls back again when reused
            self._generated[r["id"]] = (r["epoch"], r["response"] if live else "")
            if live:
                self._answered.setdefault((r["epoch"], answer_key(r["response"])), set()).add(r["id"])

    def save(self, folder: Path) -> None:
        """What goes on across the steps (generator=ema's average) into a checkpoint's folder."""
        if self.ema is not None:
            self.ema.save(folder)

    def load(self, folder: Path) -> bool:
        """The state `save` wrote into a checkpoint's folder; whether there was any to go on from."""
        return self.ema is not None and self.ema.load(folder)

    def follow(self, trainer: ByornTrainer) -> None:
        """Before every batch: generator=ema folds the weights of the step just taken into its average."""
        if self.ema is not None:
            self.ema.follow(trainer.vlm.model, trainer.state.global_step)

    def answers(self, todo: list[Sample], trainer: ByornTrainer, written: dict[str, str],
                writer: str) -> dict[str, tuple[str, str]]:
        """id -> (new response, which model wrote it) for the flagged samples of a batch; `written`:
        the answers written before training, by `writer`."""
        if not self.config.writes_in_training:
            return {s.id: (written[s.id], writer) for s in todo}
        epoch = math.floor(trainer.state.epoch or 0)
        reuse = self.config.regenerate == "epoch"  # an answer generated earlier in this epoch stands
        stale = [s for s in todo if not (reuse and self._generated.get(s.id, (None, ""))[0] == epoch)]
        if stale:
            # One batched call (a single chunk) for all of this batch's stale samples.
            with self.ema.swapped_in(trainer.vlm.model) if self.ema is not None else contextlib.nullcontext():
                generated = trainer.vlm.generate(stale, self.config.max_new_tokens, batch_size=len(stale),
                                                 desc="BYORn responses")
            self._generated.update({s.id: (epoch, answer) for s, answer in zip(stale, generated)})
        new = {}
        for s in todo:
            answer = self._generated[s.id][1]
            if not answer.strip():
                new[s.id] = (written[s.id], "reference_fallback")
                continue
            owners = self._answered.setdefault((epoch, answer_key(answer)), set())
            if self.config.guard and len(owners - {s.id}) >= self.config.guard:
                new[s.id] = (written[s.id], "reference_guard")  # one answer for too many images
                continue
            owners.add(s.id)
            new[s.id] = (answer, self.config.generator)
        return new


def history_replaced(sample: Sample, answers: dict[str, str]) -> Sample:
    """A later turn of a conversation with its flagged earlier answers replaced in its history, as
    `byorn clean` writes the conversation back: the attacker's answer is not kept as context, even
    where its replacement is unfit to train on (a left-out turn: as context no loss falls on it)."""
    if sample.turn is None or not sample.history:
        return sample
    history = tuple((asked, answers.get(earlier, answered))
                    for earlier, (asked, answered) in zip(sample.turn.earlier, sample.history))
    return sample if history == sample.history else dataclasses.replace(sample, history=history)
