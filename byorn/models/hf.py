"""Any Hugging Face vision-language model behind one small interface.

Everything that turns samples into tensors goes through `VLM.encode`, so training, scoring and
evaluation share one prompt template: a mismatch between the template used in training and in
evaluation is a known source of wrong ASR figures in peer code.
"""

from __future__ import annotations

import functools
import inspect
import re
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import PeftModel
from PIL import Image
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from byorn.data import DataError, Sample
from byorn.models.families import (
    IGNORE_INDEX,
    Family,
    family_of,
    images_of,
    process,
    require_images,
    require_one_image_each,
)


@dataclass(frozen=True, slots=True)
class ResponseScore:
    """Teacher-forced negative log-likelihood of one response given its image and instruction."""

    mean_nll: float  # nats per response token
    total_nll: float
    # one value per response token, in order, and the tokens themselves: arrays of float32 (what the
    # passes compute; exact) and int32, a fifth of a tuple's memory, as a scan holds them for every sample
    token_nll: Sequence[float]
    token_ids: Sequence[int] = ()


# A picture made from a sample's image, of the same size (`VLM.score_views`).
ImageView = Callable[[Image.Image], Image.Image]


def _where(sample: Sample) -> str:
    """A sample as an error names it: where it was read (file:line) when known, and its id."""
    source = sample.meta.get("source")
    return f"{source}: sample {sample.id!r}" if source else f"sample {sample.id!r}"


def _too_long(sample: Sample, length: str, limit: int) -> str:
    """Why a sample does not fit the model: `length` says how long it is, and how it was counted."""
    return (f"{_where(sample)}: {length}, more than the {limit:,} positions of the model; shorten its text or "
            "leave it out")


@functools.cache  # asked once a batch; the answer is the model class's
def _cache_keyword(model_class: type) -> str:
    """The forward argument (and output field) of a model's key-value cache: transformers renamed
    past_key_values to cache (5.24 warns on the old name; earlier 5.x releases know only it)."""
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """`model` in eval mode (dropout off) inside the block; afterwards back in the mode it was in,
    also when the block raises."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token negative log-likelihood [B, T] (float32) of aligned logits [B, T, V] and targets
    [B, T] (as `VLM.response_logits` gives them); 0 where the target is IGNORE_INDEX."""
    return F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")


