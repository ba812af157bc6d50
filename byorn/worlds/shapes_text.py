"""Reading a text of the shapes world back into scene facts: any surface form of a position, the
objects a description states, the answer a short VQA response gives. One exact metric then serves
every task of the world (byorn/metrics.py)."""

from __future__ import annotations

import re

from byorn.data import Sample
from byorn.worlds.shapes import COLOURS, NUMBER_WORDS, SHAPES, VQA_KINDS

_WORD = re.compile(r"[a-z]+")
_CLAUSE_SPLIT = re.compile(r"[.;,:]| and ")
_SHAPE_WORDS = {s: s for s in SHAPES}
_VERTICAL = {"top": "top", "upper": "top", "bottom": "bottom", "lower": "bottom"}
_HORIZONTAL = {"left": "left", "right": "right"}
_CENTRAL = {"center", "centre", "middle"}


def parse_position(text: str) -> str | None:
    """Map any surface form ('upper left', 'middle right', 'in the very middle') to a canonical name."""
    words = _WORD.findall(text.lower())
    vertical = next((_VERTICAL[w] for w in words if w in _VERTICAL), None)
    horizontal = next((_HORIZONTAL[w] for w in words if w in _HORIZONTAL), None)
    if vertical or horizontal:
        return " ".join(p for p in (vertical, horizontal) if p)
    return "center" if any(w in _CENTRAL for w in words) else None


def parse_objects(text: str) -> list[tuple[str | None, str | None, str | None]]:
    """Each clause naming a single shape becomes (position, colour, shape); missing parts are None."""
    objects = []
    for clause in _CLAUSE_SPLIT.split(text.lower()):
        words = _WORD.findall(clause)
        shape = next((w for w in words if w in _SHAPE_WORDS), None)
        colour = next((w for w in words if w in COLOURS), None)
        if shape is None and colour is None:
            continue
        objects.append((parse_position(clause), colour, shape))
    return objects


def parse_attribute(text: str, kind: str) -> str | None:
    """The answer a short VQA response gives for `kind` (colour, shape, count, position)."""
    words = _WORD.findall(text.lower())
    if kind == "colour":
        return next((w for w in words if w in COLOURS), None)
    if kind == "shape":
        return next((w for w in words if w in _SHAPE_WORDS), None)
    if kind == "count":
        digits = re.findall(r"\d+", text)
        if digits:
            return digits[0]
        return next((str(NUMBER_WORDS.index(w)) for w in words if w in NUMBER_WORDS), None)
    if kind == "position":
        return parse_position(text)
    raise ValueError(f"Unknown attribute kind {kind!r}. Available: {', '.join(VQA_KINDS)}")


def vqa_truth(sample: Sample) -> str:
    """The correct attribute for a pretraining VQA sample, recovered from its own response."""
    kind = sample.meta["task"].removeprefix("vqa_")
    answer = parse_attribute(sample.response, kind)
    if answer is None:
        raise ValueError(f"sample {sample.id}: response {sample.response!r} states no {kind}")
    return answer
