"""Hugging Face data sets of conversational rows (TRL's layout, byorn.chat_rows): a `save_to_disk`
folder or a Parquet file, read raw and written back with only the replaced answers changed."""

from __future__ import annotations

import copy
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from PIL import Image

from byorn.chat_rows import exchanges, row_to_samples, sample_to_row
from byorn.data import DataError, Origin, Sample, Source, decode_pixels
from byorn.fileio import atomic_write
from byorn.formats.answers import replace_answers
from byorn.formats.checks import DEFAULT_CHECKS, LoadChecks, image_path, parse_json, read_text, to_sample
from byorn.outdir import refuse_unfinished


def _hf_datasets(path: Path):
    try:
        import datasets
    except ImportError:
        raise DataError(f"{path}: a Hugging Face data set needs the datasets package: pip install 'byorn[trl]'") \
            from None
    return datasets


def load_rows(path: str | Path, checks: LoadChecks = DEFAULT_CHECKS,
              image_root: str | Path | None = None) -> list[Sample]:
    """A Hugging Face data set of conversational rows (byorn.chat_rows: id, images, messages): a
    `save_to_disk` folder or a Parquet file.

    The rows are read raw, never decoded by `datasets`: it would open an image given as a path
    (and no bytes) wherever the path points. byorn decodes an image's bytes itself, and holds an
    image given as a path to the checks of the file formats (inside the image root, a file that
    decodes). A Parquet file is read into memory, so nothing is written to the `datasets` cache."""
    path = Path(path)
    refuse_unfinished(path)
    rows = _raw_rows(path)
    # where an image given as a path lies: the data set's folder unless said; an absolute path is
    # taken if it lies there (the rows of a `datasets` folder often hold them)
    root = Path(image_root if image_root is not None else path if path.is_dir() else path.parent).resolve()
    source = Source(path, "rows" if path.is_dir() else "parquet", root)
    samples, seen = [], {}
    for index in range(rows.num_rows):
        loc = f"{path}: row {index}"
        try:
            samples += _row_samples(rows.slice(index, 1).to_pylist()[0], index, loc, root, seen, checks, source)
        except DataError as error:
            checks.handle(error)
    return samples


def _row_samples(row: dict, index: int, loc: str, root: Path, seen: dict[str, str], checks: LoadChecks,
                 source: Source) -> list[Sample]:
    """A raw row's samples, one per exchange, held to the file formats' checks."""
    try:
        samples = row_to_samples(row, index)
    except DataError as exc:  # it names the row and field; the file goes in front
        raise DataError(f"{source.path}: {exc}") from exc
    raws = samples[0].images
    image = _row_image(raws[0], loc, root) if raws else None
    more = tuple(_more_image(raw, k, loc, root, checks) for k, raw in enumerate(raws[1:], 1))
    # the paths as the row gives them (copied as such by --copy-images); bytes the row holds need no copy
    references = tuple(raw if isinstance(raw, str) else raw.get("path")
                       if isinstance(raw, dict) and raw.get("bytes") is None else None for raw in raws)
    answers = [a for _, a in exchanges(row["messages"], loc)]
    checked = []
    for sample, answer in zip(samples, answers):
        fields = {"id": sample.id, "instruction": sample.instruction, "response": sample.response,
                  "image": None if isinstance(image, Image.Image) else image}
        one = to_sample(fields, loc, f"row {index}", root, seen, checks, labels=ROW_FIELDS)
        one.image = image if isinstance(image, Image.Image) else one.image
        one.history, one.turn, one.more_images = sample.history, sample.turn, more
        one.origin = Origin(source, index, ("messages", answer, "content"), len(samples), references)
        checked.append(one)
    return checked


ROW_FIELDS = {"instruction": "messages", "response": "messages", "image": "images"}  # where a row keeps them


def _more_image(raw: Any, k: int, loc: str, root: Path, checks: LoadChecks) -> Image.Image | Path:
    """A row's image after the first, held to the first's checks."""
    def fail(name: str, problem: str) -> NoReturn:
        raise DataError(f"{loc}: field {name!r}: {problem}")

    image = _row_image(raw, loc, root, f"images[{k}]")
    return image if isinstance(image, Image.Image) else image_path(image, root, checks, fail, f"{loc}: field "
                                                                    f"'images[{k}]'", f"images[{k}]")


