"""What a defense is: a step before training, a hook on every training batch, a test-time filter.

`prepare` runs once on the whole training set (score, flag, cache, or a probe fine-tune);
`training_set` is what the model then trains on (filtering defenses drop or clean samples there);
`on_batch` is the `ByornTrainer` hook (`byorn.train.BatchHook`) and returns the samples each step
trains on; `test_input` is what the model sees at inference (ONION cleans instructions there too);
`deployed` is the model that answers at inference (reference-ratio decoding guards its generation).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from byorn.config import TrainConfig
from byorn.data import Sample
from byorn.fileio import atomic_write_text
from byorn.models.hf import VLM

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # byorn.train imports transformers' Trainer; only the type is needed here
    from byorn.train import ByornTrainer


class Defense:
    """The base of every defense: each step's default leaves the run as it would be without one."""

    name: ClassVar[str]  # the registry name (`byorn list defenses`)
    # The dataclass `build_defense` builds from the options; None: the defense takes no options.
    config_class: ClassVar[type | None] = None
    # Optimizer steps of the fine-tuning that `prepare` already ran; the training loop runs that many fewer.
    steps_trained: int = 0
    # The model directory of a fine-tune `prepare` found in a cache and loaded instead of running it
    # (in a grid, byorn.trained: BYE's and TCAP's probes); its preparation time then leaves that
    # fine-tune out. A judgement's warm-up is found by the grid's own WarmUps.
    loaded_from: str | None = None

    @property
    def passive(self) -> bool:
        """Whether fine-tuning with this defense is plain fine-tuning of `training_set`: no batch
        hook and no steps run in `prepare`, so a grid may load the same fine-tune another cell ran."""
        return type(self).on_batch is Defense.on_batch and not self.steps_trained

    def resolved(self) -> dict:
        """Name and every option with its value, written next to the run's results."""
        config = getattr(self, "config", None)
        return {"defense": self.name, **(dataclasses.asdict(config) if config is not None else {})}

    def prepare(self, vlm: VLM, samples: Sequence[Sample], run_dir: str | Path, *,
                train: TrainConfig | None = None, resume_step: int | None = None) -> None:
        """Inspect the training set once, before training, with the model still the reference; a
        defense may leave it trained a few steps further (BYORn's warm_start: see `steps_trained`).

        train: the fine-tuning that follows, for defenses that fine-tune a probe model first (BYE).
        resume_step: training resumes from a checkpoint after this many steps; a defense with
        state that training changes restores it as it was then (BYORn: its audit log).
        """

    def run_facts(self, vlm: VLM) -> dict[str, str]:
        """What this run resolved that the options leave open (the dtype `precision=auto` picks on
        this hardware), for a results row to record beside the options."""
        return {}

    def training_set(self, samples: Sequence[Sample]) -> list[Sample]:
        """What the model trains on, given the samples `prepare` saw."""
        return list(samples)

    def on_batch(self, samples: list[Sample], trainer: ByornTrainer) -> list[Sample]:
        """The samples this training step trains on."""
        return samples

    def test_input(self, sample: Sample) -> Sample:
        """The input the fine-tuned model is given at test time."""
        return sample

    def deployed(self, vlm: VLM) -> VLM:
        """The fine-tuned model as it answers at test time (an inference-time defense wraps it)."""
        return vlm

    # Detection, for the defenses that judge each training sample (None for those that do not):
    # a suspicion score (higher: more suspicious) and the verdict, aligned with `prepare`'s samples.
    @property
    def suspicion(self) -> list[float] | None:
        return None

    @property
    def flagged(self) -> list[bool] | None:
        return None


class NoDefense(Defense):
    """No defense: trains on the data as given."""

    name = "none"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What a dropping defense decided, aligned with the samples it judged."""

    suspicion: list[float]  # higher: more suspicious
    dropped: list[bool]
    details: dict = dataclasses.field(default_factory=dict)  # what else it found, for <name>.json


class DroppingDefense(Defense):
    """A defense that judges the training set once and trains on what it does not drop (BYE,
    TCAP, score-and-drop, random drop). A subclass implements `judge`; its verdict, with the
    dropped ids, is written to <run_dir>/<name>.json."""

    def __init__(self, config: Any = None) -> None:
        # the subclass's options: config_class's defaults unless given
        self.config = config if config is not None else self.config_class()
        self.verdict: Verdict | None = None
        self._ids: list[str] = []  # the samples prepare() judged, so training_set() can check it gets them

    def judge(self, vlm: VLM, samples: Sequence[Sample], run_dir: Path, train: TrainConfig | None) -> Verdict:
        raise NotImplementedError

    def prepare(self, vlm: VLM, samples: Sequence[Sample], run_dir: str | Path, *,
                train: TrainConfig | None = None, resume_step: int | None = None) -> None:
        run_dir = Path(run_dir)
        self.verdict = self.judge(vlm, samples, run_dir, train)
        self._ids = [s.id for s in samples]
        dropped = [i for i, hit in zip(self._ids, self.verdict.dropped) if hit]
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / f"{self.name}.json", json.dumps(
            {**self.verdict.details, "n_dropped": len(dropped), "dropped": dropped}, indent=1))
        log.info("%s: dropping %d of %d samples", self.name, len(dropped), len(samples))

    def training_set(self, samples: Sequence[Sample]) -> list[Sample]:
        """The samples `prepare` judged (the same, in the same order), less the dropped ones."""
        if self.verdict is None:
            raise RuntimeError(f"{type(self).__name__}.prepare() must run before training_set()")
        if [s.id for s in samples] != self._ids:
            raise ValueError("training_set() must get the samples prepare() judged, in the same order")
        kept = [s for s, hit in zip(samples, self.verdict.dropped) if not hit]
        if samples and not kept:
            raise ValueError(f"{self.name} dropped all {len(samples)} training samples: nothing is left to fine-tune "
                             f"on (its verdict is in {self.name}.json)")
        return kept

    @property
    def suspicion(self) -> list[float] | None:
        return self.verdict.suspicion if self.verdict else None

    @property
    def flagged(self) -> list[bool] | None:
        return self.verdict.dropped if self.verdict else None
