"""Defenses against backdoors in fine-tuning data: BYORn (byorn.py), the baselines ONION
(onion.py), BYE (bye.py) and score-and-drop (score_drop.py), and a registry.

The papers are named in each module.
"""

from byorn.defenses.base import Defense
from byorn.defenses.byorn import ByornDefense
from byorn.defenses.byorn_config import ByornConfig
from byorn.defenses.registry import DEFENSES, build_defense
from byorn.defenses.thresholds import Flagging, ThresholdRule, flag, group_keys

__all__ = ["ByornConfig", "ByornDefense", "DEFENSES", "Defense", "Flagging", "ThresholdRule", "build_defense", "flag",
           "group_keys"]
