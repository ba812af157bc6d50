"""Reproduce byorn-tiny: train tokenizer, build the model, pretrain on fresh shapes scenes, save."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from byorn.config import PretrainConfig, save_config
from byorn.models.tiny import TinyConfig, build_tiny, tiny_config_dict
from byorn.fileio import remove_if_empty
from byorn.train import ByornTrainer, SampleDataset, collate_samples, training_arguments, write_log
from byorn.worlds import shapes

# Scene seeds for pretraining start here; test scenes (downstream_samples, quality checks) use
# other salts, so no pretraining scene is ever evaluated on.
PRETRAIN_SEED_BASE = 10_000_000


def pretrain(out_dir: str | Path, config: PretrainConfig, tiny: TinyConfig = TinyConfig()) -> Path:
    """Pretrain byorn-tiny from scratch and save it as an ordinary HF model directory."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / "pretrain_config.yaml")
    torch.manual_seed(config.seed)
    base = PRETRAIN_SEED_BASE + config.seed * 1_000_000_000

    def sample(index: int):
        return shapes.pretraining_sample(base + index)

    # The tokenizer learns from the same rendered chat text the model sees, so words at the
    # start of a response get their space-prefixed tokens.
    draft = build_tiny(["x"], tiny, seed=config.seed)
    corpus = [draft.full_text(s.instruction, s.response) for s in map(sample, range(config.tokenizer_corpus))]
    vlm = build_tiny(corpus, tiny, seed=config.seed)

    args = training_arguments(out_dir / "trainer", batch_size=config.batch_size, learning_rate=config.learning_rate,
                              warmup=config.warmup, seed=config.seed, logging_steps=config.logging_steps,
                              max_steps=config.steps)
    dataset = SampleDataset(sample, length=config.steps * config.batch_size)
    trainer = ByornTrainer(model=vlm.model, args=args, train_dataset=dataset, data_collator=collate_samples, vlm=vlm)
    started = time.perf_counter()
    trainer.train()
    wall_s = time.perf_counter() - started

    vlm.model.save_pretrained(str(out_dir), safe_serialization=True)
    vlm.processor.save_pretrained(str(out_dir))
    write_log(trainer, out_dir / "pretrain_log.jsonl")
    remove_if_empty(out_dir / "trainer")  # the Trainer's scratch folder; nothing is saved there
    (out_dir / "byorn_tiny.json").write_text(json.dumps({"architecture": tiny_config_dict(tiny),
                                                         "pretrain_wall_s": round(wall_s, 1)}, indent=2))
    return out_dir
