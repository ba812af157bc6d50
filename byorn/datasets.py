"""On-disk data sets: LLaVA conversation JSON and JSONL, loaded into and saved from `Sample`s.

Loading validates every record and fails on the first problem with a `DataError` that names the
file, the record (1-based line for JSONL; index and id for JSON) and the field; with a `skipped`
list it skips bad records instead and appends each one's error there, so the caller can count and
report them. Each image path must stay inside the image root, the file must exist, and (unless
`check_images=False`) it must decode, so a bad data set fails before training rather than
mid-epoch; the pixels are not kept (`Sample.pil()` decodes again when needed). Instructions and
responses longer than `max_chars` are errors, never silently truncated.

Saving writes each image as `images/<safe id>.png` next to the data file, so the output is
self-contained, and replaces every file atomically. `load(save(samples))` gives back the same ids,
instructions, responses, meta and pixels; a sample without `meta["source"]` gains one on loading.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

from PIL import Image
from tqdm.auto import tqdm

from byorn.chat_rows import row_to_sample, sample_to_row
from byorn.data import DataError, Sample, Turn, conversation_of, decode_image, decode_pixels, turn_id
from byorn.fileio import atomic_write, atomic_write_text, write_jsonl
from byorn.outdir import refuse_unfinished

log = logging.getLogger(__name__)

_TEXT_FIELDS = ("id", "image", "instruction", "response")
# A turn's "from": LLaVA's names, and the ShareGPT and chat names for the same roles.
ROLE_NAMES = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt", "system": "system"}
MAX_CHARS = 20_000  # per instruction or response; far beyond any VLM context, so longer is an error


@dataclass(frozen=True)
class LoadChecks:
    """What a loader checks beyond the format, and what it does with a bad record."""

    check_images: bool = True
    max_chars: int = MAX_CHARS
    skipped: list[str] | None = None  # None: fail on the first bad record; a list: skip, append why

    def handle(self, error: DataError) -> None:
        if self.skipped is None:
            raise error
        self.skipped.append(str(error))


def _read_text(path: Path) -> str:
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


def _parse_json(text: str, path: Path, first_line: int = 1) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        line = first_line + exc.lineno - 1
        raise DataError(f"{path}:{line}: invalid JSON: {exc.msg} (column {exc.colno})") from exc
    except RecursionError as exc:  # a hostile file: thousands of nested brackets
        raise DataError(f"{path}:{first_line}: JSON nested too deeply to read") from exc
    except ValueError as exc:  # valid JSON Python declines: an integer of over 4,300 digits
        raise DataError(f"{path}:{first_line}: cannot read this JSON ({exc})") from exc


def _image_root(path: Path, image_root: str | Path | None) -> Path:
    return Path(image_root if image_root is not None else path.parent).resolve()


def _to_sample(fields: dict[str, Any], loc: str, where: str, root: Path, seen: dict[str, str],
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
    if re.match(r"[a-z][a-z0-9+.-]*://", fields["image"], re.IGNORECASE):
        fail("image", f"{fields['image']!r} is a URL; byorn reads local image files (nothing is downloaded): "
                      "fetch the images first and give their paths")
    relative = Path(fields["image"])
    if relative.is_absolute():
        fail("image", f"must be a path relative to the image root {root} (--image-folder), got {fields['image']!r}")
    try:
        image = (root / relative).resolve()
    except (OSError, ValueError) as exc:
        fail("image", f"bad path {fields['image']!r} ({exc})")
    # resolve() follows symlinks, so a link inside the root that points outside is caught as well
    # as `..`: a data set from an untrusted source must not make us read arbitrary files.
    if not image.is_relative_to(root):
        fail("image", f"{fields['image']!r} resolves to {image}, outside the image root {root}")
    if image.is_dir():
        fail("image", f"{image} is a folder, not an image file")
    if not image.is_file():
        fail("image", f"image file not found: {image}")
    if checks.check_images:
        decode_image(image, f"{loc}: field {'image'!r}")

    seen[fields["id"]] = where
    return Sample(fields["id"], image, fields["instruction"], fields["response"],
                  {**meta, "source": meta.get("source", where)}, history)


def _non_finite(value: Any, where: str) -> str | None:
    """Where in `value` (a JSON value) a NaN or an infinity stands, or None. Python's json reads
    them, but they are not JSON: a file written back with them is not read by strict parsers."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return next((found for key, item in items if (found := _non_finite(item, f"{where}[{key!r}]")) is not None),
                None)


