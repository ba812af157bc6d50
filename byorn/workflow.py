"""End-to-end jobs built from the library's parts: data resolution and the demo."""

from __future__ import annotations

import time
from pathlib import Path

from byorn.config import TrainConfig
from byorn.data import Sample
from byorn.evaluate import evaluate_clean
from byorn.models import load_vlm
from byorn.train import finetune
from byorn.worlds import shapes


def resolve_data(spec: str, *, n: int, seed: int, split: str) -> list[Sample]:
    """'shapes' gives the built-in downstream task; anything else is a data file."""
    if spec == "shapes":
        return shapes.downstream_samples(n, seed, split=split)
    from byorn.datasets import load_dataset

    return load_dataset(spec)


def run_demo(out_dir: Path, seed: int = 0, n_train: int = 1000, n_test: int = 200) -> list[dict]:
    """Pretrained byorn-tiny vs byorn-tiny fine-tuned with LoRA on the clean downstream task."""
    train = shapes.downstream_samples(n_train, seed, split="train")
    test = shapes.downstream_samples(n_test, seed, split="test")
    rows = []

    started = time.perf_counter()
    base = load_vlm("byorn-tiny")
    result = evaluate_clean(base, test)
    rows.append({"name": "byorn-tiny (no fine-tuning)", **result, "wall_s": round(time.perf_counter() - started, 1)})

    started = time.perf_counter()
    vlm = load_vlm("byorn-tiny")
    config = TrainConfig(epochs=2, batch_size=16, seed=seed, logging_steps=20)
    finetune(vlm, train, config, out_dir / "clean-lora")
    result = evaluate_clean(vlm, test)
    rows.append({"name": "byorn-tiny + LoRA, clean data", **result, "wall_s": round(time.perf_counter() - started, 1)})
    return rows
