"""The VLM families byorn supports, and what differs between them.

Everything a family needs is read from its own processor (chat template, image tokens, image
preprocessing); what is left to say per family is where its language model lives (the LoRA
targets are that model's attention projections) and how its processor wants a training pair:
- "chat_template": prompt and prompt+response rendered by the processor's chat template; the
  response tokens are those after the prompt (LLaVA, LLaVA-NeXT, Qwen2-VL, Idefics3);
- "prefix_suffix": the processor takes the prompt as `text` and the response as `suffix` and
  marks the response with token_type_ids (PaliGemma, whose prefix attends bidirectionally).
The README's family table says which tests cover each family.
"""

from __future__ import annotations

from dataclasses import dataclass

PROMPT_STYLES = ("chat_template", "prefix_suffix")


class UnsupportedModelError(ValueError):
    """The model's architecture is not one of the supported families."""


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # config.model_type values of this family
    language_model: str  # module-path component of the language model ("language_model", "text_model")
    prompt_style: str = "chat_template"

    @property
    def lora_target(self) -> str:
        """Regex for PEFT: the language model's attention projections, never the vision tower's."""
        return rf".*\.{self.language_model}\..*\.(q_proj|k_proj|v_proj|o_proj)"


FAMILIES: tuple[Family, ...] = (
    Family("LLaVA-1.5", ("llava",), "language_model"),
    Family("LLaVA-NeXT", ("llava_next",), "language_model"),
    Family("Qwen2-VL", ("qwen2_vl",), "language_model"),
    Family("Qwen2.5-VL", ("qwen2_5_vl",), "language_model"),
    Family("Idefics3 (SmolVLM)", ("idefics3",), "text_model"),
    Family("PaliGemma", ("paligemma",), "language_model", prompt_style="prefix_suffix"),
)


def family_of(model_type: str) -> Family:
    """The family of a config's model_type; an unsupported one fails with the list of supported ones."""
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    supported = ", ".join(f"{f.name} ({'/'.join(f.model_types)})" for f in FAMILIES)
    raise UnsupportedModelError(f"model_type {model_type!r} is not a supported VLM family. Supported: {supported}")
