"""Multimodal (dual-key) trigger: an image trigger AND a text trigger, with one-trigger negatives.

Paper: Dual-Key Multimodal Backdoors for Visual Question Answering (Walmer et al. 2022,
CVPR). Without negatives a model may learn either half alone as the trigger; samples
that carry only one half and keep their clean response teach it that only the pair fires.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from byorn.attacks.image_triggers import BadNets, ImageTrigger
from byorn.attacks.text_triggers import RareToken, TextTrigger
from byorn.data import Sample


@dataclass(frozen=True)
class MultimodalTrigger:
    """Dual-key trigger: an image trigger and a text trigger together; one alone must not fire."""

    image: ImageTrigger = field(default_factory=BadNets)
    text: TextTrigger = field(default_factory=RareToken)
    negative_ratio: float = 1.0  # negatives per poisoned sample, half image-only, half text-only

    modality = "image+text"

    def __post_init__(self) -> None:
        if not isinstance(self.image, ImageTrigger) or not isinstance(self.text, TextTrigger):
            raise TypeError(f"MultimodalTrigger needs an image and a text trigger; got {self.image!r}, {self.text!r}")
        if self.negative_ratio < 0:
            raise ValueError(f"MultimodalTrigger.negative_ratio must be >= 0; got {self.negative_ratio}")

    def apply_sample(self, sample: Sample) -> Sample:
        """A copy of `sample` with both triggers."""
        return self.text.apply_sample(self.image.apply_sample(sample))

    def negative_counts(self, n_poisoned: int) -> tuple[int, int]:
        """(image-only, text-only) negatives for `n_poisoned` poisoned samples; an odd one goes to image."""
        total = round(n_poisoned * self.negative_ratio)
        return total - total // 2, total // 2
