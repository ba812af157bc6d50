"""How implausible each response is under the reference model, batched and cached.

Shared by BYORn, the baselines and the attacks. Every variant is built on `VLM.score`, so it uses
the exact prompt template of training. Higher always means more implausible:

- mean_nll: mean per-token NLL of the response.
- max_token_nll: the highest per-token NLL; one swapped word stands out even in a long response.
- relative_to_greedy: mean NLL minus the mean NLL of the model's own greedy answer for the same
  input, so inputs that are hard for any answer are not flagged for being hard.
- image_ablated: mean NLL with the true image minus mean NLL with a uniform grey image of the same
  size; a response the image makes less likely scores high.
- image_contradiction: per token, NLL with the true image minus NLL with the grey image, summed
  over the tokens where it is positive: how much the image argues against the response. A swapped
  word ("square" where the image shows a circle) is a token the image contradicts, while an
  unfamiliar but true wording is not; the mean-based scores average that one token away.
- token_surprise: per token, its NLL minus what that same token usually costs in the judged data
  set (the 25th percentile of its NLLs over all its occurrences), summed over the tokens where
  that is positive. A downstream style the reference never saw makes its own words expensive
  everywhere, so they cancel out; a word that is cheap where it is true and expensive here
  (a swapped colour) stands out. It depends on the whole set, so it is computed after all
  samples are scored. Free beside mean_nll: the same forward pass.
- shared_answer: for an answer given word for word (up to case, spacing and end punctuation) to
  several images, the mean image_ablated of those samples in MAD units of the whole set, times the
  square root of their number; 0 for an answer given once. An attacker's fixed target or refusal
  is one answer attached to many images; each sample says little (no one image supports it), but
  together they are a clear verdict, while an answer that truly fits each of its images ("There is
  a red circle on the left side.") pools into a grounded, negative score. Already in z units.

The variants share their forward passes: asking for several scores the true-image pass once and
the grey-image pass at most once. They run in bfloat16 where the hardware computes it natively
(`precision`): scoring is the bulk of what BYORn adds to a fine-tuning, and bfloat16 scores a
float32 model's samples 1.3-1.7x faster on a CPU with AVX512-BF16 (benchmarks/cost.py) in nearly
the same ranking (benchmarks/precision_agreement.py). With LoRA the reference model is the same network with the
adapter disabled: no second copy of the weights. The reference is frozen, so its scores are cached
on disk (`ScoreCache`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from peft import PeftModel
from PIL import Image

from byorn.config import check_choice
from byorn.data import Sample, answer_key
from byorn.distributed import is_main, map_sharded
from byorn.fileio import write_jsonl
from byorn.models.hf import VLM, ResponseScore
from byorn.robust import mad_z
from byorn.score_names import PRECISIONS, VARIANTS

log = logging.getLogger(__name__)

NEUTRAL_GREY = (128, 128, 128)
# token_surprise's baseline: a low quantile of a token's NLLs, so that a poison minority which
# makes a word expensive (a swapped colour in up to about a quarter of its uses) does not raise it.
USUAL_COST_QUANTILE = 25
_NEEDS_GREY = ("image_ablated", "image_contradiction", "shared_answer")
SET_WIDE = ("token_surprise", "shared_answer")  # a sample's score depends on the others' too
# The config's record of the transformers release that serialises it: a newer install writes the
# same checkpoint's config with its own version, which would relabel every published figure.
LIBRARY_VERSION_KEY = "transformers_version"


@contextlib.contextmanager
def reference_model(vlm: VLM) -> Iterator[VLM]:
    """`vlm` as the frozen base model: LoRA adapters disabled inside the block (no-op without PEFT)."""
    if isinstance(vlm.model, PeftModel):
        with vlm.model.disable_adapter():
            yield vlm
    else:
        yield vlm


def scoring_dtype(vlm: VLM, precision: str) -> torch.dtype:
    """The dtype the scoring passes compute in. auto: bfloat16 where the device computes it natively
    (a CUDA GPU that supports it, a CPU with AVX512-BF16) and the weights are float32; elsewhere
    (or with weights loaded in another dtype) the weights' own dtype."""
    check_choice("precision", precision, PRECISIONS)
    weights = vlm.dtype
    if precision == "float32" or weights != torch.float32:
        return weights
    if precision == "bfloat16":
        return torch.bfloat16
    device = vlm.device
    if device.type == "cuda":  # tensor cores compute bfloat16 from Ampere (capability 8.0) on; older emulate it
        native = torch.cuda.get_device_capability(device) >= (8, 0)
    else:  # a private helper of torch's: read it defensively
        native = device.type == "cpu" and getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return torch.bfloat16 if native else weights


