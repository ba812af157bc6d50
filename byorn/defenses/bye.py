"""BYE (Rong et al., 2025, "Believe Your Eyes: backdoor purification for MLLMs by attention
entropy"): a model fine-tuned on poisoned data attends to a visual trigger in a sharply focused
way, so the entropy of its attention over the image tokens drops on the poisoned samples.

1. Fine-tune a probe copy of the model on the training set as given (poison included).
2. For each training sample, the attention of the last prompt token over the image tokens in
   every language-model layer (heads averaged, renormalised over the image tokens), and its
   Shannon entropy: one value per sample and layer.
3. Per layer, a two-component Gaussian mixture over the samples' entropies; keep the layers whose
   components separate, |mu0 - mu1| > separation * (sigma0 + sigma1).
4. Each sample's score is its mean entropy over the kept layers; a two-component mixture over the
   scores, and the samples of the lower-entropy component are dropped.
5. The real fine-tune runs on what is left (`training_set`).

No layer separating means no focused attention anywhere: nothing is dropped. BYE looks at the
image only, so a trigger in the text alone leaves the attention over the image unchanged.
The probe needs eager attention (to return attention weights) and a second copy of the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from byorn.config import TrainConfig
from byorn.data import Sample
from byorn.defenses.attention import judged_on_images, probe_finetune, read_last_token_attention
from byorn.defenses.base import DroppingDefense, Verdict
from byorn.defenses.configs import ByeConfig
from byorn.models.hf import VLM


class Bye(DroppingDefense):
    """BYE: drop the samples whose image attention collapses, found by a probe fine-tune."""

    name = "bye"
    config_class = ByeConfig
    config: ByeConfig

    def judge(self, vlm: VLM, samples: Sequence[Sample], run_dir: Path, train: TrainConfig | None) -> Verdict:
        probe, found = probe_finetune(vlm, samples, train, self.config.probe_epochs, run_dir / "bye_probe",
                                      self.config.cache_dir)
        self.loaded_from = str(found) if found else None
        return judged_on_images(samples, lambda shown: decide(
            attention_entropies(probe, shown, self.config.batch_size), self.config.separation, self.config.seed))


def attention_entropies(vlm: VLM, samples: Sequence[Sample], batch_size: int = 32) -> np.ndarray:
    """[samples, layers]: entropy (nats) of the last prompt token's attention over the image tokens,
    heads averaged and renormalised over the image tokens."""
    image_token = vlm.image_token_id

    def entropies(batch: dict, chunk: Sequence[Sample], attentions: tuple[torch.Tensor, ...]) -> torch.Tensor:
        is_image = (batch["input_ids"] == image_token).float()  # [B, T]
        per_layer = []
        for layer in attentions:
            weights = layer[:, :, -1, :].float().mean(dim=1) * is_image  # [B, T]
            p = weights / weights.sum(dim=1, keepdim=True).clamp(min=1e-12)
            per_layer.append(-(p * p.clamp(min=1e-12).log()).sum(dim=1))  # [B]
        return torch.stack(per_layer, dim=1)  # [B, L]

    return read_last_token_attention(vlm, samples, entropies, batch_size)


def _two_clusters(values: np.ndarray, seed: int):
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(n_components=2, random_state=seed).fit(values.reshape(-1, 1))


def separated_layers(entropies: np.ndarray, separation: float, seed: int = 0) -> list[int]:
    """Layers whose two-component mixture has |mu0 - mu1| > separation * (sigma0 + sigma1)."""
    kept = []
    for layer in range(entropies.shape[1]):
        values = entropies[:, layer]
        if np.ptp(values) == 0:  # one value: no second cluster to find
            continue
        mixture = _two_clusters(values, seed)
        mu = mixture.means_.ravel()
        sigma = np.sqrt(mixture.covariances_.ravel())
        if abs(mu[0] - mu[1]) > separation * (sigma[0] + sigma[1]):
            kept.append(layer)
    return kept


def decide(entropies: np.ndarray, separation: float = 2.0, seed: int = 0) -> Verdict:
    """Layer selection, per-sample scores and the dropped (lower-entropy) cluster; the suspicion is
    the negated mean entropy over the kept layers (all layers when none is kept)."""
    layers = separated_layers(entropies, separation, seed)
    scores = entropies[:, layers or slice(None)].mean(axis=1)
    suspicion = (-scores).tolist()  # low entropy: suspicious
    if not layers:
        return Verdict(suspicion, [False] * len(scores), {"layers": []})
    mixture = _two_clusters(scores, seed)
    low = int(np.argmin(mixture.means_.ravel()))
    dropped = mixture.predict(scores.reshape(-1, 1)) == low
    return Verdict(suspicion, [bool(d) for d in dropped], {"layers": layers})
