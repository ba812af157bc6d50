"""Samples: one (image, instruction, response) triple with its id and metadata.

Loaders and writers for the on-disk formats (LLaVA conversation JSON, JSONL) live in
`byorn.datasets`; this module only defines what a sample is and how its image is opened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image


class DataError(ValueError):
    """Bad input data. The message names the file, the record (line or index) and the field."""


@dataclass
class Sample:
    """One training or test example.

    `image` is either a decoded Pillow image (built-in worlds) or a path that is opened lazily
    (loaded data sets), so a large data set is not held in memory as pixels.
    `meta` is JSON-serialisable: task tag, scene facts, poisoning marks, source location.
    """

    id: str
    image: Image.Image | Path
    instruction: str
    response: str
    meta: dict[str, Any] = field(default_factory=dict)

    def pil(self) -> Image.Image:
        """The image as RGB; a path is opened and decoded now, with errors that name the file."""
        if isinstance(self.image, Image.Image):
            return self.image if self.image.mode == "RGB" else self.image.convert("RGB")
        try:
            with Image.open(self.image) as opened:
                opened.load()
                return opened.convert("RGB")
        except (OSError, Image.DecompressionBombError, ValueError) as exc:
            raise DataError(f"{self.image}: sample {self.id!r}, field 'image': cannot decode image ({exc})") from exc

    def with_response(self, response: str, **meta: Any) -> "Sample":
        """A copy with another response (and extra meta), leaving this sample untouched."""
        return Sample(self.id, self.image, self.instruction, response, {**self.meta, **meta})
