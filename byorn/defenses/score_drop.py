"""Score-and-drop: BYORn's score and threshold, but flagged samples are removed, not replaced.

The ablation that shows what replacement buys: dropping loses the flagged samples' images and
instructions for training (and every clean sample the threshold flags by mistake), where BYORn
keeps them and trains on the model's own response.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from byorn.config import TrainConfig
from byorn.data import Sample
from byorn.defenses.base import Defense, drop_flagged
from byorn.defenses.judging import JudgeConfig, Judgement, judge
from byorn.models.hf import VLM


class ScoreAndDrop(Defense):
    """Score-and-drop: BYORn's score and threshold, flagged samples removed instead of replaced."""

    name = "score_drop"
    config_class = JudgeConfig

    def __init__(self, config: JudgeConfig | None = None) -> None:
        self.config = config or JudgeConfig()
        self.judgement: Judgement | None = None
        self._ids: list[str] = []  # the samples prepare() judged, so training_set() can check it gets them

    def prepare(self, vlm: VLM, samples: Sequence[Sample], run_dir: str | Path, *,
                train: TrainConfig | None = None, resume_step: int | None = None) -> None:
        self.judgement = judge(vlm, samples, self.config, run_dir)
        self._ids = [s.id for s in samples]

    def training_set(self, samples: Sequence[Sample]) -> list[Sample]:
        return drop_flagged(self, samples, self._ids)

    @property
    def suspicion(self) -> list[float] | None:
        return self.judgement.scores if self.judgement else None

    @property
    def flagged(self) -> list[bool] | None:
        return self.judgement.flagging.flagged if self.judgement else None
