"""What every layout's loader checks: a record's text fields, its image path (inside the image
root, an existing file that decodes), its meta, its id; and the reading of a file's text and JSON.

Loading validates every record and fails on the first problem with a `DataError` that names the
file, the record and the field; with a `skipped` list it skips bad records instead and appends each
one's error there, so the caller can count and report them. Instructions and responses longer than
`max_chars` are errors, never silently truncated.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from byorn.data import DataError, Sample, decode_image

_TEXT_FIELDS = ("id", "image", "instruction", "response")
MAX_CHARS = 20_000  # per instruction or response; far beyond any VLM context, so longer is an error


@dataclass(frozen=True)
class LoadChecks:
    """What a loader checks beyond the format, and what it does with a bad record."""

    check_images: bool = True
    max_chars: int = MAX_CHARS
    skipped: list[str] | None = None  # None: fail on the first bad record; a list: skip, append why

    def handle(self, error: DataError) -> None:
        error.in_record = True
        if self.skipped is None:
            raise error
        self.skipped.append(str(error))


def read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read data set ({exc})") from exc
    data = data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM (some editors add one) is not JSON
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def parse_json(text: str, path: Path, first_line: int = 1) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        line = first_line + exc.lineno - 1
        raise DataError(f"{path}:{line}: invalid JSON: {exc.msg} (column {exc.colno})") from exc
    except RecursionError as exc:  # a hostile file: thousands of nested brackets
        raise DataError(f"{path}:{first_line}: JSON nested too deeply to read") from exc
    except ValueError as exc:  # valid JSON Python declines: an integer of over 4,300 digits
        raise DataError(f"{path}:{first_line}: cannot read this JSON ({exc})") from exc


def image_root_of(path: Path, image_root: str | Path | None) -> Path:
    return Path(image_root if image_root is not None else path.parent).resolve()


def to_sample(fields: dict[str, Any], loc: str, where: str, root: Path, seen: dict[str, str],
               checks: LoadChecks, labels: dict[str, str] | None = None) -> Sample:
    """Check the fields both formats share and build the Sample.

    `loc` prefixes error messages, `where` (file:line or file[index]) goes into meta["source"] and
    duplicate-id messages, `seen` maps ids already loaded to their `where`, and `labels` maps a
    field to its name in the file when they differ (LLaVA keeps the instruction in a turn).
    """
    def fail(name: str, problem: str) -> NoReturn:
        raise DataError(f"{loc}: field {(labels or {}).get(name, name)!r}: {problem}")

    text_only = fields.get("image") is None  # no image (or null): a text-only record
    for name in _TEXT_FIELDS:
        value = fields.get(name)
        if name == "image" and text_only:
            continue
        if name not in fields:
            fail(name, "missing")
        if not isinstance(value, str) or not value.strip():
            fail(name, f"must be a non-empty string, got {value!r:.80}")
        if len(value) > checks.max_chars:
            fail(name, f"{len(value):,} characters, over the limit of {checks.max_chars:,} (max_chars)")
    meta = fields.get("meta", {})
    if not isinstance(meta, dict):
        fail("meta", f"must be a JSON object, got {type(meta).__name__}")
    if (where_nan := _non_finite(meta, "meta")) is not None:
        fail("meta", f"{where_nan} is NaN or Infinity, which strict JSON has not (the cleaned set would not be JSON "
                     "other tools read); write null or a string")
    if fields["id"] in seen:
        fail("id", f"duplicate id {fields['id']!r} (first at {seen[fields['id']]})")

    history = fields.get("history", [])
    if not isinstance(history, list) or not all(isinstance(turn, list) and len(turn) == 2 and
                                                all(isinstance(text, str) for text in turn) for turn in history):
        fail("history", "must be a list of [instruction, response] pairs (the conversation's earlier turns)")
    history = tuple(tuple(turn) for turn in history)
    if text_only:
        seen[fields["id"]] = where
        return Sample(fields["id"], None, fields["instruction"], fields["response"],
                      {**meta, "source": meta.get("source", where)}, history)
    image = image_path(fields["image"], root, checks, fail, f"{loc}: field {'image'!r}")
    seen[fields["id"]] = where
    return Sample(fields["id"], image, fields["instruction"], fields["response"],
                  {**meta, "source": meta.get("source", where)}, history)


def image_path(reference: Any, root: Path, checks: LoadChecks, fail: Callable[[str, str], NoReturn],
               where: str, field: str = "image") -> Path:
    """The image file a record names (`reference`, relative to the image root), checked: a local
    path inside the root, an existing file that decodes (unless check_images is off). `fail(field,
    problem)` raises the record's error; `where` begins a decoding error's message."""
    if not isinstance(reference, str) or not reference.strip():
        fail(field, f"must be a non-empty string, got {reference!r:.80}")
    if re.match(r"[a-z][a-z0-9+.-]*://", reference, re.IGNORECASE):
        fail(field, f"{reference!r} is a URL; byorn reads local image files (nothing is downloaded): "
                    "fetch the images first and give their paths")
    relative = Path(reference)
    if relative.is_absolute():
        fail(field, f"must be a path relative to the image root {root} (--image-folder), got {reference!r}")
    try:
        image = (root / relative).resolve()
    except (OSError, ValueError) as exc:
        fail(field, f"bad path {reference!r} ({exc})")
    # resolve() follows symlinks, so a link inside the root that points outside is caught as well
    # as `..`: a data set from an untrusted source must not make us read arbitrary files.
    if not image.is_relative_to(root):
        fail(field, f"{reference!r} resolves to {image}, outside the image root {root}")
    if image.is_dir():
        fail(field, f"{image} is a folder, not an image file")
    if not image.is_file():
        fail(field, f"image file not found: {image}")
    if checks.check_images:
        decode_image(image, where)
    return image


def _non_finite(value: Any, where: str) -> str | None:
    """Where in `value` (a JSON value) a NaN or an infinity stands, or None. Python's json reads
    them, but they are not JSON: a file written back with them is not read by strict parsers."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return next((found for key, item in items if (found := _non_finite(item, f"{where}[{key!r}]")) is not None),
                None)


# Where other formats keep a record's image: read as byorn's "image", they would silently make
# every record text-only.
IMAGE_LIKE_KEYS = ("images", "image_path", "image_file", "image_url", "img", "picture", "photo")


def check_image_key(record: dict, loc: str) -> None:
    if record.get("image") is None and (key := next((k for k in IMAGE_LIKE_KEYS if record.get(k) not in (None, "", [])),
                                                   None)):
        raise DataError(f"{loc}: field {key!r}: byorn reads a record's image from the field 'image' (one path, "
                        f"relative to the image folder); rename {key!r} to 'image', or drop it for a text-only record")


DEFAULT_CHECKS = LoadChecks()  # fail on the first bad record, decode every image
