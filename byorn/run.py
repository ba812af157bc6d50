"""A fine-tuning run's folder and its contract: what a fresh run records, what a resumed run must match.

A run directory holds config.yaml (the training settings), defense.yaml (the defense and its
options), data.yaml (which samples the run was given) and the Trainer's checkpoint-<step> folders
under trainer/. A fresh run removes an earlier run's checkpoints, so that a later resume cannot go on
from another run's weights; a resumed run goes on from its newest checkpoint only with the settings
and samples it started with. `byorn.train.finetune` keeps this contract for a run of its own;
`byorn train` builds the `Run` itself, to refuse a resume before loading the model or judging the data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import yaml

from byorn.config import TrainConfig, read_yaml, save_config
from byorn.data import Sample
from byorn.distributed import is_main
from byorn.fileio import atomic_write_text, remove_if_empty

log = logging.getLogger(__name__)

CHECKPOINTS = "trainer"  # the run directory's folder of checkpoint-<step> folders
DATA_RECORD = "data.yaml"
# what defense.yaml says of a run trained without a hook: what byorn.defenses' NoDefense resolves to,
# so that `finetune` without one and `byorn train --defense none` are the same run
NO_DEFENSE = {"defense": "none"}


class RunError(ValueError):
    """A run that cannot start or resume as asked; the message says which file disagrees and how."""


class Resolved(Protocol):
    """What a run records of its defense (`byorn.train.BatchHook` has it)."""

    def resolved(self) -> dict: ...


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.removeprefix("checkpoint-"))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None. Complete: the Trainer writes
    trainer_state.json last, so a folder without it was cut off mid-save (and is ignored)."""
    folder = Path(run_dir) / CHECKPOINTS
    complete = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()
                and p.name.removeprefix("checkpoint-").isdigit()]
    return max(complete, key=checkpoint_step, default=None)


def discard_checkpoints(run_dir: str | Path) -> None:
    """Remove an earlier run's checkpoints (its checkpoint-<step> folders, nothing else) from a run
    directory a fresh run starts in: a later resume of this run must not find them and go on
    from another run's weights."""
    folder = Path(run_dir) / CHECKPOINTS
    earlier = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.removeprefix("checkpoint-").isdigit()]
    for checkpoint in earlier:
        shutil.rmtree(checkpoint)
    remove_if_empty(folder)
    if earlier:
        log.info("a fresh run: discarded %d checkpoint(s) of an earlier run in %s", len(earlier), folder)


def data_key(samples: Sequence[Sample], image_root: Path) -> str:
    """sha256 hex of which samples a run trains on, for a resumed run to check it has the same:
    ids, texts, and each image as its path relative to `image_root` (a data set moved elsewhere
    whole keeps its key; files are not read again) or, decoded in memory, its pixels."""
    digest = hashlib.sha256()
    root = image_root.resolve()
    def named(image: object) -> str | None:  # a path, a decoded image, or None
        return os.path.relpath(image, root) if isinstance(image, Path) else \
            hashlib.sha256(image.tobytes()).hexdigest() if image is not None else None

    for s in samples:
        # one image as a run started before several were read named it; several as a list
        image = [named(i) for i in s.images] if s.more_images else named(s.image)
        digest.update(json.dumps([s.id, s.instruction, s.response, image, s.history]).encode())
    return digest.hexdigest()


def _images_root(samples: Sequence[Sample]) -> Path:
    """The folder all of the samples' image files are under (so moving it whole keeps the key)."""
    folders = [str(s.image.resolve().parent) for s in samples if isinstance(s.image, Path)]
    return Path(os.path.commonpath(folders)) if folders else Path(".")


def _named(source: object, count: object, unit: str = "") -> str:
    return f"{source}, {count}{unit}" if source else f"{count}{unit}"


class Run:
    """One fine-tuning run in `run_dir`: fresh, or resumed from `resume_from` (a checkpoint of it).

    Resumed, the settings are checked at once (config.yaml, defense.yaml); `admit` then checks the
    samples (data.yaml), or for a fresh run removes an earlier run's checkpoints and records them;
    `record_settings` writes config.yaml and defense.yaml when training begins."""

    def __init__(self, run_dir: str | Path, config: TrainConfig, defense: Resolved | None = None, *,
                 resume_from: Path | None = None) -> None:
        self.dir, self.config, self.defense, self.checkpoint = Path(run_dir), config, defense, resume_from
        self.admitted = False
        if resume_from is not None:
            self._check_settings()

    @classmethod
    def resumed(cls, run_dir: str | Path, config: TrainConfig, defense: Resolved | None = None) -> Run:
        """The run in `run_dir`, going on from its newest complete checkpoint."""
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            raise RunError(f"{run_dir}: no complete checkpoint to resume from (train with save_steps > 0 first)")
        return cls(run_dir, config, defense, resume_from=checkpoint)

    @property
    def resume_step(self) -> int | None:
        """The optimizer steps run before the checkpoint this run goes on from (None: a fresh run)."""
        return None if self.checkpoint is None else checkpoint_step(self.checkpoint)

    def _check_settings(self) -> None:
        """A resumed run must be the run that was interrupted: same training config and defense."""
        # A training option added since the run started counts as having had its default then. A defense
        # option does not: a new default may change what the defense does (rejudge), so a run whose
        # defense.yaml lacks it is resumed only with the byorn that started it.
        for name, now, defaults in (("config.yaml", dataclasses.asdict(self.config), dataclasses.asdict(TrainConfig())),
                                    ("defense.yaml", self._defense_record(), {})):
            path = self.dir / name
            before = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
            if before is None:
                continue
            before = {**defaults, **before}
            if before != now:
                changed = sorted(k for k in {*before, *now} if before.get(k) != now.get(k))
                raise RunError(f"{path}: the run was started with other settings ({', '.join(changed)}); resume it "
                               "with the same ones")

    def admit(self, samples: Sequence[Sample], source: str | None = None, image_root: Path | None = None) -> None:
        """The samples this run is given. Resumed: refused unless they are the ones it started
        with (it would go on from a checkpoint of one data set on another). Fresh: recorded in
        data.yaml, after an earlier run's checkpoints are removed.

        source: the data's name, for the record and the message; image_root: the folder image
        paths are taken relative to (default: the one all of them are under)."""
        root = image_root if image_root is not None else _images_root(samples)
        record = {"data": source, "samples": len(samples), "sha256": data_key(samples, root)}
        path = self.dir / DATA_RECORD
        if self.checkpoint is not None:
            before = read_yaml(path.read_text(encoding="utf-8")) if path.exists() else None
            if isinstance(before, dict) and before.get("sha256") != record["sha256"]:
                raise RunError(f"{path}: the run was started on other samples "
                               f"({_named(before.get('data'), before.get('samples'), ' samples')}; now "
                               f"{_named(source, len(samples))}); resume it with the same data")
        elif is_main():
            discard_checkpoints(self.dir)  # before the record of this run's samples: they are another run's
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, yaml.safe_dump(record, sort_keys=False))
        self.admitted = True

    def record_settings(self) -> None:
        """config.yaml and defense.yaml, as a resume of this run checks them."""
        if not self.admitted:
            raise RuntimeError("Run.admit() the run's samples before it trains")
        self.dir.mkdir(parents=True, exist_ok=True)
        save_config(self.config, self.dir / "config.yaml")
        atomic_write_text(self.dir / "defense.yaml", yaml.safe_dump(self._defense_record(), sort_keys=False))

    def _defense_record(self) -> dict:
        return self.defense.resolved() if self.defense is not None else NO_DEFENSE
