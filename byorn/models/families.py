"""The VLM families byorn supports, and what differs between them.

Everything a family needs is read from its own processor (chat template, image tokens, image
preprocessing); what is left to say per family is where its language model lives (the LoRA
targets are that model's attention projections) and its prompt style, how its processor wants a
training pair:
- `ChatTemplate`: prompt and prompt+response rendered by the processor's chat template; the
  response tokens are those after the prompt (LLaVA, LLaVA-NeXT, Qwen2-VL, Idefics3);
- `PrefixSuffix`: the processor takes the prompt as `text` and the response as `suffix` and
  marks the response with token_type_ids (PaliGemma, whose prefix attends bidirectionally).
A family with a new prompt style adds a class with the same four members here, and nothing else.
The README's family table says which tests cover each family.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from byorn.data import DataError, Sample

IGNORE_INDEX = -100  # the label of a token that is not trained on (prompt, image, padding)


def process(processor, texts: list[str], images: list | None, padding_side: str, **extra) -> dict[str, torch.Tensor]:
    """The processor on a batch, padded on `padding_side`, as PyTorch tensors."""
    processor.tokenizer.padding_side = padding_side
    return dict(processor(text=texts, images=images, padding=True, return_tensors="pt", **extra))


def images_of(samples: Sequence[Sample]) -> list | None:
    """The batch's images in order, each sample's in its order, text-only samples having none
    (None: no image at all); the processor matches them to the prompts' image placeholders."""
    return [image for s in samples for image in s.pils()] or None


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


