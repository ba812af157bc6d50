"""What a defense is: a step before training and a hook on every training batch.

`prepare` runs once on the whole training set (score, flag, cache); `on_batch` is the
`ByornTrainer` hook (`byorn.train.BatchHook`) and returns the samples the step trains on.
Defenses that act only before training (filtering baselines) keep the pass-through `on_batch`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from byorn.data import Sample
from byorn.models.hf import VLM

if TYPE_CHECKING:  # byorn.train imports transformers' Trainer; only the type is needed here
    from byorn.train import ByornTrainer


class Defense:
    """Base class and the "none" defense: trains on the data as given."""

    name: ClassVar[str] = "none"
    # The dataclass `build_defense` builds from the options; None: the defense takes no options.
    config_class: ClassVar[type | None] = None

    def resolved(self) -> dict:
        """Name and every option with its value, written next to the run's results."""
        config = getattr(self, "config", None)
        return {"defense": self.name, **(dataclasses.asdict(config) if config is not None else {})}

    def prepare(self, vlm: VLM, samples: Sequence[Sample], run_dir: str | Path) -> None:
        """Inspect the training set once, before training, with the model still the reference."""

    def on_batch(self, samples: list[Sample], trainer: ByornTrainer) -> list[Sample]:
        """The samples this training step trains on."""
        return samples
