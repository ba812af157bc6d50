"""A helper shared by the attack modules: per-sample seeded randomness.

The attacks themselves and their papers live in image_triggers.py, text_triggers.py,
multimodal.py and targets.py.
"""

from __future__ import annotations

import random


def keyed_rng(seed: int, key: str) -> random.Random:
    """An RNG fixed by (seed, sample id): a sample's trigger placement is the same in every run,
    whatever order the samples are processed in (str seeds are hashed with SHA-512, not hash())."""
    return random.Random(f"{seed}:{key}")
