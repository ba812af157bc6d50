"""Random drop: remove as many training samples as BYORn's judgement flags, chosen at random.

The control every filtering defense needs (BYE's reviewers asked for it): a defense that drops
samples also trains on less data, and at a poison rate p it removes about p of the poison by
chance alone. What a real detector achieves beyond this baseline is what its detection is worth.
The count is BYORn's (the same scores and cut, so the same forward passes) unless `count` is set.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from byorn.config import TrainConfig
from byorn.data import Sample
from byorn.defenses.base import DroppingDefense, Verdict
from byorn.defenses.byorn import JudgingDefense
from byorn.defenses.configs import RandomDropConfig
from byorn.models.hf import VLM


class RandomDrop(JudgingDefense, DroppingDefense):
    """Random drop: as many samples dropped as BYORn flags, but chosen at random."""

    name = "random_drop"
    config_class = RandomDropConfig
    config: RandomDropConfig

    def judge(self, vlm: VLM, samples: Sequence[Sample], run_dir: Path, train: TrainConfig | None) -> Verdict:
        count = self.config.count
        if count < 0:
            count = sum(self.judgement(vlm, samples, run_dir, train).flagging.flagged)
        if count > len(samples):
            raise ValueError(f"random_drop: count={count} is more than the {len(samples)} training samples")
        rng = random.Random(self.config.seed)
        draw = [rng.random() for _ in samples]  # the suspicion: chance-level detection, measured
        chosen = set(sorted(range(len(samples)), key=draw.__getitem__, reverse=True)[:count])
        return Verdict(draw, [i in chosen for i in range(len(samples))])