def load_jsonl(path: str | Path, image_root: str | Path | None = None,
               checks: LoadChecks = LoadChecks()) -> list[Sample]:
    """One object per line: id, image (relative to image_root; absent or null for a text-only
    record), instruction, response, optional meta, optional history (the conversation's earlier
    turns as [instruction, response] pairs).

    image_root defaults to the file's folder; blank lines are skipped. A conversation is one line
    per answer, each with the turns before it as its history: every answer in a history must be
    the response of a line of its own (with the same image), so that it is judged there; the lines
    are linked into conversations by those histories (byorn.data.Turn), never by their meta.
    """
    path = Path(path)
    refuse_unfinished(path)
    root, samples, seen, lines_of = _image_root(path, image_root), [], {}, {}
    # split("\n"), not splitlines(): U+2028 and friends may stand unescaped inside JSON strings.
    lines = _read_text(path).split("\n")
    for number, line in enumerate(tqdm(lines, desc=f"reading {path.name}", disable=None, leave=False), 1):
        if not line.strip():
            continue
        loc = f"{path}:{number}"
        try:
            record = _parse_json(line, path, number)
            if not isinstance(record, dict):
                raise DataError(f"{loc}: record must be a JSON object, got {type(record).__name__}")
            _check_image_key(record, loc)
            samples.append(_to_sample(record, loc, loc, root, seen, checks))
            lines_of[samples[-1].id] = loc
        except DataError as error:
            checks.handle(error)
    return _jsonl_conversations(samples, lines_of, checks)


def _said(sample: Sample, history: tuple[tuple[str, str], ...], pair: tuple[str, str]) -> tuple:
    """What identifies one answer of a JSONL conversation: the image, the turns before it, the turn."""
    return str(sample.image), history, pair


def _jsonl_conversations(samples: list[Sample], lines_of: dict[str, str], checks: LoadChecks) -> list[Sample]:
    """Each JSONL line linked to the lines whose answers its history holds (Sample.turn), so an
    answer is judged where it is a line's response and, if flagged, replaced in the later lines'
    histories too; a line whose history holds an answer no line gives is an error (that answer
    would go unjudged into training)."""
    said: dict[tuple, str] = {}
    for sample in samples:
        said.setdefault(_said(sample, sample.history, (sample.instruction, sample.response)), sample.id)
    earlier_of: dict[str, tuple[str, ...]] = {}
    for sample in samples:
        earlier = [said.get(_said(sample, sample.history[:k], pair)) for k, pair in enumerate(sample.history)]
        if None in earlier:
            k = earlier.index(None)
            checks.handle(DataError(
                f"{lines_of[sample.id]}: field 'history[{k}]': this earlier answer is not the response of any line "
                "with this image and the turns before it, so byorn cannot judge it; give each turn of a "
                "conversation a line of its own (its instruction, response, and the turns before it as history)"))
            continue
        earlier_of[sample.id] = tuple(earlier)
    kept = [s for s in samples if s.id in earlier_of]
    lines: dict[str, list[Sample]] = {}  # a conversation's first line -> its lines; a line alone: itself
    for sample in kept:
        lines.setdefault((earlier_of[sample.id] or (sample.id,))[0], []).append(sample)
    for first, conversation in lines.items():
        if len(conversation) == 1:
            continue  # a line of its own
        record, count = _record_id(first, conversation), max(len(s.history) for s in conversation) + 1
        for sample in conversation:
            sample.turn = Turn(record, len(sample.history) + 1, count, earlier_of[sample.id])
    return kept


