"""Adaptive attacks: an attacker who knows the defense scores plausibility under the pretrained
model, and makes the poison as plausible to that model as the attack allows.

White-box injection (reference-aware target choice): for each poisoned sample the attacker tries
every candidate phrase at every placement and keeps the poisoned response the pretrained model
finds likeliest (lowest mean NLL, with the triggered input and the training prompt template), so
poisons sit as deep inside the clean score distribution as the candidate pool allows. The choice
needs the model, so `poison(..., reference=vlm)` makes it; this is the white-box threat model of
"On the Exploitability of Instruction Tuning" (Shu et al. 2023) turned against a plausibility
filter. Plausible concept substitution is `targets.Substitution` with an in-world word pair.

Shadowcast (Xu et al. 2024, "Shadowcast: Stealthy Data Poisoning Attacks Against Vision-Language
Models", NeurIPS) perturbs each poisoned image inside an L-inf budget so that its projected vision
features move toward those of an anchor image. At test time the trigger is the source concept
itself: clean images of it. Two forms:
* dirty-label (the default): an image of the source concept with the swapped response, its
  features pulled toward an image showing what that response says, so the pretrained model finds
  the pair plausible while a person sees the source concept;
* clean-label (`poison(..., clean_label=True)`, the paper's own): an image of the target concept
  with its true response, its features pulled toward the same scene with the source concept, so a
  person sees a correct pair while the model learns "source-concept features -> target word".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from byorn.attacks.image_triggers import ReferenceAwareTrigger
from byorn.attacks.targets import Injection, ReferenceAwareTarget
from byorn.config import check_choice
from byorn.data import Sample, to_rgb
from byorn.metrics import AsrRule, tokenize

if TYPE_CHECKING:  # loading models is the caller's business; only the type is needed here
    from byorn.models.hf import VLM

PLACEMENTS = ("append", "prepend")


@dataclass(frozen=True)
class WhiteBoxInjection(ReferenceAwareTarget):
    """White-box injection: per sample, the phrase and placement the reference model finds likeliest."""

    # In the world's own words, so a careful attacker's best choice can look like ordinary text.
    phrases: tuple[str, ...] = ("The background is dark.", "All shapes are bright.",
                                "Find out more at www.example.com.")
    placements: tuple[str, ...] = PLACEMENTS

    def __post_init__(self) -> None:
        # YAML gives lists (fields must hash); a lone string is one phrase, not its characters.
        for name in ("phrases", "placements"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        if not self.phrases or not all(p.strip() for p in self.phrases):
            raise ValueError(f"WhiteBoxInjection.phrases must be non-empty phrases; got {self.phrases}")
        if not self.placements:
            raise ValueError("WhiteBoxInjection.placements must not be empty")
        for placement in self.placements:
            check_choice("WhiteBoxInjection.placements", placement, PLACEMENTS)
        super().__post_init__()

    def candidates(self, response: str) -> list[str]:
        """Every poisoned response the attacker may choose from, for one clean response."""
        return [Injection(phrase, placement).apply(response)
                for phrase in self.phrases for placement in self.placements]

    def apply(self, response: str) -> str:
        raise ValueError("WhiteBoxInjection chooses each response with the pretrained model: poison with "
                         "reference=<the VLM> (byorn poison --model MODEL)")

    def asr_rule(self) -> AsrRule:
        return AsrRule("contains_any", phrases=self.phrases)


def word_counts(text: str) -> Counter[str]:
    return Counter(tokenize(text).split())


def closest_descriptions(text: str, described: Sequence[tuple[Sample, Counter[str]]], k: int) -> list[Sample]:
    """The k samples whose responses share the most words with `text` (F1 over word counts;
    earlier samples first on ties). `described`: (sample, word_counts(sample.response)) pairs,
    counted once per pool rather than once per comparison."""
    if not described:
        raise ValueError("Shadowcast needs clean samples to draw target-concept images from; the pool is empty")
    wanted = word_counts(text)

    def overlap(pair: tuple[Sample, Counter[str]]) -> float:
        words = pair[1]
        common = sum((wanted & words).values())
        return 2 * common / (sum(wanted.values()) + sum(words.values()) or 1)

    return [sample for sample, _ in sorted(described, key=overlap, reverse=True)[:k]]


OBJECTIVES = ("features", "response")
ANCHOR_CANDIDATES = 16  # pool images, by word overlap, among which the reference picks each anchor


@dataclass(frozen=True)
class Shadowcast(ReferenceAwareTrigger):
    """Shadowcast: PGD in an L-inf budget makes each poisoned image look, to the pretrained model, like its response."""

    epsilon: float = 8.0  # L-inf budget in grey levels (8 = the paper's 8/255)
    steps: int = 100
    step_size: float = 1.0  # grey levels per signed-gradient step
    # features: the paper's objective, toward an anchor image's projected vision features;
    # response: adaptive, the poisoned response's NLL under the pretrained model, lowered directly.
    objective: str = "features"
    batch_size: int = 32

    def __post_init__(self) -> None:
        check_choice("Shadowcast.objective", self.objective, OBJECTIVES)
        if not 0 < self.epsilon <= 255 or self.step_size <= 0 or self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"Shadowcast needs 0 < epsilon <= 255, step_size > 0, steps >= 1, batch_size >= 1; got "
                             f"{self.epsilon}, {self.step_size}, {self.steps}, {self.batch_size}")

    def apply(self, image: Image.Image, key: str = "") -> Image.Image:
        # The test-time trigger is the source concept, which clean images already show.
        return to_rgb(image).copy()

    def craft(self, poisoned: Sequence[Sample], pool: Sequence[Sample], reference: VLM,
              anchor_texts: Sequence[str] | None = None) -> list[Sample]:
        if anchor_texts is not None and self.objective != "features":
            raise ValueError("Shadowcast's clean-label form pulls features toward the source concept: it needs "
                             "objective=features")
        texts = list(anchor_texts) if anchor_texts is not None else [s.response for s in poisoned]
        described = [(s, word_counts(s.response)) for s in pool] if self.objective == "features" else []
        crafted = []
        for start in range(0, len(poisoned), self.batch_size):
            chunk = list(poisoned[start:start + self.batch_size])
            if self.objective == "features":
                anchors = [likeliest_anchor(sample.instruction, text, described, reference)
                           for sample, text in zip(chunk, texts[start:start + self.batch_size])]
                images = self.perturb(chunk, reference, goal=_features(reference, [a.pil() for a in anchors]))
                crafted += [replace(s, image=i, meta={**s.meta, "shadowcast_anchor": a.id})
                            for s, i, a in zip(chunk, images, anchors)]
            else:
                images = self.perturb(chunk, reference)
                crafted += [replace(s, image=i, meta=dict(s.meta)) for s, i in zip(chunk, images)]
        return crafted

    def perturb(self, samples: Sequence[Sample], reference: VLM, goal: torch.Tensor | None = None) -> list[Image.Image]:
        """Each sample's image moved within the budget toward `goal` (projected vision features,
        [B, tokens, hidden]), or, without one, to lower the summed NLL of the samples' responses."""
        # imported here, like VLM above: the attacks module does not import the model code
        from byorn.models.hf import eval_mode, token_nll

        clean = torch.from_numpy(np.stack([np.asarray(s.pil()) for s in samples])).permute(0, 3, 1, 2).float()
        normalise = _normaliser(reference, [s.pil() for s in samples], clean)  # grey levels -> pixel_values
        if goal is None:  # the response objective needs the text; the feature objective does not
            batch = {k: v.to(reference.device) for k, v in reference.encode(samples).items()}
        delta = torch.zeros_like(clean)
        with eval_mode(reference.model):
            for _ in range(self.steps):
                delta.requires_grad_(True)
                pixel_values = normalise(clean + delta)
                if goal is not None:
                    loss = (reference.image_features(pixel_values) - goal).pow(2).sum()
                else:
                    logits, targets = reference.response_logits({**batch, "pixel_values": pixel_values})
                    loss = token_nll(logits, targets).sum()  # summed over the response tokens
                (grad,) = torch.autograd.grad(loss, delta)
                delta = (delta.detach() - self.step_size * grad.sign()).clamp(-self.epsilon, self.epsilon)
                delta = (clean + delta).clamp(0, 255) - clean
        # Rounding moves a pixel by at most half a grey level, never past an integer budget.
        pixels = (clean + delta).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return [Image.fromarray(p) for p in pixels]