class ChatTemplate:
    """Prompt and answer rendered by the processor's chat template: one user turn holding the
    images and the instruction, one assistant turn holding the answer. `image` below is how many
    images the conversation shows (True: one), all in its first user turn, in order."""

    closing_tokens = 0  # tokens the processor adds after the prompt text it is given
    continues_answers = True  # the prompt text may end with the start of an answer

    @staticmethod
    def _turns(instruction: str, image: int, history: Sequence[tuple[str, str]]) -> list[dict]:
        """The messages up to this turn's user message; the images go with the first user turn."""
        def user(text: str, images: int) -> dict:
            return {"role": "user", "content": [*[{"type": "image"}] * images, {"type": "text", "text": text}]}

        messages = []
        for index, (asked, answered) in enumerate(history):
            messages += [user(asked, int(image) if index == 0 else 0), _assistant(answered)]
        return [*messages, user(instruction, 0 if history else int(image))]

    def prompt_text(self, processor, instruction: str, image: int = True,
                    history: Sequence[tuple[str, str]] = ()) -> str:
        """The prompt up to where the answer starts (image: how many images the conversation shows)."""
        return processor.apply_chat_template(self._turns(instruction, image, history), add_generation_prompt=True,
                                             tokenize=False)

    def full_text(self, processor, instruction: str, response: str, image: int = True,
                  history: Sequence[tuple[str, str]] = ()) -> str:
        """Prompt, answer and end-of-turn marker, before the image placeholders are expanded."""
        messages = [*self._turns(instruction, image, history), _assistant(response)]
        return processor.apply_chat_template(messages, tokenize=False)

    def encode(self, processor, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        """Right-padded prompt+answer with labels on the answer tokens only: the tokens after the
        prompt's. The processor runs once; how many tokens follow the prompt is counted on the
        text before image expansion (the image placeholders all lie in the prompt), with the
        tokenizer alone, where the prompt's tokens must also be the first tokens of prompt+answer."""
        prompts = [self.prompt_text(processor, s.instruction, len(s.images), s.history) for s in samples]
        fulls = [self.full_text(processor, s.instruction, s.response, len(s.images), s.history) for s in samples]
        for sample, prompt, full in zip(samples, prompts, fulls):
            if not full.startswith(prompt):
                raise ValueError(f"sample {sample.id!r}: chat template does not render the prompt as a prefix "
                                 "of prompt+response, so response tokens cannot be located")
        tokenized = processor.tokenizer([*prompts, *fulls], add_special_tokens=False)["input_ids"]
        answer_lengths = []
        for prompt_ids, full_ids in zip(tokenized[:len(samples)], tokenized[len(samples):]):
            if full_ids[:len(prompt_ids)] != prompt_ids:
                raise ValueError("tokenising prompt+response changed the prompt's tokens; pick a chat template "
                                 "whose assistant turn starts on a token boundary")
            answer_lengths.append(len(full_ids) - len(prompt_ids))
        batch = process(processor, fulls, images_of(samples), "right")
        ends = batch["attention_mask"].sum(dim=1)  # [B]: right padding, so each row's tokens end here
        starts = ends - torch.tensor(answer_lengths)
        positions = torch.arange(batch["input_ids"].shape[1]).unsqueeze(0)  # [1, T]
        is_answer = (positions >= starts.unsqueeze(1)) & (positions < ends.unsqueeze(1))
        batch["labels"] = torch.where(is_answer, batch["input_ids"], IGNORE_INDEX)
        return batch


class PrefixSuffix:
    """PaliGemma's layout: image, BOS, prefix (the instruction), newline, suffix (the answer), EOS;
    the processor adds BOS and the newline itself and labels the suffix."""

    closing_tokens = 1  # the newline after the prefix
    continues_answers = False  # the processor closes the prompt after the text it is given

    def prompt_text(self, processor, instruction: str, image: bool = True,
                    history: Sequence[tuple[str, str]] = ()) -> str:
        return processor.image_token + instruction

    def full_text(self, processor, instruction: str, response: str, image: bool = True,
                  history: Sequence[tuple[str, str]] = ()) -> str:
        tokenizer = processor.tokenizer
        return f"{processor.image_token}{tokenizer.bos_token}{instruction}\n{response}{tokenizer.eos_token}"

    def encode(self, processor, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        require_images(samples, "PaliGemma")
        # The processor labels the suffix (response + EOS) and masks prefix and padding itself.
        batch = process(processor, [self.prompt_text(processor, s.instruction) for s in samples],
                        [s.pil() for s in samples], "right", suffix=[s.response for s in samples])
        batch["labels"] = torch.as_tensor(batch["labels"])
        return batch


def require_images(samples: Sequence[Sample], family: str) -> None:
    """A family whose prompt is one image and one instruction takes neither a text-only sample nor
    a later turn of a conversation."""
    if text_only := [s.id for s in samples if not s.has_image]:
        raise DataError(f"sample {text_only[0]!r}, field 'image': {family} needs an image in every prompt; "
                        f"{len(text_only)} sample(s) of this batch are text-only")
    if later := [s.id for s in samples if s.history]:
        raise DataError(f"sample {later[0]!r}, field 'history': {family} takes one instruction per image, not a "
                        "conversation's later turns")


def require_one_image_each(samples: Sequence[Sample], family: Family) -> None:
    """A family that takes one image per prompt refuses a sample with several, naming those that take them."""
    if not family.several_images and (several := next((s for s in samples if s.more_images), None)):
        takers = ", ".join(f.name for f in FAMILIES if f.several_images)
        raise DataError(f"sample {several.id!r}, field 'image': {len(several.images)} images; {family.name} takes "
                        f"one image per prompt (several: {takers})")


PromptStyle = ChatTemplate | PrefixSuffix


class UnsupportedModelError(ValueError):
    """The model's architecture is not one of the supported families."""


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # config.model_type values of this family
    language_model: str  # module-path component of the language model ("language_model", "text_model")
    prompt_style: PromptStyle = field(default_factory=ChatTemplate)
    several_images: bool = False  # trained on prompts of several images (interleaved data), so given them
    # Whether the keys and values of a prompt prefix that every row of a batch shares (the same image
    # included) are the same computed once for all rows (`VLM.response_logits`): a language model that
    # reads the prompt causally at plain token positions. Not PaliGemma (its prefix attends both ways:
    # the image positions see the instruction), nor Qwen2-VL (positions computed from the whole input).
    shares_prefixes: bool = True

    def image_token_id(self, config) -> int:
        """The id of the placeholder token each image position holds in the input ids (every
        supported family's config names it image_token_id)."""
        return config.image_token_id

    @property
    def lora_target(self) -> str:
        """Regex for PEFT: the language model's attention projections, never the vision tower's."""
        return rf".*\.{self.language_model}\..*\.(q_proj|k_proj|v_proj|o_proj)"


FAMILIES: tuple[Family, ...] = (
    Family("LLaVA-1.5", ("llava",), "language_model"),
    Family("LLaVA-NeXT", ("llava_next",), "language_model", several_images=True),
    Family("Qwen2-VL", ("qwen2_vl",), "language_model", several_images=True, shares_prefixes=False),
    Family("Qwen2.5-VL", ("qwen2_5_vl",), "language_model", several_images=True, shares_prefixes=False),
    Family("Idefics3 (SmolVLM)", ("idefics3",), "text_model", several_images=True),
    Family("PaliGemma", ("paligemma",), "language_model", prompt_style=PrefixSuffix(), shares_prefixes=False),
)


def family_of(model_type: str) -> Family:
    """The family of a config's model_type; an unsupported one fails with the list of supported ones."""
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    supported = ", ".join(f"{f.name} ({'/'.join(f.model_types)})" for f in FAMILIES)
    raise UnsupportedModelError(f"model_type {model_type!r} is not a supported VLM family. Supported: {supported}")
