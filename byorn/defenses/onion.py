"""ONION (Qi et al., EMNLP 2021, "ONION: A Simple and Effective Defense Against Textual Backdoor
Attacks"): delete the words of an instruction whose removal makes it much more fluent.

For each word, its suspicion is the language model's perplexity of the whole instruction minus
the perplexity with that word left out; a trigger token is disfluent, so leaving it out lowers
the perplexity a lot. Words whose suspicion is above the threshold (default 0, as in
OpenBackdoor) are deleted, in the training instructions and again in the test-time inputs.
ONION reads text only: an image trigger passes untouched, and a multimodal trigger keeps its
image half.

The language model (`lm`) is any Hugging Face causal LM directory, or the language model of the
VLM under test ("vlm"). A VLM's language model reads text inside its chat template after the
image tokens, so there the instruction is read in the prompt template with a uniform grey image:
the sample's own image is never shown, and only the tokens after the image count. "auto" (the
default) takes the VLM's language model, except for the built-in byorn-tiny, whose language model
was trained on responses only and never learned instruction text: there it takes byorn-tiny-lm,
a text model of the shapes world (byorn.models.tiny_lm).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from byorn.config import TrainConfig
from byorn.data import Sample
from byorn.defenses.base import Defense
from byorn.defenses.configs import OnionConfig
from byorn.models import instruction_reader, resolve_model_path
from byorn.models.hf import IGNORE_INDEX, VLM, batches, eval_mode, token_nll
from byorn.scoring import NEUTRAL_GREY


@dataclass(frozen=True)
class Cleaned:
    """One instruction after ONION: the text kept, the words deleted and the highest suspicion."""

    text: str
    removed: tuple[str, ...]
    max_suspicion: float


class Onion(Defense):
    """ONION: delete the instruction words whose removal lowers perplexity (training and test inputs)."""

    name = "onion"
    config_class = OnionConfig

    def __init__(self, config: OnionConfig | None = None) -> None:
        self.config = config or OnionConfig()
        self._scorer: _Perplexity | _PromptPerplexity | None = None
        self._cleaned: dict[str, Cleaned] = {}  # instruction -> result: instructions repeat a lot
        self._judged: list[Cleaned] = []  # aligned with the samples prepare() saw

    def prepare(self, vlm: VLM, samples: Sequence[Sample], run_dir: str | Path, *,
                train: TrainConfig | None = None, resume_step: int | None = None) -> None:
        lm = self.config.lm
        if lm == "auto":
            lm = instruction_reader(vlm) or "vlm"
        self._scorer = _PromptPerplexity(vlm) if lm == "vlm" else _Perplexity.load(lm)
        self._judged = self.clean([s.instruction for s in samples])

    def clean(self, instructions: Sequence[str]) -> list[Cleaned]:
        """ONION on each instruction (memoised by text)."""
        if self._scorer is None:
            raise RuntimeError("Onion.prepare() must run before cleaning")
        todo = list(dict.fromkeys(i for i in instructions if i not in self._cleaned))
        if not todo:
            return [self._cleaned[i] for i in instructions]
        # Every sentence whose perplexity is needed: each instruction and each one-word-less variant.
        variants = {text: _leave_one_out(text.split()) for text in todo}
        sentences = list(dict.fromkeys([*todo, *(v for vs in variants.values() for v in vs)]))
        perplexity = dict(zip(sentences, self._scorer(sentences, self.config.batch_size)))
        for text in todo:
            words = text.split()
            suspicion = [perplexity[text] - perplexity[v] for v in variants[text]]
            bad = {i for i, value in enumerate(suspicion) if value > self.config.threshold}
            kept = text if not bad else " ".join(w for i, w in enumerate(words) if i not in bad)
            self._cleaned[text] = Cleaned(kept, tuple(words[i] for i in sorted(bad)), max(suspicion, default=0.0))
        return [self._cleaned[i] for i in instructions]

    def training_set(self, samples: Sequence[Sample]) -> list[Sample]:
        return [self._apply(s, c) for s, c in zip(samples, self.clean([s.instruction for s in samples]))]

    def test_input(self, sample: Sample) -> Sample:
        return self._apply(sample, self.clean([sample.instruction])[0])

    @staticmethod
    def _apply(sample: Sample, cleaned: Cleaned) -> Sample:
        if not cleaned.removed:
            return sample
        return dataclasses.replace(sample, instruction=cleaned.text,
                                   meta={**sample.meta, "onion_removed": list(cleaned.removed)})

    @property
    def suspicion(self) -> list[float] | None:
        return [c.max_suspicion for c in self._judged] if self._judged else None

    @property
    def flagged(self) -> list[bool] | None:
        return [bool(c.removed) for c in self._judged] if self._judged else None


def _leave_one_out(words: list[str]) -> list[str]:
    """The sentence without word i, for each i; a one-word sentence has nothing to compare with."""
    if len(words) < 2:
        return []
    return [" ".join(words[:i] + words[i + 1:]) for i in range(len(words))]


def _perplexities(logits: torch.Tensor, input_ids: torch.Tensor, counted: torch.Tensor) -> list[float]:
    """exp(mean NLL) per row over the positions where `counted` ([B, T], bool) is true."""
    targets = input_ids[:, 1:].masked_fill(~counted[:, 1:], IGNORE_INDEX)  # token t is predicted at t-1
    nll = token_nll(logits[:, :-1], targets)
    counts = (targets != IGNORE_INDEX).sum(dim=1).clamp(min=1)
    return [math.exp(v) for v in (nll.sum(dim=1) / counts).tolist()]


class _Perplexity:
    """Text-only perplexity under a causal language model."""

    def __init__(self, model: torch.nn.Module, tokenizer) -> None:
        self.model, self.tokenizer = model, tokenizer

    @classmethod
    def load(cls, name_or_path: str) -> _Perplexity:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = str(resolve_model_path(name_or_path))
        return cls(AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path))

    @torch.no_grad()
    def __call__(self, sentences: Sequence[str], batch_size: int) -> list[float]:
        self.model.eval()
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        device = next(self.model.parameters()).device
        result = []
        for chunk in batches(sentences, batch_size):
            ids = [bos + self.tokenizer(s, add_special_tokens=False)["input_ids"] for s in chunk]
            width = max(map(len, ids))
            input_ids = torch.tensor([row + [pad] * (width - len(row)) for row in ids], device=device)  # [B, T]
            real = torch.tensor([[True] * len(row) + [False] * (width - len(row)) for row in ids], device=device)
            logits = self.model(input_ids=input_ids, attention_mask=real.long()).logits
            result.extend(_perplexities(logits, input_ids, real))
        return result


class _PromptPerplexity:
    """Perplexity of the prompt text after the image tokens, the image a uniform grey one."""

    def __init__(self, vlm: VLM) -> None:
        self.vlm = vlm

    @torch.no_grad()
    def __call__(self, sentences: Sequence[str], batch_size: int) -> list[float]:
        grey = Image.new("RGB", (64, 64), NEUTRAL_GREY)
        image_token = self.vlm.image_token_id
        result = []
        with eval_mode(self.vlm.model):
            for chunk in batches(sentences, batch_size):
                prompts = self.vlm.encode_prompts([Sample(f"onion-{i}", grey, s, "") for i, s in enumerate(chunk)])
                batch = {k: v.to(self.vlm.device) for k, v in prompts.items()}
                input_ids = batch["input_ids"]  # [B, T], left-padded
                positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
                last_image = torch.where(input_ids == image_token, positions, -1).max(dim=1, keepdim=True).values
                counted = (positions > last_image) & (batch["attention_mask"] == 1)
                result.extend(_perplexities(self.vlm.model(**batch).logits, input_ids, counted))
        return result