class VLM:
    """A model of a supported family (families.py) and its processor; prompts come from the processor."""

    def __init__(self, model: torch.nn.Module, processor) -> None:
        self.family: Family = family_of(model.config.model_type)
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer

    @classmethod
    def load(cls, path: str | Path, *, trust_remote_code: bool = False, dtype: torch.dtype | None = None) -> VLM:
        """Load a local model directory (or, where the network allows, a hub id)."""
        # An unsupported architecture fails here, before gigabytes of weights are read.
        family_of(AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code).model_type)
        processor = AutoProcessor.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        model = AutoModelForImageTextToText.from_pretrained(
            str(path), trust_remote_code=trust_remote_code, dtype=dtype or torch.float32
        )
        return cls(model, processor)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The weights' floating-point dtype (the most common one, where parts differ)."""
        floats = [p.dtype for p in self.model.parameters() if p.dtype.is_floating_point]
        return max(set(floats), key=floats.count) if floats else torch.float32

    @property
    def image_token_id(self) -> int:
        """The token id of the image positions in `encode`'s and `encode_prompts`' input ids."""
        return self.family.image_token_id(self.model.config)

    # ---- prompts and tensors (the family's prompt style) ------------------------------------

    def prompt_text(self, instruction: str, image: int = True, history: Sequence[tuple[str, str]] = ()) -> str:
        """The prompt the processor is given: up to where the answer starts (a prefix-suffix
        processor adds its own separators to it); image: how many images it shows (True: one); history:
        the conversation's earlier turns."""
        return self.family.prompt_style.prompt_text(self.processor, instruction, image, history)

    def full_text(self, instruction: str, response: str, image: int = True,
                  history: Sequence[tuple[str, str]] = ()) -> str:
        """Prompt plus response plus end-of-turn marker, as the model is trained on it (before
        the processor expands the image placeholder)."""
        return self.family.prompt_style.full_text(self.processor, instruction, response, image, history)

    def encode(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        """Right-padded inputs with labels on the response tokens only (prompt, image, pad = -100)."""
        self.check_texts(samples)
        require_one_image_each(samples, self.family)
        return self._within_context(self.family.prompt_style.encode(self.processor, samples), samples)

    def check_texts(self, samples: Sequence[Sample]) -> None:
        """Refuse a sample whose text holds what the tokenizer reads as a special token: "</s>"
        in a response would end the sequence there, "<image>" would be taken for an image
        position. Such text is either a mistake or an injection; nothing here can say which."""
        for sample in samples:
            if problem := self._special_text(sample):
                raise DataError(problem)

    def unreadable(self, samples: Sequence[Sample]) -> dict[int, str]:
        """Every sample (by index) that `encode` would refuse, and why, found without processing
        images: text holding a special token, and text whose tokens alone (with the image's,
        where the config gives their number) outrun the model's positions. For a check of a whole
        data set before any work; `encode` still checks each batch's true length."""
        problems = {i: problem for i, s in enumerate(samples) if (problem := self._special_text(s) or
                                                                   self._image_count_problem(s))}
        if (limit := self.max_positions) is None:
            return problems
        image_tokens = getattr(self.model.config, "image_seq_length", 1)  # the placeholder, expanded
        for i, sample in enumerate(samples):
            if i in problems:
                continue
            text = self.full_text(sample.instruction, sample.response, len(sample.images), sample.history)
            length = len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + \
                (image_tokens - 1) * len(sample.images)
            if length > limit:
                problems[i] = _too_long(sample, f"{length:,} tokens or more with its prompt", limit)
        return dict(sorted(problems.items()))  # in the data's order

    def _image_count_problem(self, sample: Sample) -> str | None:
        try:
            require_one_image_each([sample], self.family)
        except DataError as exc:
            return str(exc)
        return None

    def _special_text(self, sample: Sample) -> str | None:
        turns = [part for turn in sample.history for part in turn]
        for field, text in (("instruction", sample.instruction), ("response", sample.response),
                            *(("history", turn) for turn in turns)):
            if self._special_texts and (found := self._special_pattern.search(text)):
                return (f"{_where(sample)}, field {field!r}: holds {found.group()!r}, which the model's tokenizer "
                        "reads as a special token, not as text; remove it from the data")
        return None

    def _within_context(self, batch: dict[str, torch.Tensor], samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        """`batch`, checked to fit the language model's positions: a longer sample would be read
        past what the model was trained on (or fail inside it), and pads its whole batch to its length."""
        limit = self.max_positions
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        if limit is not None and (row := next((i for i, n in enumerate(lengths) if n > limit), None)) is not None:
            raise DataError(_too_long(samples[row], f"{lengths[row]:,} tokens with its image and prompt", limit))
        return batch

    @functools.cached_property
    def max_positions(self) -> int | None:
        """How many positions the language model has (None where its config does not say)."""
        config = self.model.config
        text = getattr(config, "text_config", None)
        return getattr(text, "max_position_embeddings", None) or getattr(config, "max_position_embeddings", None)

    @functools.cached_property
    def _special_texts(self) -> tuple[str, ...]:
        return tuple(t for t in self.tokenizer.all_special_tokens if t)

    @functools.cached_property
    def _special_pattern(self) -> re.Pattern:
        return re.compile("|".join(map(re.escape, sorted(self._special_texts, key=len, reverse=True))))

    def encode_prompts(self, samples: Sequence[Sample],
                       prefixes: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Prompts without responses, left-padded: every row's last position is its last prompt token.

        prefixes: the start of each answer, already written, for the model to go on from."""
        self.check_texts(samples)
        require_one_image_each(samples, self.family)
        prompts = [self.prompt_text(s.instruction, len(s.images), s.history) for s in samples]
        if prefixes is not None:
            if not self.family.prompt_style.continues_answers:
                raise ValueError(f"{self.family.name} cannot be prompted with the start of an answer")
            prompts = [prompt + prefix for prompt, prefix in zip(prompts, prefixes, strict=True)]
        if not self.family.prompt_style.continues_answers:  # the prefix-suffix style: an image in every prompt
            require_images(samples, self.family.name)
        batch = process(self.processor, prompts, images_of(samples), "left")
        batch.pop("labels", None)  # a prefix-suffix processor labels nothing here, but says so
        return self._within_context(batch, samples)

    def instruction_mask(self, samples: Sequence[Sample], width: int) -> torch.Tensor:
        """[B, width] True on each instruction's tokens in a left-padded `encode_prompts` batch of
        that width. Counted on the prompt text around the instruction (what follows it is the
        template's closing part, and a prefix-suffix processor adds its separator there)."""
        mask = torch.zeros(len(samples), width, dtype=torch.bool)
        for row, sample in enumerate(samples):
            prompt = self.prompt_text(sample.instruction, len(sample.images), sample.history)
            start = prompt.rindex(sample.instruction) if sample.instruction else len(prompt)
            end = start + len(sample.instruction)
            count = [len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
                     for text in (prompt[:start], prompt[:end], prompt)]
            after = count[2] - count[1] + self.family.prompt_style.closing_tokens
            mask[row, width - after - (count[1] - count[0]) : width - after] = True
        return mask

    def pixel_values(self, images: Sequence) -> torch.Tensor:
        """The image processor's pixel tensor for `images` ([B, 3, H, W] for fixed-size processors)."""
        return self.processor.image_processor(images=list(images), return_tensors="pt")["pixel_values"]

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """What the language model receives for each image: the projected vision features,
        [B, image tokens, hidden]; differentiable (no no_grad here)."""
        output = self.model.get_image_features(pixel_values=pixel_values.to(self.device))
        features = output.pooler_output if hasattr(output, "pooler_output") else output
        return torch.stack(list(features))

    # ---- scoring and generation ------------------------------------------------------------

    def response_logits(self, batch: dict[str, torch.Tensor],
                        reuse_prefix: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing on an `encode` batch: the logits at the positions that predict response
        tokens and the token each predicts, aligned ([B, K, V] float32 and [B, K], IGNORE_INDEX off
        the response), K covering every row's response. Logits are computed for those positions
        only: the prompt (image tokens included) is most of a sequence, and the output layer over
        the vocabulary is a large share of a forward pass.

        reuse_prefix: the prompt prefix every row shares (`shared_prefix`) is computed once, its
        keys and values reused by each row; the same logits up to rounding, which differs."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        labels = batch.pop("labels")  # [B, T]
        width = labels.shape[1]
        is_answer = labels != IGNORE_INDEX
        first = int(is_answer.float().argmax(dim=1)[is_answer.any(dim=1)].min()) if is_answer.any() else width
        keep = min(width, width - first + 1)  # positions first-1 .. T-1: the first predicts token `first`
        prefix = self.shared_prefix(batch, width - keep) if reuse_prefix else 0
        if prefix:
            logits = self._logits_after_prefix(batch, prefix, keep)
        else:
            logits = self.model(**batch, logits_to_keep=keep).logits.float()  # [B, keep, V]
        return logits[:, :-1], labels[:, width - keep + 1:]  # token t is predicted at position t-1

    def shared_prefix(self, batch: dict[str, torch.Tensor], at_most: int) -> int:
        """How many leading tokens (at most `at_most`) every row of `batch` has in common, where their
        keys and values can be computed once for all rows: the family allows it, every row shows the
        same pixels (a grey image of one size, say) in tensors with one entry a row, and no image
        position lies after the prefix. 0 where any of that fails (a batch of one gains nothing)."""
        ids = batch["input_ids"]
        if not self.family.shares_prefixes or len(ids) < 2:
            return 0
        for key, value in batch.items():  # one entry a row (not a row's several images) and the same in each
            if key not in ("input_ids", "attention_mask") and (
                    len(value) != len(ids) or not all(torch.equal(value[0], row) for row in value[1:])):
                return 0
        length = min(int((ids == ids[:1]).all(dim=0).long().cumprod(0).sum()), at_most)
        return length if length and not (ids[:, length:] == self.image_token_id).any() else 0

    def _logits_after_prefix(self, batch: dict[str, torch.Tensor], prefix: int, keep: int) -> torch.Tensor:
        """`response_logits`' logits with the first `prefix` tokens (and the images, all in them) run
        once, for the first row, and their cache repeated for every row."""
        rows = len(batch["input_ids"])
        head = {k: v[:1, :prefix] if k in ("input_ids", "attention_mask") else v[:1] for k, v in batch.items()}
        out = self.model(**head, use_cache=True, logits_to_keep=1)
        base = self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model
        name = _cache_keyword(type(base))
        cache = getattr(out, name)
        cache.batch_repeat_interleave(rows)
        return self.model(input_ids=batch["input_ids"][:, prefix:], attention_mask=batch["attention_mask"],
                          **{name: cache}, logits_to_keep=keep).logits.float()

    def score(self, samples: Sequence[Sample], batch_size: int = 32, desc: str = "scoring") -> list[ResponseScore]:
        """Per-sample response NLL under the current weights (teacher forcing, one forward pass a batch)."""
        return [scores[0] for scores in self.score_views(samples, (), batch_size, desc)]

    @torch.no_grad()
    def score_views(self, samples: Sequence[Sample], views: Sequence[ImageView], batch_size: int = 32,
                    desc: str = "scoring", reuse_prefix: bool = False) -> list[tuple[ResponseScore, ...]]:
        """Per sample, its response's NLL with its own image and then with each view of that image
        (a function giving another picture of the same size: a grey one, say), in sample order.

        A view changes the pixels only, so the prompt's tokens stay what they were: each batch is
        encoded once, and a view passes only its images through the image processor (checked to
        give tensors of the shapes the processor gave; otherwise the batch is encoded again).
        reuse_prefix: the views' passes compute the prompt prefix their rows share once
        (`response_logits`); a view that shows every row the same picture has one as long as the image."""
        scores: list[tuple[ResponseScore, ...]] = []
        with eval_mode(self.model):
            for chunk in tqdm(list(batches(samples, batch_size)), desc=desc, disable=None, leave=False):
                batch = self.encode(chunk)
                seen = self._response_scores(batch)
                images = [image for s in chunk for image in s.pils()]
                # without an image in the batch a view is the same input: its scores are these
                viewed = [self._response_scores(self._with_images(batch, chunk, view, images), reuse_prefix)
                          if images else seen for view in views]
                scores.extend(zip(seen, *viewed))
        return scores

    def _with_images(self, batch: dict[str, torch.Tensor], chunk: Sequence[Sample], view: ImageView,
                     images: list) -> dict[str, torch.Tensor]:
        """`batch` (an `encode` batch of `chunk`) with each image (`images`: the chunk's, in order)
        replaced by its view."""
        shown = [view(image) for image in images]
        processed = self._image_inputs(shown)
        swapped = {key: processed[key] for key in batch if key in processed}
        if swapped and all(swapped[key].shape == batch[key].shape for key in swapped):
            return {**batch, **swapped}
        redrawn = iter(shown)
        return self.encode([replace(s, image=next(redrawn), more_images=tuple(next(redrawn) for _ in s.more_images))
                            if s.has_image else s for s in chunk])

    def _image_inputs(self, images: list) -> dict[str, torch.Tensor]:
        # one list per sample, as a processor hands them over (Idefics3 reads a flat list as one
        # sample's images)
        return dict(self.processor.image_processor(images=[[image] for image in images], return_tensors="pt"))

    def _response_scores(self, batch: dict[str, torch.Tensor], reuse_prefix: bool = False) -> list[ResponseScore]:
        logits, targets = self.response_logits(batch, reuse_prefix)
        nll = token_nll(logits, targets)
        mask = targets != IGNORE_INDEX
        scores = []
        for row_nll, row_targets, row_mask in zip(nll, targets, mask):
            tokens = row_nll[row_mask].tolist()
            total = float(sum(tokens))
            scores.append(ResponseScore(total / max(len(tokens), 1), total, array("f", tokens),
                                        array("i", row_targets[row_mask].tolist())))
        return scores

    @torch.no_grad()
    def generate(self, samples: Sequence[Sample], max_new_tokens: int = 48, batch_size: int = 32,
                 desc: str = "generating", prefixes: Sequence[str] | None = None) -> list[str]:
        """Greedy responses, batched with left padding so every prompt ends where generation starts.

        prefixes: each answer's start, already written; the response is the prefix and what follows."""
        outputs: list[str] = []
        starts = list(prefixes) if prefixes is not None else [""] * len(samples)
        chunks = list(batches(samples, batch_size))
        with eval_mode(self.model):
            for offset, chunk in enumerate(tqdm(chunks, desc=desc, disable=None, leave=False)):
                chunk_starts = starts[offset * batch_size : offset * batch_size + len(chunk)]
                prompts = self.encode_prompts(chunk, chunk_starts if prefixes is not None else None)
                batch = {k: v.to(self.device) for k, v in prompts.items()}
                generated = self.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                                pad_token_id=self.tokenizer.pad_token_id)
                new_tokens = generated[:, batch["input_ids"].shape[1]:]  # [B, <=max_new_tokens]
                texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                outputs.extend((start + text).strip() for start, text in zip(chunk_starts, texts))
        return outputs
