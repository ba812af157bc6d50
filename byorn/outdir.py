"""Output folders that are finished and consistent, or visibly unfinished.

Each file byorn writes is atomic; a folder of several is not. A command that writes one (scan,
clean) marks it unfinished first, with a file named UNFINISHED that says which command started
when; clears the outputs an earlier run left there (they would sit beside this run's and look
like one run's); writes its files; and removes the mark last. A killed run leaves the mark, so a
person sees it in the listing, and every byorn loader refuses a data file in such a folder.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from byorn.data import DataError
from byorn.fileio import atomic_write_text

UNFINISHED = "UNFINISHED"


def mark_unfinished(out_dir: Path, command: str) -> None:
    """Mark `out_dir` (made if missing) unfinished, before `command` writes anything there."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    atomic_write_text(out_dir / UNFINISHED, f"byorn {command} started writing this folder at {started} and has not "
                                            "finished: its files may be missing or mixed with an earlier run's. Run "
                                            "the command again (it clears them) or delete the folder.\n")


def start_output(out_dir: str | Path, command: str, outputs: Iterable[str], reads: Iterable[Path] = ()) -> Path:
    """Mark `out_dir` unfinished and remove the `outputs` (names of files and folders in it that
    `command` writes) an earlier run left, so that none of them outlives this run beside its files.
    `reads`: the files the command still reads; one inside an output to remove is refused."""
    out_dir = Path(out_dir)
    stale = [out_dir / name for name in outputs if (out_dir / name).exists() or (out_dir / name).is_symlink()]
    for path in (Path(p).resolve() for p in reads):
        if any(path == s.resolve() or s.resolve() in path.parents for s in stale):
            raise ValueError(f"{out_dir}: byorn {command} would clear {path}, which it reads; write to another folder")
    mark_unfinished(out_dir, command)
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
    """Stop reading a data file (or data set folder) that lies in an unfinished output folder."""
    data = Path(data)
    for folder in (data, data.parent):
        if (folder / UNFINISHED).is_file():
            raise DataError(f"{data}: {folder} is an unfinished byorn output folder (it holds {UNFINISHED}: the run "
                            "that wrote it did not finish); run that command again, or delete the folder")