def score_samples(vlm: VLM, samples: Sequence[Sample], variant: str = "mean_nll", batch_size: int = 32,
                  reference: bool = True, *, max_new_tokens: int = 48,
                  cache: ScoreCache | None = None, precision: str = "float32") -> list[float]:
    """One implausibility score per sample (higher: less plausible), in the order of `samples`.

    reference: score under the base model (adapter disabled) rather than the current weights.
    max_new_tokens: length of the greedy answer of `relative_to_greedy` (other variants ignore it).
    cache: reuse scores saved for the same model, variant and samples; save new ones.
    precision: one of PRECISIONS (see `scoring_dtype`).
    """
    return score_variants(vlm, samples, [variant], batch_size, reference, max_new_tokens=max_new_tokens,
                          cache=cache, precision=precision)[variant]


def score_variants(vlm: VLM, samples: Sequence[Sample], variants: Sequence[str], batch_size: int = 32,
                   reference: bool = True, *, max_new_tokens: int = 48,
                   cache: ScoreCache | None = None, precision: str = "float32",
                   guests: int = 0, alone: int | None = None, reuse_prefix: bool = False) -> dict[str, list[float]]:
    """Several scores of the same samples, sharing forward passes; variant -> scores in sample order.
    guests: the last samples (canaries) are scored on the others' statistics (SET_WIDE's), which
    they do not move. alone: the last samples scored in batches of their own (all the guests by
    default), so that every other sample's score is the one it gets without them. reuse_prefix: the
    grey-image pass computes each batch's shared prompt prefix once (`VLM.response_logits`)."""
    for variant in variants:
        check_choice("variant", variant, VARIANTS)
    dtype = scoring_dtype(vlm, precision)
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        twice = next(i for i, n in Counter(ids).items() if n > 1)
        raise ValueError(f"sample ids must be unique (cached scores are matched by id); {twice!r} repeats")
    keys = {v: fingerprint(vlm, samples, v, reference, max_new_tokens, dtype, guests, reuse_prefix)
            if cache is not None else "" for v in variants}
    found = {v: cache.load(keys[v], ids) if cache is not None else None for v in variants}
    missing = [v for v in variants if found[v] is None]
    if missing:
        weights = vlm.dtype
        if dtype != weights:
            log.info("scoring in %s (precision=%s; the weights are %s)", str(dtype).removeprefix("torch."), precision,
                     str(weights).removeprefix("torch."))
        with (reference_model(vlm) if reference else contextlib.nullcontext(),
              torch.autocast(vlm.device.type, dtype=dtype, enabled=dtype != weights)):
            computed = _compute(vlm, samples, missing, batch_size, max_new_tokens, guests,
                                guests if alone is None else alone, reuse_prefix)
        for variant in missing:
            found[variant] = computed[variant]
            if cache is not None and is_main():
                cache.save(keys[variant], ids, computed[variant])
    return {v: found[v] for v in variants}


