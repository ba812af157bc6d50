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
from byorn.defenses.base import DroppingDefense, Verdict
from byorn.defenses.byorn import JudgingDefense
from byorn.defenses.byorn_config import JudgeConfig
from byorn.models.hf import VLM


class ScoreAndDrop(JudgingDefense, DroppingDefense):
    """Score-and-drop: BYORn's score and threshold, flagged samples removed instead of replaced."""

    name = "score_drop"
    config_class = JudgeConfig
    config: JudgeConfig

    def judge(self, vlm: VLM, samples: Sequence[Sample], run_dir: Path, train: TrainConfig | None) -> Verdict:
        judgement = self.judgement(vlm, samples, run_dir, train)
        return Verdict(judgement.scores, judgement.flagging.flagged,
                       {"thresholds": judgement.flagging.thresholds})
