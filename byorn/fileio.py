"""Atomic file writes: a reader, or a rerun after a crash, sees the old file or the new one,
never a truncated one that loads as fewer samples or scores."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call `write` on a temp file in the same folder, fsync, then os.replace it onto `path`."""
    # open(..., "xb") rather than mkstemp: the file gets the usual umask permissions, not 0600.
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temp, "xb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda file: file.write(text.encode("utf-8")))


def jsonl_line(row: object, *, ensure_ascii: bool = True) -> str:
    """One JSON line: the row's compact JSON and a newline."""
    return json.dumps(row, ensure_ascii=ensure_ascii) + "\n"


def write_jsonl(path: Path, rows: Iterable[object], *, ensure_ascii: bool = True) -> None:
    """Write `rows` as JSON lines (UTF-8), atomically: readers see the old file or the whole new one.

    ensure_ascii as in json.dumps: False keeps non-ASCII text as UTF-8 rather than \\u escapes."""
    atomic_write_text(Path(path), "".join(jsonl_line(row, ensure_ascii=ensure_ascii) for row in rows))


def append_jsonl(path: Path, row: object, *, ensure_ascii: bool = True) -> None:
    """Append `row` as one whole JSON line (UTF-8), for resumable logs and results files that
    several processes share: the line goes out in one O_APPEND write, so lines never interleave."""
    data = jsonl_line(row, ensure_ascii=ensure_ascii).encode("utf-8")
    handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        while data:  # a regular file takes it whole; loop only in case a write is cut short
            data = data[os.write(handle, data):]
    finally:
        os.close(handle)


def remove_if_empty(folder: Path) -> None:
    """Tidy a scratch folder away, but never one that holds anything."""
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
