"""The defense registry: names -> classes, and `build_defense`.

Separate from base.py because the defenses import base.py. Options are the fields of the
defense's config dataclass, so a typo is an error that lists the valid keys.
"""

from __future__ import annotations

from typing import Any

from byorn.defenses.base import Defense, NoDefense
from byorn.defenses.bye import Bye
from byorn.defenses.byorn import ByornDefense, PaperRecipe
from byorn.defenses.configs import defense_config
from byorn.defenses.onion import Onion
from byorn.defenses.oracle import Oracle
from byorn.defenses.random_drop import RandomDrop
from byorn.defenses.reference_ratio import ReferenceRatio
from byorn.defenses.score_drop import ScoreAndDrop
from byorn.defenses.tcap import Tcap

DEFENSES: dict[str, type[Defense]] = {
    cls.name: cls
    for cls in (ByornDefense, Bye, NoDefense, Onion, Oracle, PaperRecipe, RandomDrop, ReferenceRatio, ScoreAndDrop,
                Tcap)
}


def build_defense(name: str, /, **options: Any) -> Defense:
    """The defense `name`, configured by `options` (its config's fields: byorn/defenses/configs.py)."""
    config = defense_config(name, options)
    return DEFENSES[name]() if config is None else DEFENSES[name](config)
