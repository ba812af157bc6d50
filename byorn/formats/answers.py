"""Writing a user's data file back with some answers replaced: every record the judgement kept, in
its own order and form, with only the judged answers' text changed (`byorn clean`).

A loaded sample's `Origin` says which record it came from and the keys that lead to its answer;
the layouts' writers (llava, jsonl, rows, llamafactory) read the file again raw and change just
those places, so fields byorn never reads (extra keys and columns, system turns, image parts,
the user's own image paths) come out as they went in.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from byorn.data import DataError, Sample, Source
from byorn.fileio import atomic_write_text
from byorn.formats.checks import parse_json, read_text


def whole_records(source: Source, samples: Sequence[Sample]) -> dict[int, list[Sample]]:
    """The records of `source` whose every answer is among the samples (by record index, in file
    order). A record with an answer left out (a skipped turn, a dropped conversation) is left out
    whole: written back, that answer would go unjudged into training."""
    if stray := next((s for s in samples if s.origin is None or s.origin.source is not source), None):
        raise DataError(f"sample {stray.id!r} was not loaded from {source.path}: only that file's samples are written "
                        "back into it")
    records: dict[int, list[Sample]] = {}
    for sample in samples:
        records.setdefault(sample.origin.record, []).append(sample)
    return {index: turns for index, turns in sorted(records.items()) if len(turns) == turns[0].origin.answers}


def replace_answers(record: Any, samples: Sequence[Sample], answers: Mapping[str, str]) -> None:
    """Put each flagged sample's new answer where its origin says, in `record` (changed in place)."""
    for sample in samples:
        if sample.id in answers:
            set_text(record, sample.origin.answer, answers[sample.id])


def set_text(record: Any, keys: Sequence[str | int], answer: str) -> None:
    """Make the text at `keys` in `record` say `answer`: a string replaced; content parts (a list
    of {type, text, ...}) keep their other parts, the first text part says the answer and the
    other text parts go (the answer was their text joined)."""
    *path, last = keys
    for key in path:
        record = record[key]
    content = record[last]
    if isinstance(content, str):
        record[last] = answer
        return
    texts = [j for j, part in enumerate(content) if isinstance(part, Mapping) and part.get("type") == "text"]
    record[last] = [{**part, "text": answer} if j == texts[0] else part
                    for j, part in enumerate(content) if j == texts[0] or j not in texts]


def dump_json_like(records: Any, text: str, original: Any) -> str:
    """`records` as JSON in the style the file's `text` (which parsed as `original`) was written
    in, found by trying the usual ones (json.dumps' indents and separators, ASCII or not), so an
    unchanged file comes out byte for byte; another style falls back to an indent of 2."""
    styles = [{"indent": indent, "ensure_ascii": ascii_only, **({"separators": (",", ":")} if compact else {})}
              for indent, compact in ((None, False), (None, True), (1, False), (2, False), (4, False), ("\t", False))
              for ascii_only in (False, True)]
    body, tail = text.rstrip(), text[len(text.rstrip()):]
    # a style is tried on the first record before the whole file: a LLaVA-scale file is a gigabyte
    fits = (s for s in styles if body.startswith(json.dumps(original[:1], **s).rstrip("]").rstrip())
            and json.dumps(original, **s) == body)
    style = next(fits, None)
    if style is None:
        return json.dumps(records, indent=2, ensure_ascii=False) + "\n"
    return json.dumps(records, **style) + tail


def rewrite_json_list(source: Source, records: Mapping[int, Sequence[Sample]], answers: Mapping[str, str],
                      target: Path) -> None:
    """Write the records (by index) of the JSON list `source` holds to `target`, each flagged
    answer replaced, in the file's own JSON style."""
    text = read_text(source.path)
    original = parse_json(text, source.path)
    written = []
    for index, samples in records.items():
        record = original[index]
        if any(s.id in answers for s in samples):
            record = copy.deepcopy(record)
            replace_answers(record, samples, answers)
        written.append(record)
    atomic_write_text(target, dump_json_like(written, text, original))
