"""Samples: one (image, instruction, response) triple with its id and metadata.

Loaders and writers for the on-disk layouts live in `byorn.formats`; this module only defines
what a sample is, where a loaded one came from, and how its image is opened.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps

from byorn.text import inert


class DataError(ValueError):
    """Bad input data. The message names the file, the record (line or index) and the field.

    It is one line, whatever the data holds: the ids, paths and texts it quotes are made inert
    (byorn.text), so a newline or an escape sequence in them cannot forge or hide a line."""

    def __init__(self, message: str) -> None:
        super().__init__(inert(message))
        self.in_record = False  # set where a loader meets it in one record: skipping that record would help


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any Pillow mode. Transparency is flattened onto black; 16- and 32-bit
    greyscale is scaled to 8 bits (Pillow's own conversion would clip it to white)."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        # 16-bit data spans 0..65535, float data 0..1 when it stays there; other 32-bit data is
        # taken as 8-bit unless its maximum says otherwise
        peak = float(values.max(initial=0))
        top = (65535.0 if image.mode.startswith("I;16") else
               1.0 if image.mode == "F" and peak <= 1.0 else max(peak, 255.0))
        grey = np.clip(np.round(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def decode_image(path: Path, where: str) -> Image.Image:
    """Open and fully decode an image file as RGB; any failure is a DataError naming the file."""
    return decode_pixels(path, f"{path}: {where}")


def decode_pixels(source: Path | IO[bytes], where: str) -> Image.Image:
    """Fully decode an image (a file, or bytes a data set holds) as RGB; any failure is a DataError
    that begins with `where`.

    Pillow's decompression-bomb guard stays on and is strict: an image over
    `PIL.Image.MAX_IMAGE_PIXELS` is an error, not the warning Pillow gives below twice that.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as opened:
                opened.load()
                # a camera's JPEG stores its pixels as the sensor saw them and says in EXIF how
                # to turn them; every viewer (and transformers' load_image) shows them turned
                return to_rgb(ImageOps.exif_transpose(opened))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{where}: image too large, over Pillow's decompression-bomb limit of "
                        f"{Image.MAX_IMAGE_PIXELS:,} pixels ({exc}); raise PIL.Image.MAX_IMAGE_PIXELS only for "
                        "files you trust") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{where}: cannot decode image ({exc})") from exc


def turn_id(record: str, turn: int) -> str:
    """The id of turn `turn` (from 1) of the conversation `record`, as the LLaVA loader names it."""
    return f"{record}#{turn}"


@dataclass(frozen=True, slots=True)
class Turn:
    """Where a sample stands in a conversation, as the data's layout says (a LLaVA record's turns;
    JSONL lines whose histories continue one another), never as its meta says: meta is the data
    author's, and keys there must not join, split or rename conversations.

    earlier: the ids of the samples whose answers this one's history holds, turn by turn."""

    record: str  # the conversation's id
    number: int  # from 1
    count: int  # the conversation's turns
    earlier: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)  # one per load, compared by identity: its options may hold dicts
class Source:
    """A data file (or data set folder) as it was read: its layout (a byorn.formats name), the
    folder its image paths are relative to, and what the layout read from elsewhere (LLaMA-Factory's
    column and tag names from its dataset_info.json)."""

    path: Path
    layout: str
    image_root: Path
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a loaded sample's answer stands in its file, so that `byorn clean` writes the file
    back with that answer alone replaced and every other byte the user's."""

    source: Source
    record: int  # the record's index: a JSON list's item, a JSONL line (0-based, blank lines counted), a row
    answer: tuple[str | int, ...]  # the keys that lead from the record to the answer's text (or content parts)
    answers: int = 1  # the record's answers in all: a record is written back only with every one of them judged
    # the image references as the record gives them (relative to source.image_root; None: bytes it holds)
    images: tuple[str | None, ...] = ()


def conversation_of(sample: Sample) -> str | None:
    """The id of the conversation `sample` is one turn of, as its loader found it; None for a
    sample of its own. Nothing in meta makes a sample a turn."""
    return sample.turn.record if sample.turn is not None else None


def answer_key(response: str) -> str:
    """The answer with case, spacing and end punctuation ignored: two responses with the same key
    give the same answer (a poison campaign repeats one target across many images)."""
    return " ".join(response.lower().split()).strip(" .!?")


@dataclass(slots=True)
class Sample:
    """One training or test example.

    `image` is either a decoded Pillow image (built-in worlds) or a path that is opened lazily
    (loaded data sets), so a large data set is not held in memory as pixels; None for a text-only
    record (VLM training mixes carry some).
    `meta` is JSON-serialisable: task tag, scene facts, poisoning marks, source location.
    `history`: the (instruction, response) turns before this one in a multi-turn conversation (the
    image, if any, belongs to the first turn); the sample is its last turn.
    """

    id: str
    image: Image.Image | Path | None
    instruction: str
    response: str
    meta: dict[str, Any] = field(default_factory=dict)
    history: tuple[tuple[str, str], ...] = ()
    turn: Turn | None = None  # set by a loader from the layout: byorn.data.Turn
    origin: Origin | None = None  # set by a file's loader; None for a built-in world's sample
    # a record's images after the first, in the order of its placeholders (for the families that
    # take several: byorn.models.families); `image` is the first
    more_images: tuple[Image.Image | Path, ...] = ()

    @property
    def has_image(self) -> bool:
        return self.image is not None

    @property
    def images(self) -> tuple[Image.Image | Path, ...]:
        """Every image the sample shows, in order: none for a text-only sample."""
        return (self.image, *self.more_images) if self.image is not None else ()

    def pils(self) -> list[Image.Image]:
        """Every image as RGB, in order (each path opened and decoded now); none for a text-only sample."""
        if self.image is None:
            return []
        return [self.pil(), *(replace(self, image=image, more_images=()).pil() for image in self.more_images)]

    def pil(self) -> Image.Image:
        """The image as RGB; a path is opened and decoded now, with errors that name the file."""
        if self.image is None:
            raise DataError(f"sample {self.id!r}, field 'image': a text-only sample has no image")
        if isinstance(self.image, Image.Image):
            return to_rgb(self.image)
        return decode_image(self.image, f"sample {self.id!r}, field 'image'")

    def with_response(self, response: str, **meta: Any) -> Sample:
        """A copy with another response (and extra meta), leaving this sample untouched."""
        return Sample(self.id, self.image, self.instruction, response, {**self.meta, **meta}, self.history, self.turn,
                      self.origin, self.more_images)
