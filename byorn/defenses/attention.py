"""What the attention-based baselines (BYE, TCAP) share: a probe model fine-tuned on the data as
given, and the attention of each prompt's last token (the one that predicts the first answer
token), read from every language-model layer and head."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from byorn.config import TrainConfig
from byorn.data import Sample
from byorn.defenses.base import Verdict
from byorn.models.hf import VLM, batches, eval_mode
from byorn.train import finetune
from byorn.trained import trained_or_found


def probe_finetune(vlm: VLM, samples: Sequence[Sample], train: TrainConfig | None, epochs: float,
                   run_dir: Path, cache_dir: str = "") -> tuple[VLM, Path | None]:
    """A copy of `vlm` fine-tuned on `samples` (poison included); `vlm` itself is left as it is.
    epochs: 0 means as many as the real fine-tune. cache_dir: where a fine-tune of the same
    weights, samples and settings may be found already (byorn.trained), and this one is kept.
    Also where the probe was found (None: trained here)."""
    if train is None:
        raise ValueError("this defense fine-tunes a probe model first: prepare() needs train=<the TrainConfig>")
    config = dataclasses.replace(train, epochs=epochs or train.epochs)

    def train_probe() -> VLM:
        probe = VLM(copy.deepcopy(vlm.model), vlm.processor)
        finetune(probe, samples, config, run_dir)
        return probe

    return trained_or_found(vlm, samples, config, cache_dir, train_probe, run_dir)


# Per batch: the prompts (an `encode_prompts` batch, on the model's device), the samples, and each
# layer's attention [B, heads, T, T] -> one array row per sample.
AttentionReader = Callable[[dict[str, torch.Tensor], Sequence[Sample], tuple[torch.Tensor, ...]], torch.Tensor]


@torch.no_grad()
def read_last_token_attention(vlm: VLM, samples: Sequence[Sample], read: AttentionReader,
                              batch_size: int = 32) -> np.ndarray:
    """`read` applied to every batch of prompts' attention maps, rows stacked in sample order."""
    model = vlm.model
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")  # sdpa does not return attention weights
    rows = []
    try:
        with eval_mode(model):
            for chunk in batches(samples, batch_size):
                batch = {k: v.to(vlm.device) for k, v in vlm.encode_prompts(chunk).items()}
                attentions = model(**batch, output_attentions=True).attentions  # layers x [B, H, T, T]
                rows.append(read(batch, chunk, attentions).float().cpu())
    finally:
        model.set_attn_implementation(previous)
    return torch.cat(rows).numpy()


def judged_on_images(samples: Sequence[Sample], judge: Callable[[list[Sample]], Verdict]) -> Verdict:
    """`judge`'s verdict on the samples that show an image, for all `samples`: a text-only one has
    no image attention to read (its pattern would set it apart as if it were poison), so it is kept,
    at the least suspicion; details count them."""
    shown = [i for i, s in enumerate(samples) if s.has_image]
    if len(shown) == len(samples):
        return judge(list(samples))
    verdict = judge([samples[i] for i in shown]) if shown else Verdict([], [])
    suspicion, dropped = [min(verdict.suspicion, default=0.0)] * len(samples), [False] * len(samples)
    for k, i in enumerate(shown):
        suspicion[i], dropped[i] = verdict.suspicion[k], verdict.dropped[k]
    return Verdict(suspicion, dropped, {**verdict.details, "text_only_kept": len(samples) - len(shown)})
