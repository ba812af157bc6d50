"""Shared fixtures: a small, randomly initialised byorn-tiny built in process (offline, ~0.1 s).

The tokenizer is trained the way `byorn.pretrain` trains it: on the rendered chat text (prompt +
response + "</s>") of pretraining and downstream samples, so it sees the LLaVA chat layout.
"""

from __future__ import annotations

import copy
import dataclasses
import os

# Offline before anything imports huggingface_hub: nothing in the tests may download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

# The models here are tiny, so a second thread gains nothing; and with two threads on a 2-core
# machine that is busy with anything else (OpenMP spin-waits), a forward pass was measured ~150x
# slower (0.26 s vs 0.0015 s).
torch.set_num_threads(1)

# Small enough that a forward pass over a batch takes milliseconds, big enough to be a real LLaVA
# (CLIP tower + projector + Llama) with every code path of the shipped model.
SMALL_TINY = dict(vision_hidden=32, vision_layers=1, vision_heads=2, text_hidden=32, text_layers=1, text_heads=2,
                  text_intermediate=64, vocab_size=400)
CORPUS_PRETRAIN = 300
CORPUS_DOWNSTREAM = 60


@pytest.fixture(scope="session")
def tiny_config():
    from byorn.models.tiny import TinyConfig

    return TinyConfig(**SMALL_TINY)


@pytest.fixture(scope="session")
def tiny_corpus(tiny_config) -> list[str]:
    from byorn.models.tiny import build_tiny
    from byorn.worlds import shapes

    draft = build_tiny(["x"], tiny_config, seed=0)  # only its chat template is used
    samples = [shapes.pretraining_sample(i) for i in range(CORPUS_PRETRAIN)]
    samples += shapes.downstream_samples(CORPUS_DOWNSTREAM, seed=0)
    return [draft.full_text(s.instruction, s.response) for s in samples]


@pytest.fixture(scope="session")
def tiny_vlm(tiny_corpus, tiny_config):
    """One shared model. Read only: tests that train, wrap or change it take `tiny_vlm_factory()`."""
    from byorn.models.tiny import build_tiny

    return build_tiny(tiny_corpus, tiny_config, seed=0)


@pytest.fixture(scope="session")
def tiny_vlm_factory(tiny_vlm, tiny_config):
    """`factory()` -> a fresh copy of `tiny_vlm` (same weights, same tokenizer, own model object);
    `factory(text_layers=2, ...)` -> a new random model with another architecture, same tokenizer."""
    from byorn.models.hf import VLM
    from byorn.models.tiny import build_model, build_processor

    def factory(seed: int = 0, **overrides):
        if not overrides and seed == 0:
            return VLM(copy.deepcopy(tiny_vlm.model), copy.deepcopy(tiny_vlm.processor))
        config = dataclasses.replace(tiny_config, **overrides)
        tokenizer = copy.deepcopy(tiny_vlm.tokenizer)
        return VLM(build_model(tokenizer, config, seed), build_processor(tokenizer, config))

    return factory


@pytest.fixture
def fresh_vlm(tiny_vlm_factory):
    return tiny_vlm_factory()
