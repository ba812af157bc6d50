"""Atomic file writes: a reader, or a rerun after a crash, sees the old file or the new one,
never a truncated one that loads as fewer samples or scores."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
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


def remove_if_empty(folder: Path) -> None:
    """Tidy a scratch folder away, but never one that holds anything."""
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
