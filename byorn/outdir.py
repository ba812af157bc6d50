"""Output folders that are finished and consistent, or visibly unfinished.

Each file byorn writes is atomic; a folder of several is not. A command that writes one (scan,
clean) marks it unfinished first, with a file named UNFINISHED that says which command started
when and which of the folder's files it writes; clears those files where an earlier run left them
(they would sit beside this run's and look like one run's); writes its files; and removes the
mark last. A killed run leaves the mark, so a person sees it in the listing, and every byorn
loader refuses a data file the unfinished run writes (others in the folder, such as the input a
scan was written beside, stay readable).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from byorn.data import DataError
from byorn.fileio import atomic_write_text

UNFINISHED = "UNFINISHED"


def mark_unfinished(out_dir: Path, command: str, outputs: Sequence[str]) -> None:
    """Mark `out_dir` (made if missing) unfinished: `command` writes `outputs` there."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    note = (f"byorn {command} started writing this folder at {started} and has not finished: the files it writes "
            "may be missing or an earlier run's. Run the command again (it clears them) or delete them.")
    atomic_write_text(out_dir / UNFINISHED, json.dumps({"unfinished": note, "writes": list(outputs)}, indent=1) + "\n")


def mark_before_loading(out_dir: Path, command: str, data: str, outputs: Sequence[str]) -> None:
    """Mark OUT unfinished before the first thing a command writes there while it loads the data
    (`outputs`: the list of skipped records), unless the data lies in OUT itself: there the mark
    waits for start_output, after the command has checked it writes over nothing it reads."""
    source = Path(data).resolve()
    if out_dir.resolve() not in (source, source.parent):
        mark_unfinished(out_dir, command, outputs)


def start_output(out_dir: str | Path, command: str, outputs: Sequence[str], reads: Iterable[Path] = ()) -> Path:
    """Mark `out_dir` (made if missing) unfinished and remove the `outputs` (names of files and
    folders in it that `command` writes) an earlier run left, so that none of them outlives this
    run beside its files. `reads`: the files the command still reads; one inside an output to
    remove is refused."""
    out_dir = Path(out_dir)
    stale = [out_dir / name for name in outputs if (out_dir / name).exists() or (out_dir / name).is_symlink()]
    for path in (Path(p).resolve() for p in reads):
        if any(path == s.resolve() or s.resolve() in path.parents for s in stale):
            raise ValueError(f"{out_dir}: byorn {command} would clear {str(path)!r}, which it reads; write to another "
                             "folder")
    mark_unfinished(out_dir, command, outputs)
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return out_dir


def finish_output(out_dir: str | Path) -> None:
    """Remove the mark: every file of the run is in place."""
    (Path(out_dir) / UNFINISHED).unlink(missing_ok=True)


def refuse_unfinished(data: str | Path) -> None:
    """Stop reading a data file (or data set folder) that an unfinished run was writing."""
    data = Path(data)
    mark = data.parent / UNFINISHED
    if not mark.is_file():
        return
    try:
        written = json.loads(mark.read_text(encoding="utf-8"))["writes"]
    except (OSError, ValueError, KeyError, TypeError):  # a mark byorn did not write whole: take it as meant
        written = [data.name]
    if data.name in written:
        raise DataError(f"{data}: written by a byorn run that did not finish ({mark} marks the folder); run that "
                        "command again, or delete its files")
