"""Image files a writer puts beside a data file: a built-in world's in-memory images saved as PNG
(`write_images`), or, when `byorn clean --copy-images` asks, the user's own files copied as they are
(`copy_images`)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from byorn.data import DataError, Sample
from byorn.fileio import atomic_write


def image_name(position: int, sample_id: str) -> str:
    """The file name of the `position`-th image written: unique by construction (no two positions
    share a prefix, on a case-insensitive file system too), whatever the ids are crafted to look
    like; the id's safe characters follow, for a person browsing the folder."""
    return f"{position:06d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', sample_id)[:80]}.png"


def write_images(samples: Sequence[Sample], out_dir: Path) -> list[str | None]:
    """Save every image as PNG and return the relative paths (None for a text-only sample); check
    what the loaders would reject."""
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    paths, ids = [], set()
    shared: dict[tuple, str] = {}  # (conversation, image) -> its file: one a conversation, as JSONL links its turns
    for sample in samples:
        if sample.id in ids:
            raise DataError(f"sample {sample.id!r}, field 'id': duplicate id among the samples to save")
        ids.add(sample.id)
        try:
            json.dumps(sample.meta, allow_nan=False)  # strict JSON: NaN and Infinity are not
        except (TypeError, ValueError) as exc:
            raise DataError(f"sample {sample.id!r}, field 'meta': not JSON-serialisable ({exc})") from exc
        if not sample.has_image:
            paths.append(None)
            continue
        if sample.more_images:  # written here, they would be dropped without a word
            raise DataError(f"sample {sample.id!r}, field 'image': {len(sample.images)} images; a record written from "
                            "memory holds one (byorn clean writes a loaded file's records back with all of theirs)")
        image = sample.image if isinstance(sample.image, Path) else id(sample.image)  # PIL images: the same object
        key = (sample.turn.record, image) if sample.turn is not None else None
        if key in shared:
            paths.append(shared[key])
            continue
        relative = f"images/{image_name(len(paths), sample.id)}"
        pil = sample.pil()  # decode even path images: the output must not point back at the input
        atomic_write(out_dir / relative, lambda file, image=pil: image.save(file, format="PNG"))
        paths.append(relative)
        if key is not None:
            shared[key] = relative
    return paths


def copy_images(samples: Sequence[Sample], out_dir: Path) -> list[Path]:
    """Copy each image file the samples' records name to `out_dir`/<the record's own reference>,
    bytes unchanged, so the written data file resolves its images with `out_dir` as the image
    folder; returns the copies' paths. A reference that would land outside `out_dir` (an absolute
    path a row gives, `../` that the image root allowed) is an error naming the sample."""
    copied: set[Path] = set()
    out = out_dir.resolve()
    for sample in samples:
        references = sample.origin.images if sample.origin is not None else ()
        # text-only, or images the data file holds itself (a row's bytes): nothing to copy
        for reference, image in zip(references, sample.images):
            if reference is not None and isinstance(image, Path):
                _copy(sample, reference, image, out, out_dir, copied)
    return sorted(copied)


def _copy(sample: Sample, reference: str, image: Path, out: Path, out_dir: Path, copied: set[Path]) -> None:
    """One image file to `out`/`reference`, once."""
    target = (out / reference).resolve()
    if Path(reference).is_absolute() or not target.is_relative_to(out):
        raise DataError(f"{sample.origin.source.path}: sample {sample.id!r}, field 'image': {reference!r} would "
                        f"be copied outside {out_dir}; give image paths relative to the image folder to copy them")
    if target in copied:
        return  # the turns of one conversation, or records that share an image
    copied.add(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda file: file.write(image.read_bytes()))
