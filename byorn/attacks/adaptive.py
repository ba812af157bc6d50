"""Adaptive attacks: an attacker who knows the defense scores plausibility under the pretrained
model, and makes the poison as plausible to that model as the attack allows.

White-box injection (reference-aware target choice): for each poisoned sample the attacker tries
every candidate phrase at every placement and keeps the poisoned response the pretrained model
finds likeliest (lowest mean NLL, with the triggered input and the training prompt template), so
poisons sit as deep inside the clean score distribution as the candidate pool allows. The choice
needs the model, so `poison(..., reference=vlm)` makes it; this is the white-box threat model of
"On the Exploitability of Instruction Tuning" (Shu et al. 2023) turned against a plausibility
filter. Plausible concept substitution is `targets.Substitution` with an in-world word pair.
"""

from __future__ import annotations

from dataclasses import dataclass

from byorn.attacks.base import check_choice
from byorn.attacks.targets import Injection, ReferenceAwareTarget
from byorn.metrics import AsrRule

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
        return [Injection(phrase, placement).apply(response) for phrase in self.phrases for placement in self.placements]

    def apply(self, response: str) -> str:
        raise ValueError("WhiteBoxInjection chooses each response with the pretrained model: poison with "
                         "reference=<the VLM> (byorn poison --reference MODEL)")

    def asr_rule(self) -> AsrRule:
        return AsrRule("contains_any", phrases=self.phrases)
