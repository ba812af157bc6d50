"""How far one fine-tuning's lesson score moves by itself, with nothing defended.

    OMP_NUM_THREADS=1 python benchmarks/explore/lesson_noise.py benchmarks/lessons_yesno.yaml \
        --out benchmarks/results/lesson_noise.jsonl

A lesson grid's clean training set of seed 0, fine-tuned undefended with its training settings: with
training seeds 0-3 (the order of the batches; seed 0 is the grid's own `none` cell, which this
reproduces), and with training seed 0 on the set less 50 samples drawn at random (what a defense
that leaves 5 % out changes, whatever it leaves out). One row per fine-tuning: the lesson score on
the grid's 200 clean test inputs. The lesson grids' bounds (95 % of the reference, seed by seed) are
read against this spread.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import tempfile
from pathlib import Path

from byorn.bench import load_grid
from byorn.evaluate import evaluate_clean
from byorn.fileio import append_jsonl
from byorn.models import load_vlm
from byorn.scoring import checkpoint_label
from byorn.train import finetune

TRAINING_SEEDS = (0, 1, 2, 3)
DROPS = (1, 2)  # seeds of the random draws of 50 samples left out
LEFT_OUT = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grids", nargs="+", type=Path, help="lesson grid configs (benchmarks/lessons_*.yaml)")
    parser.add_argument("--out", required=True, type=Path, help="JSON lines (appended)")
    args = parser.parse_args()
    for path in args.grids:
        grid = load_grid(path)
        clean, test = grid.task_samples(grid.n_train, 0, "train"), grid.task_samples(grid.n_test, 0, "test")
        runs = [(seed, None) for seed in TRAINING_SEEDS] + [(0, drop) for drop in DROPS]
        for training_seed, drop in runs:
            gone = set(random.Random(drop).sample(range(len(clean)), LEFT_OUT)) if drop is not None else set()
            samples = [s for i, s in enumerate(clean) if i not in gone]
            vlm = load_vlm(grid.train.model)
            label = checkpoint_label(grid.train.model, vlm)
            with tempfile.TemporaryDirectory() as scratch:
                finetune(vlm, samples, dataclasses.replace(grid.train, seed=training_seed), scratch)
            score = evaluate_clean(vlm, test)["lesson_score"]
            row = {"lesson": grid.task, "data_seed": 0, "training_seed": training_seed, "left_out": len(gone),
                   "drop_seed": drop, "n_train": len(samples), "lesson_score": score, "model": label}
            append_jsonl(args.out, row)
            print(row, flush=True)


if __name__ == "__main__":
    main()