def _compute(vlm: VLM, samples: Sequence[Sample], variants: Sequence[str], batch_size: int,
             max_new_tokens: int, guests: int, alone: int, reuse_prefix: bool) -> dict[str, list[float]]:
    """The forward passes the variants need, each once; under several processes each process
    scores its share and all of them get every score."""
    desc = f"scoring ({'+'.join(variants)})"
    views = [on_grey] if any(v in _NEEDS_GREY for v in variants) else []

    def token_scores(share: Sequence[Sample]) -> list[ResponseScore]:
        return vlm.score(share, batch_size, desc=desc)

    batched = len(samples) - alone

    def apart(work: Callable[[Sequence], list], items: Sequence) -> list:
        """`work` mapped over the items, shared between processes, the last `alone` in batches of
        their own: a sample batched beside one would be padded, and rounded, otherwise than without it."""
        return [out for part in (items[:batched], items[batched:]) if part for out in map_sharded(work, part)]

    # the grey pass shares each batch's encoding with the true one (`VLM.score_views`)
    passes = apart(lambda share: vlm.score_views(share, views, batch_size, desc=desc, reuse_prefix=reuse_prefix),
                   samples)
    seen = [scores[0] for scores in passes]
    blind = [scores[1] for scores in passes] if views else []
    out: dict[str, list[float]] = {}
    for variant in variants:
        if variant == "mean_nll":
            out[variant] = [s.mean_nll for s in seen]
        elif variant == "max_token_nll":
            # default=0.0: a template that renders no response token at all gives nothing to judge
            out[variant] = [max(s.token_nll, default=0.0) for s in seen]
        elif variant == "relative_to_greedy":
            greedy = apart(lambda share: vlm.generate(share, max_new_tokens, batch_size, desc="greedy answers"),
                           samples)
            own = apart(token_scores, [s.with_response(g) for s, g in zip(samples, greedy)])
            out[variant] = [given.mean_nll - mine.mean_nll for given, mine in zip(seen, own)]
        elif variant == "image_ablated":
            out[variant] = [s.mean_nll - g.mean_nll for s, g in zip(seen, blind)]
        elif variant == "image_contradiction":
            # the same response tokens are scored twice, so the lists align
            out[variant] = [sum(max(a - b, 0.0) for a, b in zip(s.token_nll, g.token_nll)) for s, g in zip(seen, blind)]
        elif variant == "token_surprise":
            out[variant] = token_surprise(seen, guests)
        else:
            out[variant] = shared_answer([s.response for s in samples],
                                         [s.mean_nll - g.mean_nll for s, g in zip(seen, blind)], guests)
    return out


def on_grey(image: Image.Image) -> Image.Image:
    """A uniform grey image of `image`'s size (a text-only sample has no image evidence: its
    image-grounded scores are 0)."""
    return _grey(image.size)


@functools.lru_cache(maxsize=16)  # one picture per size, shared: a view must not be changed in place
def _grey(size: tuple[int, int]) -> Image.Image:
    return Image.new("RGB", size, NEUTRAL_GREY)


def token_surprise(scores: Sequence[ResponseScore], guests: int = 0) -> list[float]:
    """Per response, the sum of its tokens' NLL above what the same token usually costs in `scores`.
    guests: what a token usually costs is read from the other responses (from the last `guests`
    only for a token none of the others has)."""
    costs: dict[int, list[float]] = defaultdict(list)
    guest_costs: dict[int, list[float]] = defaultdict(list)
    for i, score in enumerate(scores):
        for token, nll in zip(score.token_ids, score.token_nll):
            (costs if i < len(scores) - guests else guest_costs)[token].append(nll)
    usual = {token: float(np.percentile(values, USUAL_COST_QUANTILE))
             for token, values in {**guest_costs, **costs}.items()}
    return [sum(max(nll - usual[token], 0.0) for token, nll in zip(s.token_ids, s.token_nll)) for s in scores]


def shared_answer(responses: Sequence[str], image_ablated: Sequence[float], guests: int = 0) -> list[float]:
    """Per response, the pooled image evidence of all samples that give the same answer (see the
    module docstring); 0 for an answer given once. guests: the last responses are in the others'
    MAD units and pool with them and each other, the others with the others alone."""
    z = mad_z(image_ablated, guests)
    hosts = len(responses) - guests
    members: dict[str, list[int]] = defaultdict(list)
    for i, response in enumerate(responses):
        members[answer_key(response)].append(i)
    pooled = np.zeros(len(responses))
    for indices in members.values():
        own = [i for i in indices if i < hosts]
        if len(own) > 1:
            pooled[own] = z[own].mean() * np.sqrt(len(own))
        visiting = [i for i in indices if i >= hosts]
        if visiting and len(indices) > 1:
            pooled[visiting] = z[indices].mean() * np.sqrt(len(indices))
    return pooled.tolist()


# ---- cache -----------------------------------------------------------------------------------