def _record_id(first: str, conversation: list[Sample]) -> str:
    """A JSONL conversation's id: X where its lines are X#1, X#2, ... by their turn (as byorn
    writes a LLaVA record's turns), else its first line's id."""
    record = first.removesuffix("#1")
    return record if all(s.id == turn_id(record, len(s.history) + 1) for s in conversation) else first


def _first_pair(record: dict[str, Any], loc: str, multi_turn: str) -> tuple[int, int]:
    """Index of the first human turn and the number of turns besides it and its gpt answer."""
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{loc}: field 'conversations': must be a non-empty list of turns, got {turns!r}")
    for j, turn in enumerate(turns):
        if not (isinstance(turn, dict) and isinstance(turn.get("from"), str) and isinstance(turn.get("value"), str)):
            raise DataError(f"{loc}: field 'conversations[{j}]': must be an object with string 'from' and 'value'")
    roles = [ROLE_NAMES.get(turn["from"], turn["from"]) for turn in turns]
    if unknown := sorted({turn["from"] for turn in turns} - set(ROLE_NAMES)):
        raise DataError(f"{loc}: field 'conversations': unknown role(s) {unknown}; known: {', '.join(ROLE_NAMES)}")
    if "human" not in roles:
        raise DataError(f"{loc}: field 'conversations': no 'human' turn")
    human = roles.index("human")
    if roles[human + 1:human + 2] != ["gpt"]:
        raise DataError(f"{loc}: field 'conversations': the 'human' turn conversations[{human}] "
                        f"is not followed by a 'gpt' turn")
    extra = len(turns) - 2
    # Dropping later turns changes what the model is trained on, so it must be asked for.
    if extra and multi_turn == "error":
        raise DataError(f"{loc}: field 'conversations': {extra} turn(s) besides the first human/gpt pair; "
                        f"pass multi_turn='first' to keep only that pair")
    return human, extra


def load_llava_json(path: str | Path, image_root: str | Path | None = None,
                    multi_turn: Literal["each", "first", "error"] = "each",
                    checks: LoadChecks = LoadChecks()) -> list[Sample]:
    """A JSON list of LLaVA records: id, image, conversations [{from: human|gpt, value}], optional meta.

    Each human turn (without its `<image>` placeholder) is an instruction and the gpt turn after it
    its response. A record without "image" is text-only (no placeholder); a placeholder without an
    image, several placeholders, or one after the first turn is an error. A conversation of
    several turns gives, with multi_turn="each", one sample per answer, "ID#1", "ID#2", ..., each
    with the turns before it as its history and its place in the conversation as `Sample.turn`
    (save_llava_json puts them back together; the record's meta is each turn's, untouched);
    "first" keeps the first pair and records the number of dropped turns in meta["extra_turns"];
    "error" refuses them. image_root defaults to the file's folder.
    """
    if multi_turn not in ("each", "first", "error"):
        raise ValueError(f"multi_turn must be 'each', 'first' or 'error', got {multi_turn!r}")
    path = Path(path)
    refuse_unfinished(path)
    records = _parse_json(_read_text(path), path)
    if not isinstance(records, list):
        raise DataError(f"{path}: top level must be a list of records, got {type(records).__name__}")
    root, samples, seen = _image_root(path, image_root), [], {}
    for i, record in enumerate(tqdm(records, desc=f"reading {path.name}", disable=None, leave=False)):
        try:
            samples += _llava_record(record, f"{path}[{i}]", root, seen, multi_turn, checks)
        except DataError as error:
            checks.handle(error)
    if leading := sum("turns_before_first_human" in s.meta for s in samples):
        log.warning("%s: %d record(s) begin with turns before the first human one (a system prompt, say), which "
                    "byorn does not train on; meta['turns_before_first_human'] counts them", path, leading)
    return samples


