"""TCAP (arXiv 2601.21692): a model fine-tuned on poisoned data shifts how its heads split their
attention between the prompt's parts on the poisoned samples, and the shift is visible per head.

1. Fine-tune a probe copy of the model on the training set as given (as BYE does).
2. For each training sample, the attention of the last prompt token (the one that predicts the
   first answer token) in every head of the last `layers` share of the language model, summed
   over three parts of the prompt: the image tokens, the instruction's tokens, and the rest
   ("system": role tags, separators, special tokens). Its share to the system part is the feature,
   min-max scaled per head over the samples.
3. Per head, a 1-D Gaussian mixture with 1 to 5 components, chosen by AIC; the heaviest
   components that together hold half the weight are the background (clean), the rest the
   target. A head's separation is 1 / (overlap + eps), the overlap being the area under the
   smaller of the weighted target and background densities.
4. The `heads` most separated heads vote: a sample gets a head's vote when its posterior of the
   target components is above `vote`. Dawid-Skene EM treats the heads as annotators of unknown
   accuracy; a sample is flagged when its posterior of being poisoned is above 0.5. Flagged
   samples are dropped and the real fine-tune runs on the rest.

Where this reading of the paper had to choose (its own text gives no values): the last prompt
token's attention stands for "the first generated token's"; the instruction's tokens are the
query and everything else unpadded that is not an image token is system (this project's prompts
carry no system message, so system is the template around them); the `layers` (0.5), `heads` (8),
`vote` (0.5) and eps (1e-3) defaults; the overlap is integrated on a grid of 512 points; Dawid-
Skene starts from the majority vote and runs to convergence (at most 100 rounds). A head whose
mixture has one component is not separated (separation 0); no separated head flags nothing.
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
from byorn.defenses.configs import TcapConfig
from byorn.models.hf import VLM

MAX_COMPONENTS = 5
OVERLAP_EPS = 1e-3
GRID_POINTS = 512


class Tcap(DroppingDefense):
    """TCAP: drop the samples that the most separated heads' attention shares vote poisoned."""

    name = "tcap"
    config_class = TcapConfig
    config: TcapConfig

    def judge(self, vlm: VLM, samples: Sequence[Sample], run_dir: Path, train: TrainConfig | None) -> Verdict:
        probe, found = probe_finetune(vlm, samples, train, self.config.probe_epochs, run_dir / "tcap_probe",
                                      self.config.cache_dir)
        self.loaded_from = str(found) if found else None
        return judged_on_images(samples, lambda shown: decide(
            system_shares(probe, shown, self.config.batch_size), self.config))


def system_shares(vlm: VLM, samples: Sequence[Sample], batch_size: int = 32) -> np.ndarray:
    """[samples, layers, heads]: the share of the last prompt token's attention that goes to the
    prompt's system part (neither image nor instruction nor padding)."""
    image_token = vlm.image_token_id

    def shares(batch: dict, chunk: Sequence[Sample], attentions: tuple[torch.Tensor, ...]) -> torch.Tensor:
        ids = batch["input_ids"]
        query = vlm.instruction_mask(chunk, ids.shape[1]).to(ids.device)
        system = (batch["attention_mask"] == 1) & (ids != image_token) & ~query  # [B, T]
        weights = torch.stack([layer[:, :, -1, :] for layer in attentions], dim=1).float()  # [B, L, H, T]
        return (weights * system[:, None, None, :]).sum(-1) / weights.sum(-1).clamp(min=1e-12)

    return read_last_token_attention(vlm, samples, shares, batch_size)


def head_separation(values: np.ndarray, seed: int = 0) -> tuple[float, np.ndarray]:
    """One head's min-max scaled feature -> (separation, each sample's posterior of the target
    components). A mixture of one component separates nothing: (0, zeros)."""
    from sklearn.mixture import GaussianMixture

    x = values.reshape(-1, 1)
    distinct = len(np.unique(x))
    if distinct < 2:
        return 0.0, np.zeros(len(values))
    fits = [GaussianMixture(n_components=k, random_state=seed).fit(x)
            for k in range(1, min(MAX_COMPONENTS, distinct) + 1)]
    mixture = min(fits, key=lambda m: m.aic(x))
    if mixture.n_components == 1:
        return 0.0, np.zeros(len(values))
    weights, means = mixture.weights_, mixture.means_.ravel()
    sigmas = np.sqrt(mixture.covariances_.ravel())
    target = _minority(weights)
    grid = np.linspace(-0.5, 1.5, GRID_POINTS)
    densities = weights[:, None] * np.exp(-0.5 * ((grid - means[:, None]) / sigmas[:, None]) ** 2) / \
        (sigmas[:, None] * np.sqrt(2 * np.pi))  # [K, grid]
    overlap = np.trapezoid(np.minimum(densities[target].sum(0), densities[~target].sum(0)), grid)
    return 1.0 / (overlap + OVERLAP_EPS), mixture.predict_proba(x)[:, target].sum(1)


def _minority(weights: np.ndarray) -> np.ndarray:
    """The target components: what is left once the heaviest components, taken in turn, hold at
    least half the weight (the background). The target is a minority, as poison is."""
    order = np.argsort(-weights)
    background_count = int(np.searchsorted(np.cumsum(weights[order]), 0.5)) + 1
    target = np.ones(len(weights), dtype=bool)
    target[order[:background_count]] = False
    return target


def dawid_skene(votes: np.ndarray, rounds: int = 100) -> np.ndarray:
    """[samples, annotators] 0/1 votes -> each sample's posterior of class 1 (poisoned), with every
    annotator's sensitivity and specificity and the class prior estimated by EM from the majority vote."""
    posterior = votes.mean(axis=1)
    for _ in range(rounds):
        prior = np.clip(posterior.mean(), 1e-6, 1 - 1e-6)
        hit = (posterior @ votes + 1) / (posterior.sum() + 2)  # P(vote | poisoned), smoothed
        false = ((1 - posterior) @ votes + 1) / ((1 - posterior).sum() + 2)  # P(vote | clean)
        log_poisoned = np.log(prior) + votes @ np.log(hit) + (1 - votes) @ np.log(1 - hit)
        log_clean = np.log(1 - prior) + votes @ np.log(false) + (1 - votes) @ np.log(1 - false)
        updated = 1 / (1 + np.exp(np.clip(log_clean - log_poisoned, -50, 50)))
        if np.abs(updated - posterior).max() < 1e-6:
            return updated
        posterior = updated
    return posterior


def decide(shares: np.ndarray, config: TcapConfig) -> Verdict:
    """[samples, layers, heads] system shares -> each sample's posterior of being poisoned (the
    suspicion), the dropped samples, and the voting heads as (layer, head)."""
    n, n_layers, n_heads = shares.shape
    first = n_layers - max(1, round(config.layers * n_layers))
    candidates = []
    for layer in range(first, n_layers):
        for head in range(n_heads):
            values = shares[:, layer, head]
            span = np.ptp(values)
            scaled = (values - values.min()) / span if span > 0 else np.zeros(n)
            separation, target = head_separation(scaled, config.seed)
            if separation > 0:
                candidates.append((separation, (layer, head), target))
    chosen = sorted(candidates, key=lambda c: -c[0])[: config.heads]
    if not chosen:
        return Verdict([0.0] * n, [False] * n, {"heads": []})
    votes = np.stack([target > config.vote for _, _, target in chosen], axis=1).astype(float)
    posteriors = dawid_skene(votes)
    return Verdict(posteriors.tolist(), [bool(p > 0.5) for p in posteriors], {"heads": [head for _, head, _ in chosen]})
