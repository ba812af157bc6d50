"""What a defense is: a step before training, a hook on every training batch, a test-time filter.

`prepare` runs once on the whole training set (score, flag, cache, or a probe fine-tune);
`training_set` is what the model then trains on (filtering defenses drop or clean samples there);
`on_batch` is the `ByornTrainer` hook (`byorn.train.BatchHook`) and returns the samples each step
trains on; `test_input` is what the model sees at inference (ONION cleans instructions there too);
`deployed` is the model that answers at inference (reference-ratio decoding guards its generation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from byorn.config import TrainConfig
from byorn.data import Sample
from byorn.models.hf import VLM

if TYPE_CHECKING:  # byorn.train imports transformers' Trainer; only the type is needed here
    from byorn.train import ByornTrainer


class Defense:
    """The base of every defense: each step's default leaves the run as it would be without one."""

    name: ClassVar[str]  # the registry name (`byorn list defenses`)
    # The dataclass `build_defense` builds from the options; None: the defense takes no options.
    config_class: ClassVar[type | None] = None

    def resolved(self) -> dict:
        """Name and every option with its value, written next to the run's results."""
        config = getattr(self, "config", None)
        return {"defense": self.name, **(dataclasses.asdict(config) if config is not None else {})}

    def prepare(self, vlm: VLM, samples: Sequence[Sample], run_dir: str | Path, *,
                train: TrainConfig | None = None, resume_step: int | None = None) -> None:
        """Inspect the training set once, before training, with the model still the reference.

        train: the fine-tuning that follows, for defenses that fine-tune a probe model first (BYE).
        resume_step: training resumes from a checkpoint after this many steps; a defense with
        state that training changes restores it as it was then (BYORn: its audit log).
        """

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


def drop_flagged(defense: Defense, samples: Sequence[Sample], judged_ids: Sequence[str]) -> list[Sample]:
    """`training_set` of the defenses that drop what they flag; `samples` must be the ones
    `prepare` judged (`judged_ids`), in the same order, or the flags would land on others."""
    if defense.flagged is None:
        raise RuntimeError(f"{type(defense).__name__}.prepare() must run before training_set()")
    if [s.id for s in samples] != list(judged_ids):
        raise ValueError("training_set() must get the samples prepare() judged, in the same order")
    return [s for s, hit in zip(samples, defense.flagged) if not hit]
