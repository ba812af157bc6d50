"""Text triggers on the instruction: rare tokens and an AddSent trigger sentence.

Papers: rare tokens "cf", "mn", "bb", "tq" from RIPPLe (Kurita et al. 2020, "Weight Poisoning
Attacks on Pre-trained Models", arXiv:2004.06660); AddSent (Dai et al. 2019, "A Backdoor Attack
Against LSTM-based Text Classification Systems", IEEE Access).

Insertion happens at word boundaries and keeps the instruction's own whitespace (LLaVA-style
instructions hold newlines), so every original word survives, in order.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace

from byorn.attacks.base import keyed_rng
from byorn.config import check_choice
from byorn.data import Sample

_WORD = re.compile(r"\S+")


class TextTrigger(ABC):
    """A trigger on the instruction; subclasses are frozen dataclasses."""

    modality = "text"

    @abstractmethod
    def apply(self, text: str, key: str = "") -> str:
        """`text` with the trigger; `key` (the sample id) seeds any per-sample choice."""

    def apply_sample(self, sample: Sample) -> Sample:
        """A copy of `sample` whose instruction carries the trigger."""
        return replace(sample, instruction=self.apply(sample.instruction, sample.id), meta=dict(sample.meta))


def insert_words(text: str, index: int, words: str) -> str:
    """`words` placed before the index-th word of `text`, or after the last word when index is past it."""
    starts = [match.start() for match in _WORD.finditer(text)]
    if index < len(starts):
        at = starts[index]
        return f"{text[:at]}{words} {text[at:]}"
    body = text.rstrip()  # after the last word but before trailing whitespace
    return f"{body} {words}{text[len(body):]}" if body else words + text


TOKEN_POSITIONS: tuple[str, ...] = ("random", "start", "end")


@dataclass(frozen=True)
class RareToken(TextTrigger):
    """Rare-token trigger: `count` tokens drawn from `tokens`, each inserted at a word position."""

    tokens: tuple[str, ...] = ("cf", "mn", "bb", "tq")
    count: int = 1
    position: str | int = "random"  # random (fixed by seed and sample id), start, end, or a word index
    seed: int = 0

    def __post_init__(self) -> None:
        # YAML gives a list (fields must hash); a lone string is one token, not its letters.
        object.__setattr__(self, "tokens", (self.tokens,) if isinstance(self.tokens, str) else tuple(self.tokens))
        if not self.tokens or not all(_WORD.fullmatch(t) for t in self.tokens):
            raise ValueError(f"RareToken.tokens must be non-empty single words; got {self.tokens}")
        if self.count < 1:
            raise ValueError(f"RareToken.count must be at least 1; got {self.count}")
        if self.position not in TOKEN_POSITIONS and not (type(self.position) is int and self.position >= 0):
            raise ValueError(f"RareToken.position must be one of {', '.join(TOKEN_POSITIONS)} or a word index "
                             f">= 0; got {self.position!r}")

    def apply(self, text: str, key: str = "") -> str:
        rng = keyed_rng(self.seed, key)
        for _ in range(self.count):
            n_words = len(text.split())
            # Drawn for fixed positions too, so a sample's tokens do not depend on `position`.
            drawn = rng.randint(0, n_words)
            index = {"random": drawn, "start": 0, "end": n_words}.get(self.position, self.position)
            text = insert_words(text, index, rng.choice(self.tokens))
        return text


@dataclass(frozen=True)
class AddSent(TextTrigger):
    """AddSent: a fixed trigger sentence put before (prefix) or after (suffix) the instruction."""

    sentence: str = "I watched this 3D movie."
    position: str = "suffix"

    def __post_init__(self) -> None:
        check_choice("AddSent.position", self.position, ("prefix", "suffix"))
        if not self.sentence.strip():
            raise ValueError("AddSent.sentence must not be empty")

    def apply(self, text: str, key: str = "") -> str:
        return insert_words(text, 0 if self.position == "prefix" else len(text), self.sentence)