def model_fingerprint(vlm: VLM, reference: bool) -> bytes:
    """What the scores depend on: the model's name, config, chat template and weights; not the
    version of transformers that serialises the config (the environment is pinned: constraints.txt).

    The weights enter as the first 16 values of every tensor, which is cheap even for a 7B model
    and still tells two checkpoints of one architecture apart (say, before and after a full
    fine-tune). Under `reference` the LoRA tensors are left out: the adapter is disabled then.
    """
    model = vlm.model.get_base_model() if isinstance(vlm.model, PeftModel) else vlm.model
    digest = hashlib.sha256()
    digest.update(Path(model.config.name_or_path or "").name.encode())
    # the sub-configs' dicts carry no version of their own
    config = {k: v for k, v in model.config.to_diff_dict().items() if k != LIBRARY_VERSION_KEY}
    digest.update(json.dumps(config, sort_keys=True).encode())
    digest.update(vlm.full_text("{instruction}", "{response}").encode())
    for name, param in vlm.model.named_parameters():
        if not (reference and "lora_" in name):
            digest.update(param.detach().flatten()[:16].float().cpu().numpy().tobytes())
    return digest.digest()


def checkpoint_label(name: str, vlm: VLM) -> str:
    """'name@<first 12 hex digits of the weights' fingerprint>': which checkpoint a figure was
    measured on (a retrained byorn-tiny keeps its name, not its weights)."""
    return f"{name}@{model_fingerprint(vlm, reference=False).hex()[:12]}"


def _image_digest(sample: Sample) -> bytes:
    """The sample's images' digest: one image's own (as before several were read), several's joined."""
    if sample.more_images:
        return hashlib.sha256(b"".join(map(_one_image_digest, sample.images))).digest()
    return _one_image_digest(sample.image)


def _one_image_digest(image: Image.Image | Path | None) -> bytes:
    if image is None:
        return b"text-only"
    if isinstance(image, Image.Image):
        return hashlib.sha256(f"{image.mode}{image.size}".encode() + image.tobytes()).digest()
    with open(image, "rb") as file:
        return hashlib.file_digest(file, "sha256").digest()


def fingerprint(vlm: VLM, samples: Sequence[Sample], variant: str, reference: bool = True,
                max_new_tokens: int = 48, dtype: torch.dtype | None = None, guests: int = 0,
                reuse_prefix: bool = False) -> str:
    """sha256 hex of everything a score depends on; any change gives another cache entry.
    dtype: what the passes computed in, where not the weights' own (autocast); reuse_prefix: the
    grey pass's rounding, where the score reads that pass."""
    options: dict[str, object] = {"variant": variant, "reference": reference}
    if reuse_prefix and variant in _NEEDS_GREY:
        options["reuse_prefix"] = True
    if guests and variant in SET_WIDE:
        options["guests"] = guests
    if dtype is not None and dtype != vlm.dtype:
        options["dtype"] = str(dtype)
    if variant == "relative_to_greedy":
        options["max_new_tokens"] = max_new_tokens
    digest = hashlib.sha256(model_fingerprint(vlm, reference))
    digest.update(json.dumps(options, sort_keys=True).encode())
    hash_samples(digest, samples)
    return digest.hexdigest()


class Digest(Protocol):
    """What `hash_samples` feeds: any hashlib object."""

    def update(self, data: bytes, /) -> None: ...


def hash_samples(digest: Digest, samples: Sequence[Sample]) -> None:
    """Feed `digest` every sample, in order: id, texts and image."""
    for s in samples:
        # JSON framing so that ("ab", "c") and ("a", "bc") cannot hash alike
        # (a conversation's earlier turns only where there are some: single-turn keys stay as they were)
        turns = [s.id, s.instruction, s.response, *([[list(t) for t in s.history]] if s.history else [])]
        digest.update(json.dumps(turns, ensure_ascii=False).encode())
        digest.update(_image_digest(s))


class ScoreCache:
    """Scores as JSON lines `{"id": ..., "score": ...}`, one file per fingerprint, in `directory`.

    JSON, never pickle: a cache file from elsewhere must not be able to run code. Files are
    replaced atomically, so a crash leaves the old entry or the new one, never half of one.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        return self.directory / f"scores-{key[:16]}.jsonl"  # 64 bits of sha256: no collisions in practice

    def load(self, key: str, ids: Sequence[str]) -> list[float] | None:
        """The cached scores for exactly these ids in this order, or None."""
        try:
            records = [json.loads(line) for line in self.path(key).read_text(encoding="utf-8").splitlines()]
            if [r["id"] for r in records] != list(ids):
                return None
            return [float(r["score"]) for r in records]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent or unreadable: scoring again is always safe

    def save(self, key: str, ids: Sequence[str], scores: Sequence[float]) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_jsonl(self.path(key), ({"id": i, "score": s} for i, s in zip(ids, scores)), ensure_ascii=False)
        return self.path(key)
