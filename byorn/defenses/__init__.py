"""Defenses against backdoors in fine-tuning data: BYORn (byorn.py), the baselines ONION
(onion.py), BYE (bye.py) and score-and-drop (score_drop.py), and a registry.

The papers are named in each module. The names below load on first use: a command that only checks
an option (byorn_config.py, thresholds.py) does not wait for the defenses, and torch, to import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers; at run time __getattr__ imports each on first use
    from byorn.defenses.base import Defense
    from byorn.defenses.byorn import ByornDefense
    from byorn.defenses.byorn_config import ByornConfig
    from byorn.defenses.registry import DEFENSES, build_defense
    from byorn.defenses.thresholds import Flagging, ThresholdRule, flag, group_keys

_WHERE = {"Defense": "base", "ByornDefense": "byorn", "ByornConfig": "byorn_config", "DEFENSES": "registry",
          "build_defense": "registry", "Flagging": "thresholds", "ThresholdRule": "thresholds", "flag": "thresholds",
          "group_keys": "thresholds"}

__all__ = ["ByornConfig", "ByornDefense", "DEFENSES", "Defense", "Flagging", "ThresholdRule", "build_defense", "flag",
           "group_keys"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'byorn.defenses' has no attribute {name!r}")
    return getattr(importlib.import_module(f"byorn.defenses.{_WHERE[name]}"), name)
