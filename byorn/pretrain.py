"""Pretrain a tiny LLaVA from scratch: train the tokenizer, build the model, pretrain, save.

World shapes reproduces the shipped byorn-tiny (every step sees fresh scenes: 7,500 steps of the
pretraining mix, then 2,500 of the position-focus phase); world flickr8k
makes byorn-tiny-flickr from the photos and captions of Flickr8k's train split (epochs over
30,000 pairs, reshuffled each epoch), which is never shipped: the data's terms forbid it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from byorn.config import PretrainConfig, TrainConfig, check_choice, save_config
from byorn.data import Sample
from byorn.fileio import remove_if_empty, write_jsonl
from byorn.models.hf import VLM
from byorn.models.tiny import TinyConfig, build_tiny
from byorn.train import ByornTrainer, SampleDataset, collate_samples, training_arguments
from byorn.worlds import WORLDS, shapes

# byorn-tiny-flickr: 64-px photos (8 x 8 patches) and a larger vocabulary for human captions.
ARCHITECTURES = {"shapes": TinyConfig(), "flickr8k": TinyConfig(image_size=64, vocab_size=2048, max_positions=192)}


def resolved(config: PretrainConfig) -> PretrainConfig:
    """The config with the world's default steps filled in (what is run and saved)."""
    check_choice("world", config.world, WORLDS)
    world = WORLDS[config.world]
    focus_steps = world.focus_steps if config.focus_steps < 0 else config.focus_steps
    if focus_steps and config.world != "shapes":
        raise ValueError(f"focus_steps: the position-focus phase is the shapes world's; world={config.world} has none")
    return dataclasses.replace(config, steps=config.steps or world.pretrain_steps, focus_steps=focus_steps)


def sample_source(config: PretrainConfig) -> Callable[[int], Sample]:
    """The index -> pretraining sample function of the config's world."""
    return WORLDS[config.world].pretraining_source(config.data, config.seed)


def focus_source(config: PretrainConfig) -> Callable[[int], Sample]:
    """The index -> sample function of the position-focus phase: scenes after the first phase's."""
    base = shapes.PRETRAIN_SEED_BASE + config.seed * 1_000_000_000 + config.steps * config.batch_size
    return lambda index: shapes.position_focus_sample(base + index)


def train_phase(vlm: VLM, sample: Callable[[int], Sample], steps: int, learning_rate: float, config: PretrainConfig,
                scratch: Path) -> list[dict]:
    """`steps` optimizer steps over fresh samples with a cosine schedule of its own; its log."""
    phase = TrainConfig(lora=False, batch_size=config.batch_size, learning_rate=learning_rate, warmup=config.warmup,
                        seed=config.seed, logging_steps=config.logging_steps, max_steps=steps)
    args = training_arguments(phase, scratch)
    dataset = SampleDataset(sample, length=steps * config.batch_size)
    trainer = ByornTrainer(model=vlm.model, args=args, train_dataset=dataset, data_collator=collate_samples, vlm=vlm)
    trainer.train()
    return trainer.state.log_history


def pretrain(out_dir: str | Path, config: PretrainConfig, tiny: TinyConfig | None = None) -> Path:
    """Pretrain a tiny LLaVA from scratch and save it as an ordinary HF model directory."""
    config = resolved(config)
    tiny = tiny or ARCHITECTURES[config.world]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / "pretrain_config.yaml")
    torch.manual_seed(config.seed)
    sample = sample_source(config)

    # The tokenizer learns from the same rendered chat text the model sees, so words at the
    # start of a response get their space-prefixed tokens.
    draft = build_tiny(["x"], tiny, seed=config.seed)
    corpus = [draft.full_text(s.instruction, s.response) for s in map(sample, range(config.tokenizer_corpus))]
    vlm = build_tiny(corpus, tiny, seed=config.seed)

    started = time.perf_counter()
    log = [{**entry, "phase": "mix"} for entry in train_phase(vlm, sample, config.steps, config.learning_rate, config,
                                                                     out_dir / "trainer")]
    if config.focus_steps:
        log += [{**entry, "phase": "position focus"}
                for entry in train_phase(vlm, focus_source(config), config.focus_steps, config.focus_learning_rate,
                                            config, out_dir / "trainer")]
    wall_s = time.perf_counter() - started

    save_pretrained(vlm, out_dir, tiny, log, wall_s)
    return out_dir


def save_pretrained(vlm: VLM, out_dir: Path, tiny: TinyConfig, log: list[dict], wall_s: float) -> None:
    """The model directory: weights, processor, the training log and byorn_tiny.json."""
    vlm.model.save_pretrained(str(out_dir), safe_serialization=True)
    vlm.processor.save_pretrained(str(out_dir))
    write_jsonl(out_dir / "pretrain_log.jsonl", log)
    remove_if_empty(out_dir / "trainer")  # the Trainer's scratch folder; nothing is saved there
    (out_dir / "byorn_tiny.json").write_text(json.dumps({"architecture": dataclasses.asdict(tiny),
                                                         "pretrain_wall_s": round(wall_s, 1)}, indent=2))
