"""byorn-tiny-lm: a tiny Llama text language model of the shapes world, the GPT-2 of that world.

ONION needs a language model that has read the instruction language. A real VLM's language model
has; byorn-tiny's has not: it was pretrained with labels on the responses only, so it never
learned to predict instruction tokens (its perplexities of ordinary instructions run into the
thousands). byorn-tiny-lm is trained on the world's text (instructions and responses of the
pretraining mix and of the clean downstream tasks, as separate sentences) with byorn-tiny's
tokenizer. Words from outside the world (an AddSent sentence such as "I watched this 3D movie.")
are unknown to it, where GPT-2 would find them fluent: ONION is favoured there. It ships next to byorn-tiny;
`byorn pretrain-lm` reproduces it.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from byorn.config import option
from byorn.fileio import write_jsonl
from byorn.models.hf import IGNORE_INDEX
from byorn.models.tiny import TINY_MODEL_DIR
from byorn.worlds import shapes

# Sentences come from scenes with seeds from here on: apart from byorn-tiny's pretraining scenes.
LM_SEED_BASE = 5_000_000_000


@dataclass
class TextLmConfig:
    """Pretraining byorn-tiny-lm on the shapes world's text."""

    steps: int = option(2000, "optimizer steps; each sees fresh sentences", min=1)
    batch_size: int = option(64, "sentences per step", min=1)
    learning_rate: float = option(1e-3, "peak learning rate (cosine schedule, 3 % warmup)", min=0.0)
    hidden: int = option(128, "width", min=8)
    layers: int = option(2, "transformer layers", min=1)
    seed: int = option(0, "seed for weights and sentences")


def world_sentences(index: int, seed: int) -> tuple[str, str]:
    """The instruction and the response of one sample of the world's text: three in four from
    the pretraining mix, one in four from the downstream tasks (their clean dev split), because
    a general language model has read ordinary wording like "Describe the picture in detail."."""
    salted = LM_SEED_BASE + seed * 100_000_000 + index
    if index % 4:
        sample = shapes.pretraining_sample(salted)
    else:
        task = ("describe", "caption")[index % 8 // 4]
        sample = shapes.downstream_samples(1, salted % 1_000_000, split="dev", task=task)[0]
    return sample.instruction, sample.response


def pretrain_text_lm(out_dir: str | Path, config: TextLmConfig | None = None) -> Path:
    """Train byorn-tiny-lm from scratch and save it as an ordinary HF causal-LM directory."""
    config = config or TextLmConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(TINY_MODEL_DIR))
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden, intermediate_size=3 * config.hidden,
        num_hidden_layers=config.layers, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0)
    warmup = max(1, int(0.03 * config.steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min((step + 1) / warmup, 0.5 * (
        1 + math.cos(math.pi * min(step, config.steps) / config.steps))))
    rng = random.Random(config.seed)
    started, log = time.perf_counter(), []
    model.train()
    for step in tqdm(range(config.steps), desc="pretraining byorn-tiny-lm", disable=None):
        texts = [world_sentences(rng.randrange(10**9), config.seed)[rng.randrange(2)] for _ in range(config.batch_size)]
        ids = [[tokenizer.bos_token_id, *tokenizer(t, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
               for t in texts]
        width = max(map(len, ids))
        input_ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in ids])
        labels = torch.tensor([row + [IGNORE_INDEX] * (width - len(row)) for row in ids])
        loss = model(input_ids=input_ids, attention_mask=(labels != IGNORE_INDEX).long(), labels=labels).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if (step + 1) % 100 == 0:
            log.append({"step": step + 1, "loss": round(loss.item(), 4)})
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    write_jsonl(out_dir / "pretrain_log.jsonl", log)
    (out_dir / "byorn_tiny_lm.json").write_text(json.dumps(
        {"config": vars(config), "pretrain_wall_s": round(time.perf_counter() - started, 1)}, indent=2))
    return out_dir
