"""The clean oracle: trains on the clean samples only, the upper bound every defense is measured
against. It knows which samples are poisoned, which no real defense does: it reads the label
that `byorn.attacks.poison` puts on every sample (meta["is_poisoned"]).
"""

from __future__ import annotations

from collections.abc import Sequence

from byorn.data import Sample
from byorn.defenses.base import Defense


class Oracle(Defense):
    """The clean oracle: the poisoned samples removed by their label (an upper bound, not a defense)."""

    name = "oracle"

    def training_set(self, samples: Sequence[Sample]) -> list[Sample]:
        if samples and not any("is_poisoned" in s.meta for s in samples):
            raise ValueError("the oracle needs samples labelled by byorn's poisoning (meta['is_poisoned']); "
                             "none of these is")
        return [s for s in samples if not s.meta.get("is_poisoned")]
