"""byorn's JSONL layout: one sample a line (id, image, instruction, response, optional meta and
history); a conversation is one line per answer, linked by their histories."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from byorn.data import DataError, Origin, Sample, Source, Turn, turn_id
from byorn.fileio import atomic_write_text, write_jsonl
from byorn.formats.answers import set_text
from byorn.formats.checks import (
    DEFAULT_CHECKS,
    LoadChecks,
    check_image_key,
    image_root_of,
    parse_json,
    read_text,
    to_sample,
)
from byorn.formats.images import write_images
from byorn.outdir import refuse_unfinished


def load_jsonl(path: str | Path, image_root: str | Path | None = None,
               checks: LoadChecks = DEFAULT_CHECKS) -> list[Sample]:
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
    root, samples, seen, lines_of = image_root_of(path, image_root), [], {}, {}
    source = Source(path, "jsonl", root)
    # split("\n"), not splitlines(): U+2028 and friends may stand unescaped inside JSON strings.
    lines = read_text(path).split("\n")
    for number, line in enumerate(tqdm(lines, desc=f"reading {path.name}", disable=None, leave=False), 1):
        if not line.strip():
            continue
        loc = f"{path}:{number}"
        try:
            record = parse_json(line, path, number)
            if not isinstance(record, dict):
                raise DataError(f"{loc}: record must be a JSON object, got {type(record).__name__}")
            check_image_key(record, loc)
            samples.append(to_sample(record, loc, loc, root, seen, checks))
            reference = record.get("image")
            samples[-1].origin = Origin(source, number - 1, ("response",), images=(reference,) if reference else ())
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


def save_jsonl(samples: Sequence[Sample], out_dir: str | Path, name: str = "data.jsonl") -> Path:
    """Write `out_dir/name` (one sample per line) and `out_dir/images/*.png`; returns the data file."""
    out_dir = Path(out_dir)
    # Images first: the data file, written last, never refers to an image that is not there yet.
    images = write_images(samples, out_dir)
    write_jsonl(out_dir / name, ({"id": s.id, **({"image": image} if image else {}), "instruction": s.instruction,
                                  "response": s.response, "meta": s.meta,
                                  **({"history": [list(turn) for turn in s.history]} if s.history else {})}
                                 for s, image in zip(samples, images)), ensure_ascii=False)
    return out_dir / name


def rewrite_jsonl(source: Source, records: Mapping[int, Sequence[Sample]], answers: Mapping[str, str],
                  target: Path) -> None:
    """Write the lines of `records` (by 0-based line) back to `target`: a line with no replaced
    answer byte for byte, the others with their response and the replaced answers of their history."""
    lines = read_text(source.path).split("\n")
    kept = []
    for index, line in enumerate(lines):
        if not line.strip():
            kept.append(line)  # blank lines, and the end after the last newline, stay where they were
            continue
        if index not in records:
            continue
        (sample,) = records[index]  # a line holds one answer
        record = json.loads(line)
        earlier = sample.turn.earlier if sample.turn is not None else ()
        changed = [(("response",), sample.id), *((("history", k, 1), id) for k, id in enumerate(earlier))]
        changed = [(keys, answers[id]) for keys, id in changed if id in answers]
        for keys, answer in changed:
            set_text(record, keys, answer)
        # a changed line keeps the file's line ending (a CRLF file's "\r" stays before each "\n")
        kept.append(json.dumps(record, ensure_ascii=False) + "\r" * line.endswith("\r") if changed else line)
    atomic_write_text(target, "\n".join(kept))