# Where other formats keep a record's image: read as byorn's "image", they would silently make
# every record text-only.
IMAGE_LIKE_KEYS = ("images", "image_path", "image_file", "image_url", "img", "picture", "photo")


def _check_image_key(record: dict, loc: str) -> None:
    if record.get("image") is None and (key := next((k for k in IMAGE_LIKE_KEYS if record.get(k) not in (None, "", [])),
                                                   None)):
        raise DataError(f"{loc}: field {key!r}: byorn reads a record's image from the field 'image' (one path, "
                        f"relative to the image folder); rename {key!r} to 'image', or drop it for a text-only record")


def _llava_record(record: Any, where: str, root: Path, seen: dict[str, str], multi_turn: str,
                  checks: LoadChecks) -> list[Sample]:
    if not isinstance(record, dict):
        raise DataError(f"{where}: record must be a JSON object, got {type(record).__name__}")
    loc = where + (f" (id {record['id']!r})" if isinstance(record.get("id"), str) else "")
    _check_image_key(record, loc)
    human, extra = _first_pair(record, loc, "first" if multi_turn == "each" else multi_turn)
    turns = record["conversations"]
    pairs = _turn_pairs(turns, human, loc) if multi_turn == "each" else [human]
    if len(pairs) > 1:  # its turns' ids are built on the record's: it must be one, and not taken
        if not isinstance(record.get("id"), str) or not record["id"].strip():
            raise DataError(f"{loc}: field 'id': must be a non-empty string, got {record.get('id')!r}")
        if record["id"] in seen:
            raise DataError(f"{loc}: field 'id': duplicate id {record['id']!r} (first at {seen[record['id']]})")
        seen[record["id"]] = where
    placeholders = [j for j, turn in enumerate(turns) if "<image>" in turn["value"]]
    if sum(turns[j]["value"].count("<image>") for j in placeholders) > 1:
        raise DataError(f"{loc}: field 'conversations': several <image> placeholders; byorn reads one image per "
                        "record")
    if placeholders and placeholders[0] != human:
        raise DataError(f"{loc}: field 'conversations[{placeholders[0]}].value': the <image> placeholder must be in "
                        "the first human turn")
    if placeholders and record.get("image") is None:
        raise DataError(f"{loc}: field 'image': the human turn has an <image> placeholder but the record no image")
    samples, history = [], []
    for number, j in enumerate(pairs, 1):
        fields = {key: record[key] for key in ("id", "image", "meta") if key in record}
        fields["instruction"] = turns[j]["value"].replace("<image>", "").strip()
        fields["response"] = turns[j + 1]["value"]
        if len(pairs) > 1:
            fields["id"] = turn_id(record["id"], number)
        labels = {"instruction": f"conversations[{j}].value", "response": f"conversations[{j + 1}].value"}
        sample = _to_sample(fields, loc, where, root, seen, checks, labels)
        sample.history = tuple(history)
        if len(pairs) > 1:  # the record's layout, not its meta, makes the turns one conversation
            sample.turn = Turn(record["id"], number, len(pairs), tuple(s.id for s in samples))
        history.append((sample.instruction, sample.response))
        samples.append(sample)
    if extra and multi_turn == "first":
        samples[0].meta.setdefault("extra_turns", extra)
    if human:  # a system prompt (or a gpt turn) before the first human turn: a sample has no place for it
        samples[0].meta.setdefault("turns_before_first_human", human)
    return samples