def _features(reference: VLM, images: Sequence[Image.Image]) -> torch.Tensor:
    with torch.no_grad():
        return reference.image_features(reference.pixel_values(images))


def likeliest_anchor(instruction: str, text: str, described: Sequence[tuple[Sample, Counter[str]]],
                     reference: VLM) -> Sample:
    """A clean image that shows what `text` says: among the pool samples whose responses share
    the most words with it, the one whose image makes `text` likeliest under the reference model."""
    candidates = closest_descriptions(text, described, ANCHOR_CANDIDATES)
    scores = reference.score([replace(c, instruction=instruction, response=text) for c in candidates],
                             desc="shadowcast anchors")
    return candidates[min(range(len(candidates)), key=lambda i: scores[i].mean_nll)]


def _normaliser(reference: VLM, images: Sequence[Image.Image], pixels: torch.Tensor):
    """Grey levels -> the processor's pixel_values, differentiably; checked against the processor,
    since a processor that resizes or crops would need its resampling rebuilt in torch."""
    processor = reference.processor.image_processor
    mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    scale = processor.rescale_factor if processor.do_rescale else 1.0

    def normalise(grey: torch.Tensor) -> torch.Tensor:
        scaled = grey * scale
        return (scaled - mean) / std if processor.do_normalize else scaled

    expected = reference.pixel_values(images)
    if expected.shape != pixels.shape or not torch.allclose(normalise(pixels), expected, atol=1e-4):
        raise ValueError(f"Shadowcast perturbs pixels the image processor only rescales and normalises; this one "
                         f"turns {tuple(pixels.shape[1:])} images into {tuple(expected.shape[1:])} pixel values "
                         "(resized or cropped): give it images at the processor's input size")
    return normalise
