"""Fine-tunes a benchmark grid has already run, found again by what they were made of.

A grid repeats fine-tunes: BYE's probe is the undefended cell's fine-tune of the same poisoned
samples, the clean oracle (the poison removed) trains on the same samples under every attack
that poisons the same indices and adds nothing else, and score-and-drop warms its reference up
exactly as BYORn does on the same poisoned set. On a CPU a fine-tune is deterministic (the same
starting weights, samples, settings and seed give the same weights bit for bit at one thread
count; the standard grid's 216 cells came out identical with and without sharing), so a later cell
can load the weights an earlier one saved instead of training again. The key holds everything the
weights depend on: the starting weights, the samples in order and every training setting but those
that only say where to log and save. Full fine-tuning in one process only: a LoRA run saves its
adapter alone, which these indexes do not rebuild, and processes of one run would have to agree on
what they find.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import safetensors.torch
import torch

from byorn.config import TrainConfig
from byorn.data import Sample
from byorn.distributed import world_size
from byorn.fileio import append_jsonl
from byorn.models.hf import VLM
from byorn.scoring import hash_samples, model_fingerprint
from byorn.train import saved_model_dir

log = logging.getLogger(__name__)

INDEX_NAME = "trained.jsonl"  # whole fine-tunes: their model directories
WEIGHTS_INDEX_NAME = "trained_in_place.jsonl"  # fine-tunes of a model in place (a warm-up): weights files
WEIGHTS_DIR = "weights"  # where those files are saved, next to the indexes
NOT_IN_KEY = ("logging_steps", "save_steps", "report_to")  # where a run logs and saves, not what it learns


def training_key(vlm: VLM, samples: Sequence[Sample], config: TrainConfig) -> str:
    """sha256 hex of what a fine-tune of `vlm` (as it is now) on `samples` under `config` gives."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in NOT_IN_KEY}
    digest = hashlib.sha256(model_fingerprint(vlm, reference=False))
    digest.update(json.dumps(settings, sort_keys=True).encode())
    hash_samples(digest, samples)
    return digest.hexdigest()


class TrainedModels:
    """The fine-tunes of a grid (JSON lines of key and saved weights, appended whole by each process
    that shares the folder, once the weights are saved), looked up by `training_key`."""

    def __init__(self, directory: str | Path, name: str = INDEX_NAME) -> None:
        self.path = Path(directory) / name

    def find(self, key: str) -> dict | None:
        """The newest record saved under `key` whose weights are still there (`model`: a model
        directory with its config, or a weights file), or None."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return None
        for line in reversed(lines):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line another process is writing
                continue
            if record.get("key") == key and _complete(Path(record["model"])):
                return record
        return None

    def add(self, key: str, model: str | Path, **facts: object) -> None:
        """Index `model` (saved whole before this call) under `key`, with any other JSON `facts`."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_jsonl(self.path, {"key": key, "model": str(model), **facts})


def _complete(path: Path) -> bool:
    return (path / "config.json").is_file() if path.is_dir() else path.is_file()


def trained_or_found(vlm: VLM, samples: Sequence[Sample], config: TrainConfig, cache_dir: str | Path | None,
                     train: Callable[[], VLM], run_dir: Path) -> tuple[VLM, Path | None]:
    """The model a fine-tune of `vlm` (as it is now) on `samples` under `config` gives: found in
    `cache_dir`'s index and loaded, or `train()`'s, a `finetune` into `run_dir` (then indexed);
    and where it was found (None: trained). Without a cache_dir, under LoRA or in several processes,
    always `train()`."""
    index, key, record = _looked_up(vlm, samples, config, cache_dir, INDEX_NAME)
    if record:
        found = Path(record["model"])
        log.info("loading the fine-tune in %s (the same weights, samples and settings) instead of training", found)
        return VLM.load(found, trust_remote_code=config.trust_remote_code), found
    model = train()
    if index:
        index.add(key, saved_model_dir(run_dir, config))
    return model, None


def trained_in_place_or_found(vlm: VLM, samples: Sequence[Sample], config: TrainConfig,
                              cache_dir: str | Path | None, train: Callable[[], int]) -> tuple[int, Path | None]:
    """`vlm` fine-tuned in place on `samples` under `config`: its weights found in `cache_dir`'s
    index and loaded into it, or `train()` run (it returns its optimizer steps) and the weights it
    left saved there (safetensors, under WEIGHTS_DIR). Returns the steps, and where the weights were
    found (None: trained). Without a cache_dir, under LoRA or in several processes, always
    `train()`, nothing saved."""
    index, key, record = _looked_up(vlm, samples, config, cache_dir, WEIGHTS_INDEX_NAME)
    if record:
        found = Path(record["model"])
        try:
            load_whole(vlm.model, found)
        except (OSError, ValueError, safetensors.SafetensorError) as exc:  # cut short, say
            log.warning("could not load %s (%s: %s); training instead", found, type(exc).__name__, exc)
        else:
            log.info("loaded the weights in %s (the same weights, samples and settings) instead of training", found)
            return int(record["steps"]), found
    steps = train()
    if index:
        path = Path(cache_dir) / WEIGHTS_DIR / f"{key[:16]}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        # written whole, then renamed into place: a process loading it never reads a file being written
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        safetensors.torch.save_model(vlm.model, str(partial))
        os.replace(partial, path)
        index.add(key, path, steps=steps)
    return steps, None


class WarmUps:
    """A grid's warm-ups, run as a judging defense's `run_warm_up` (byorn.in_place.RunWarmUp): each one
    found in `cache_dir` and loaded, or run and saved there; `loaded` lists where each came from."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.cache_dir = cache_dir
        self.loaded: list[str] = []

    def __call__(self, vlm: VLM, samples: Sequence[Sample], config: TrainConfig, fine_tune: Callable[[], int]) -> int:
        steps, found = trained_in_place_or_found(vlm, samples, config, self.cache_dir, fine_tune)
        if found:
            self.loaded.append(str(found))
        return steps


def load_whole(model: torch.nn.Module, path: Path) -> None:
    """Load a weights file into `model`, all of it or nothing: every tensor is checked against the
    model's own before any is copied (torch copies the matching ones before it reports a mismatch,
    which would leave a warm-up to train on from half-loaded weights). A tensor the file leaves out
    must share its storage with one it holds (tied weights, which safetensors saves once)."""
    weights = safetensors.torch.load_file(path)
    own = model.state_dict()
    if wrong := [k for k, t in weights.items() if k not in own or own[k].shape != t.shape]:
        raise ValueError(f"{len(wrong)} tensor(s) of another name or shape, {wrong[0]!r} first")
    held = {own[k].untyped_storage().data_ptr() for k in weights}
    if missing := [k for k in own if k not in weights and own[k].untyped_storage().data_ptr() not in held]:
        raise ValueError(f"{len(missing)} tensor(s) missing, {missing[0]!r} first")
    model.load_state_dict(weights, strict=False)


def _looked_up(vlm: VLM, samples: Sequence[Sample], config: TrainConfig, cache_dir: str | Path | None,
               name: str) -> tuple[TrainedModels | None, str, dict | None]:
    """The index `name` in `cache_dir`, this fine-tune's key and its record there; no index (and
    nothing found) without a cache_dir, under LoRA or in several processes."""
    if not cache_dir or config.lora or world_size() > 1:
        return None, "", None
    index = TrainedModels(cache_dir, name)
    key = training_key(vlm, samples, config)
    return index, key, index.find(key)