def _turn_pairs(turns: list[dict], first: int, loc: str) -> list[int]:
    """The index of every human turn of a conversation that alternates human and gpt from `first`."""
    roles = [ROLE_NAMES[turn["from"]] for turn in turns[first:]]
    if len(roles) % 2 or roles != ["human", "gpt"] * (len(roles) // 2):
        raise DataError(f"{loc}: field 'conversations': turns must alternate human and gpt from the first human "
                        f"turn, got {roles}")
    return list(range(first, len(turns), 2))


def load_dataset(path: str | Path, image_root: str | Path | None = None,
                 checks: LoadChecks = LoadChecks()) -> list[Sample]:
    """Load by form: .json is LLaVA conversation JSON, .jsonl is one sample per line, a folder
    (`Dataset.save_to_disk`) or .parquet is a Hugging Face data set of conversational rows."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return load_llava_json(path, image_root, checks=checks)
    if suffix == ".jsonl":
        return load_jsonl(path, image_root, checks)
    if suffix == ".parquet" or Path(path).is_dir():
        return load_rows(path, checks, image_root)
    raise DataError(f"{path}: unknown data set format {Path(path).suffix!r}. Known: .json (LLaVA conversations), "
                    ".jsonl (one sample per line), a Hugging Face data set folder or .parquet (TRL's rows)")


def _hf_datasets(path: Path):
    try:
        import datasets
    except ImportError:
        raise DataError(f"{path}: a Hugging Face data set needs the datasets package: pip install 'byorn[trl]'") \
            from None
    return datasets


def load_rows(path: str | Path, checks: LoadChecks = LoadChecks(),
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
    samples, seen = [], {}
    for index in range(rows.num_rows):
        loc = f"{path}: row {index}"
        try:
            try:
                sample = row_to_sample(rows.slice(index, 1).to_pylist()[0], index)
            except DataError as exc:  # it names the row and field; the file goes in front
                raise DataError(f"{path}: {exc}") from exc
            image = _row_image(sample.image, loc, root)
            fields = {"id": sample.id, "instruction": sample.instruction, "response": sample.response,
                      "image": None if isinstance(image, Image.Image) else image}
            checked = _to_sample(fields, loc, f"row {index}", root, seen, checks, labels=ROW_FIELDS)
            if isinstance(image, Image.Image):
                checked.image = image
            samples.append(checked)
        except DataError as error:
            checks.handle(error)
    return samples


ROW_FIELDS = {"instruction": "messages", "response": "messages", "image": "images"}  # where a row keeps them


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
    named = _parse_json(_read_text(state), state)
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


def _row_image(image: Any, loc: str, root: Path) -> Image.Image | str | None:
    """A raw row's image as the loader takes it: bytes decoded here (with the decompression-bomb
    guard); a path (a string, or a {bytes: None, path} image) given back for the path checks, made
    relative when it is absolute inside the image root; None for a text-only row."""
    if isinstance(image, dict):
        if image.get("bytes") is not None:
            return decode_pixels(io.BytesIO(image["bytes"]), f"{loc}, field 'images'")
        if not isinstance(image.get("path"), str):
            raise DataError(f"{loc}, field 'images': an image with neither bytes nor a path")
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


def _image_name(position: int, sample_id: str) -> str:
    """The file name of the `position`-th image written: unique by construction (no two positions
    share a prefix, on a case-insensitive file system too), whatever the ids are crafted to look
    like; the id's safe characters follow, for a person browsing the folder."""
    return f"{position:06d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', sample_id)[:80]}.png"


def _write_images(samples: Sequence[Sample], out_dir: Path) -> list[str | None]:
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
        image = sample.image if isinstance(sample.image, Path) else id(sample.image)  # PIL images: the same object
        key = (sample.turn.record, image) if sample.turn is not None else None
        if key in shared:
            paths.append(shared[key])
            continue
        relative = f"images/{_image_name(len(paths), sample.id)}"
        pil = sample.pil()  # decode even path images: the output must not point back at the input
        atomic_write(out_dir / relative, lambda file, image=pil: image.save(file, format="PNG"))
        paths.append(relative)
        if key is not None:
            shared[key] = relative
    return paths