def _raw_rows(path: Path):
    """The rows of a Parquet file or a `save_to_disk` folder as an Arrow table, undecoded."""
    datasets = _hf_datasets(path)
    import pyarrow.parquet

    try:
        if not path.is_dir():
            return pyarrow.parquet.read_table(path)
        _check_saved_files(path)
        return datasets.load_from_disk(str(path)).with_format("arrow")[:]
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path}: cannot read a Hugging Face data set ({exc})") from exc


def _check_saved_files(path: Path) -> None:
    """A `save_to_disk` folder names its Arrow files in state.json, and `datasets` opens them as
    named: each must lie inside the folder (a `../../elsewhere.arrow` would be read)."""
    if (path / "dataset_dict.json").exists():
        raise DataError(f"{path}: a DatasetDict (dataset_dict.json lists its splits); point at one split's folder")
    state = path / "state.json"
    if not state.is_file():
        raise DataError(f"{path}: no state.json: not a folder written by datasets' save_to_disk")
    named = parse_json(read_text(state), state)
    for key in ("_data_files", "_indices_data_files"):
        files = named.get(key, []) if isinstance(named, dict) else None
        if not isinstance(files, list) or not all(isinstance(f, dict) and isinstance(f.get("filename"), str)
                                                  for f in files):
            raise DataError(f"{state}: field {key!r}: must be a list of {{'filename': ...}}")
        for i, file in enumerate(files):
            target = (path / file["filename"]).resolve()
            if not target.is_relative_to(path.resolve()):
                raise DataError(f"{state}: field '{key}[{i}].filename': {file['filename']!r} resolves to {target}, "
                                f"outside the data set folder {path.resolve()}")


def _row_image(image: Any, loc: str, root: Path, field: str = "images") -> Image.Image | str | None:
    """A raw row's image as the loader takes it: bytes decoded here (with the decompression-bomb
    guard); a path (a string, or a {bytes: None, path} image) given back for the path checks, made
    relative when it is absolute inside the image root; None for a text-only row."""
    if isinstance(image, dict):
        if image.get("bytes") is not None:
            return decode_pixels(io.BytesIO(image["bytes"]), f"{loc}, field {field!r}")
        if not isinstance(image.get("path"), str):
            raise DataError(f"{loc}, field {field!r}: an image with neither bytes nor a path")
        image = image["path"]
    if isinstance(image, str) and Path(image).is_absolute() and Path(image).resolve().is_relative_to(root):
        return str(Path(image).resolve().relative_to(root))
    return image


def save_rows(samples: Sequence[Sample], out_dir: str | Path, parquet: bool = False) -> Path:
    """Write the samples as a Hugging Face data set of conversational rows: a `save_to_disk`
    folder out_dir/data (or out_dir/data.parquet); returns what was written."""
    out_dir = Path(out_dir)
    datasets = _hf_datasets(out_dir)
    table = datasets.Dataset.from_list([sample_to_row(s) for s in samples])
    if parquet:
        table.to_parquet(str(out_dir / "data.parquet"))
        return out_dir / "data.parquet"
    table.save_to_disk(str(out_dir / "data"))
    return out_dir / "data"


def rewrite_rows(source: Source, records: Mapping[int, Sequence[Sample]], answers: Mapping[str, str],
                 target: Path) -> None:
    """Write the rows `records` names (by index) of the data set `source` holds to `target`, in its
    form (a folder or Parquet): every column and its type as they were (content parts, image parts,
    system turns, extra columns), each flagged answer replaced."""
    import pyarrow
    import pyarrow.parquet

    table = _raw_rows(source.path)
    kept = table.take(list(records))
    messages = kept.column("messages").to_pylist()
    for position, samples in enumerate(records.values()):
        if any(s.id in answers for s in samples):
            row = {"messages": copy.deepcopy(messages[position])}
            replace_answers(row, samples, answers)
            messages[position] = row["messages"]
    field = table.schema.field("messages")
    kept = kept.set_column(table.schema.get_field_index("messages"), field, pyarrow.array(messages, type=field.type))
    if source.layout == "parquet":
        atomic_write(target, lambda file: pyarrow.parquet.write_table(kept, file))
        return
    datasets = _hf_datasets(target)
    # the table's schema carries the data set's features: nothing is decoded, re-encoded or embedded
    datasets.Dataset(datasets.table.InMemoryTable(kept)).save_to_disk(str(target))
