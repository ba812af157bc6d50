"""End-to-end jobs built from the library's parts: data resolution and the demo."""

from __future__ import annotations

from pathlib import Path

from byorn.bench import AttackSpec, DefenseSpec, GridConfig, run_cell
from byorn.config import TrainConfig
from byorn.data import Sample
from byorn.worlds import WORLDS

DEMO_ATTACK = AttackSpec("multimodal", "fixed")
DEMO_RATE = 0.1
DEMO_ROWS = (("no defense", "none"), ("BYORn", "byorn"), ("clean oracle (poison removed)", "oracle"))
# Full fine-tuning: byorn-tiny with LoRA on its attention learns the trigger but cannot spell a
# target made of words it never produced in pretraining (benchmarks/attacks.yaml says more).
DEMO_TRAINING = TrainConfig(lora=False, learning_rate=5e-4, epochs=3, batch_size=16, logging_steps=20)


def resolve_data(spec: str, *, n: int, seed: int, split: str, skipped: list[str] | None = None,
                 image_folder: str | None = None) -> list[Sample]:
    """A world's downstream task: 'shapes' the built-in one, 'flickr8k:FOLDER' the Flickr8k
    archive-note task (n photos of the dev split for training, of the test split otherwise);
    anything else is a data file, whose image paths are relative to `image_folder` (default: the
    file's own folder).

    skipped: None fails on a bad record; a list skips bad records and collects their errors.
    """
    name, _, folder = spec.partition(":")
    if name in WORLDS:
        if image_folder is not None:
            raise ValueError(f"--image-folder is for data files; {spec} is a built-in world")
        if WORLDS[name].needs_data and not folder:
            raise ValueError(f"--data {spec}: the {name} world reads a folder; write {name}:FOLDER")
        if folder and not WORLDS[name].needs_data:
            raise ValueError(f"--data {spec}: the {name} world is built in and reads no folder; write {name}")
        return WORLDS[name].downstream(n, seed, split, folder, "describe")
    from byorn.formats import LoadChecks, load_dataset

    return load_dataset(spec, image_folder, checks=LoadChecks(skipped=skipped))


def run_demo(out_dir: Path, seed: int = 0, n_train: int = 1000, n_test: int = 200) -> list[dict]:
    """The shapes downstream set poisoned with the multimodal trigger (10 %), fully fine-tuned
    without defense, with BYORn, and on the clean samples only; one result row each."""
    grid = GridConfig([DEMO_ATTACK], [DefenseSpec(d) for _, d in DEMO_ROWS], [DEMO_RATE], [seed], n_train, n_test,
                      DEMO_TRAINING)
    return [{"name": name, **run_cell(DEMO_ATTACK, spec, DEMO_RATE, seed, grid, out_dir / spec.name)}
            for (name, _), spec in zip(DEMO_ROWS, grid.defenses)]
