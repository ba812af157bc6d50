"""A replacement writer that has seen the new answer style, and not the poisons.

The frozen reference answers in its pretraining style: a flagged poison's input paired with that
answer teaches against the backdoor only weakly when the downstream answers look different (a
"describe" answer with the trigger still says "square" in the downstream style), and the reference's
own mistakes are then learnt. The model being fine-tuned answers in the new style but has half
learnt the backdoor from the poisons the judgement missed, and writes it into its answers.

The warmed reference sits between them: the pretrained model, fine-tuned briefly on the samples the
judgement found least suspicious (the poisons it ranks high, even those under the cut, are not
among them), writes every replacement once, batched, before training; then, with BYORn's default
warm_start, the fine-tuning goes on from the warmed weights, or (warm_start=false, byorn clean)
its weights are put back exactly and the fine-tuning starts from the pretrained model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate.utils import extract_model_from_parallel
from peft import PeftModel

from byorn.config import TrainConfig
from byorn.data import Sample
from byorn.distributed import weights_sharded
from byorn.models.hf import VLM
from byorn.train import train_steps
from byorn.trained import trained_in_place_or_found


def least_suspicious(scores: Sequence[float], flagged: Sequence[bool], share: float) -> list[int]:
    """Indices of the `share` of all samples with the lowest scores, none of them flagged."""
    order = sorted((i for i, hit in enumerate(flagged) if not hit), key=lambda i: scores[i])
    return order[: round(share * len(scores))]


@dataclass(frozen=True)
class WarmUp:
    """What a warm-up did: its optimizer steps, and where its weights were loaded from when a
    benchmark grid had warmed the same model on the same samples before (byorn.trained)."""

    steps: int
    loaded_from: str | None = None


@contextlib.contextmanager
def warmed_reference(vlm: VLM, samples: Sequence[Sample], train: TrainConfig, epochs: float,
                     scratch: Path, keep: bool = False, cache_dir: str | Path | None = None) -> Iterator[WarmUp]:
    """Inside the block `vlm` is the pretrained model fine-tuned for `epochs` on `samples` (with
    `train`'s optimizer settings, LoRA or full); the block gets the warm-up (`WarmUp`).
    Afterwards its weights are what they were, unless `keep`: then the fine-tuning goes on from
    the warmed weights (and, under LoRA, its adapter); if the block raises, a kept full fine-tune
    is not undone (no copy was kept aside).

    cache_dir: a benchmark grid's shared folder: a full fine-tune's warmed weights are saved there,
    and loaded instead of trained when the same warm-up comes again (score-and-drop and BYORn warm
    up alike on the same poisoned set)."""
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
        steps, found = trained_in_place_or_found(vlm, samples, config, cache_dir,
                                                 lambda: train_steps(vlm, samples, config, scratch).state.global_step)
        _untouched_by_the_trainer(vlm, training, attributes)
        yield WarmUp(steps, str(found) if found else None)
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
