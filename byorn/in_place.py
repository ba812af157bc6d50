"""A fine-tune of a model in place that can be put back: BYORn's warm-up (byorn.defenses.byorn).

Inside the block the model is fine-tuned; afterwards its weights are what they were (a fresh LoRA
adapter removed; otherwise the trained tensors copied aside on the CPU, all of them under full
fine-tuning: one copy of the weights), unless the caller keeps them (BYORn's warm_start: the
fine-tuning goes on from them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from accelerate.utils import extract_model_from_parallel
from peft import PeftModel

from byorn.config import TrainConfig
from byorn.data import Sample
from byorn.distributed import weights_sharded
from byorn.models.hf import VLM
from byorn.train import train_steps

# How the fine-tune is run: (model, samples, settings, the fine-tune itself) -> its optimizer
# steps. The default runs it; a benchmark grid passes one that loads a fine-tune it ran before.
RunWarmUp = Callable[[VLM, Sequence[Sample], TrainConfig, Callable[[], int]], int]


def train_warm_up(vlm: VLM, samples: Sequence[Sample], config: TrainConfig, fine_tune: Callable[[], int]) -> int:
    return fine_tune()


@contextlib.contextmanager
def warm_up(vlm: VLM, samples: Sequence[Sample], train: TrainConfig, epochs: float, scratch: Path,
            keep: bool = False, run: RunWarmUp = train_warm_up) -> Iterator[int]:
    """Inside the block `vlm` is the pretrained model fine-tuned for `epochs` on `samples` (with
    `train`'s optimizer settings, LoRA or full); the block gets the warm-up's optimizer steps.
    Afterwards its weights are what they were, unless `keep`: then the fine-tuning goes on from the
    warmed weights (and, under LoRA, its adapter); if the block raises, a kept full fine-tune is not
    undone (no copy was kept aside)."""
    if weights_sharded():
        raise ValueError("the warmed reference is fine-tuned and then put back, which FSDP and DeepSpeed ZeRO-3 "
                         "weights (sharded between processes) do not allow: use -d rejudge=false -d "
                         "generator=reference there, or DDP / ZeRO-2")
    config = dataclasses.replace(train, epochs=epochs, max_steps=-1, save_steps=0, report_to="none")
    attaches_lora = config.lora and not isinstance(vlm.model, PeftModel)
    # With a fresh LoRA adapter, removing it restores the model; otherwise the trained tensors are
    # copied aside, on the CPU (all of them under full fine-tuning: one copy of the weights).
    saved = {} if attaches_lora or keep else {name: p.detach().to("cpu", copy=True) for name, p in
                                              vlm.model.named_parameters() if p.requires_grad}
    trainable = {name: p.requires_grad for name, p in vlm.model.named_parameters()}  # PEFT freezes the base
    training, attributes = vlm.model.training, dict(vars(vlm.model.config))  # the Trainer sets config.use_cache
    kept = False
    try:
        # the trainer goes with its optimizer state as train() returns, before the real fine-tuning makes its own
        steps = run(vlm, samples, config, lambda: train_steps(vlm, samples, config, scratch).state.global_step)
        _untouched_by_the_trainer(vlm, training, attributes)
        yield steps
        kept = keep
    finally:
        gc.collect()
        shutil.rmtree(scratch, ignore_errors=True)
        if not kept:
            _restore(vlm, attaches_lora, saved, trainable)


def _untouched_by_the_trainer(vlm: VLM, training: bool, config_attributes: dict) -> None:
    """Undo what a Trainer leaves on the model besides its weights (mixed precision's autocast
    around `forward`, the config's attributes as they were, `use_cache` among them; training mode):
    the warmed reference then scores and answers as the model it is, and as one whose warm-up was
    loaded from a grid's cache, where no Trainer ran (the score cache's fingerprint reads the config)."""
    extract_model_from_parallel(vlm.model, keep_fp32_wrapper=False)
    attributes = vars(vlm.model.config)
    attributes.clear()
    attributes.update(config_attributes)
    vlm.model.train(training)


def _restore(vlm: VLM, attaches_lora: bool, saved: dict[str, torch.Tensor], trainable: dict[str, bool]) -> None:
    """The weights and trainable flags as they were before the warm-up."""
    if attaches_lora and isinstance(vlm.model, PeftModel):  # not if attaching it failed
        vlm.model = vlm.model.unload()  # the LoRA layers out, nothing merged
    with torch.no_grad():
        for name, p in vlm.model.named_parameters():
            if name in saved:
                p.copy_(saved[name])
            p.requires_grad_(trainable[name])
