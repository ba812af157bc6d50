"""Small helpers shared by the attack modules: option checks and per-sample seeded randomness.

The attacks themselves and their papers live in image_triggers.py, text_triggers.py,
multimodal.py and targets.py.
"""

from __future__ import annotations

import random
from collections.abc import Iterable


def check_choice(name: str, value: object, choices: Iterable[object]) -> None:
    """Raise a ValueError naming the allowed values when `value` is not one of them."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


def keyed_rng(seed: int, key: str) -> random.Random:
    """An RNG fixed by (seed, sample id): a sample's trigger placement is the same in every run,
    whatever order the samples are processed in (str seeds are hashed with SHA-512, not hash())."""
    return random.Random(f"{seed}:{key}")