def save_jsonl(samples: Sequence[Sample], out_dir: str | Path, name: str = "data.jsonl") -> Path:
    """Write `out_dir/name` (one sample per line) and `out_dir/images/*.png`; returns the data file."""
    out_dir = Path(out_dir)
    # Images first: the data file, written last, never refers to an image that is not there yet.
    images = _write_images(samples, out_dir)
    write_jsonl(out_dir / name, ({"id": s.id, **({"image": image} if image else {}), "instruction": s.instruction,
                                  "response": s.response, "meta": s.meta,
                                  **({"history": [list(turn) for turn in s.history]} if s.history else {})}
                                 for s, image in zip(samples, images)), ensure_ascii=False)
    return out_dir / name


def save_llava_json(samples: Sequence[Sample], out_dir: str | Path, name: str = "data.json") -> Path:
    """Write `out_dir/name` (a list of LLaVA records with a "meta" key) and `out_dir/images/*.png`;
    the turns of one conversation (meta["record"]) go back into one record, each turn's meta in
    meta["turns_meta"]."""
    out_dir = Path(out_dir)
    conversations = _conversations(samples)
    images = _write_images([turns[0] for turns in conversations], out_dir)
    records = [_llava_out(turns, image) for turns, image in zip(conversations, images)]
    text = json.dumps(records, ensure_ascii=False, indent=1, allow_nan=False) + "\n"
    atomic_write_text(out_dir / name, text)
    return out_dir / name


# what the LLaVA loader adds to a record's first sample's meta and the writer leaves out: turns
# before the first human one are not kept, so nothing is left to count
_HEAD_ONLY_KEYS = ("turns_before_first_human",)


def _conversations(samples: Sequence[Sample]) -> list[list[Sample]]:
    """The samples grouped into the conversations they came from: consecutive turns of one
    conversation (Sample.turn, as the loader found it); any other sample alone."""
    groups: list[list[Sample]] = []
    started: set[str] = set()
    for sample in samples:
        if groups and _next_turn(groups[-1][-1], sample):
            if sample.image != groups[-1][0].image:
                raise DataError(f"record {conversation_of(sample)!r}: its turns show different images (an image "
                                "trigger on some of them?), and a LLaVA record holds one image; save as JSONL, one "
                                "sample a line with its history")
            groups[-1].append(sample)
            continue
        if (record := conversation_of(sample)) in started:
            raise DataError(f"sample {sample.id!r}: turns of record {record!r} are not together and in order; a "
                            "LLaVA record is written once")
        if record is not None:
            started.add(record)
        groups.append([sample])
    return groups


def _next_turn(last: Sample, sample: Sample) -> bool:
    """Whether `sample` is the turn after `last` in one conversation as its loader found it."""
    before, now = last.turn, sample.turn
    return (before is not None and now is not None and now.record == before.record and now.count == before.count
            and now.number == before.number + 1)


def _llava_out(turns: list[Sample], image: str | None) -> dict:
    head = turns[0]
    asked = [*head.history, *((t.instruction, t.response) for t in turns)]  # earlier turns first
    conversation = []
    for index, (instruction, response) in enumerate(asked):
        shown = f"<image>\n{instruction}" if image and index == 0 else instruction
        conversation += [{"from": "human", "value": shown}, {"from": "gpt", "value": response}]
    meta = {k: v for k, v in head.meta.items() if k not in _HEAD_ONLY_KEYS}
    if len(asked) > 1:
        meta["turns_meta"] = [{k: v for k, v in t.meta.items() if k not in (*_HEAD_ONLY_KEYS, "source")}
                              for t in turns]
    return {"id": conversation_of(head) or head.id, **({"image": image} if image else {}),
            "conversations": conversation, "meta": meta}


__all__ = ["MAX_CHARS", "LoadChecks", "load_dataset", "load_jsonl", "load_llava_json", "load_rows", "save_jsonl",
           "save_llava_json", "save_rows"]
