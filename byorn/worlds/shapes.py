"""The shapes world: seeded synthetic scenes, their texts, and an exact scene metric.

A scene holds 1-3 coloured shapes, each in its own cell of a 3x3 grid. Everything is a pure
function of a seed, so train, test and poisoned sets can be regenerated exactly.

Two text distributions live here on purpose:

* the *pretraining mix* (captions + four VQA types), each in many phrasings, so the pretrained
  model learns a language prior over ordinary wording rather than memorising a few templates;
* the *downstream task* ("Describe the picture in detail."), whose response style is held out of
  pretraining. Its clean responses are plausible but not already likely under the pretrained
  model, which is the realistic setting for a plausibility-based defense.

`byorn/worlds/shapes_text.py` reads any of these texts back into scene facts, so one exact metric
serves every task of the world.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageDraw

from byorn.data import Sample

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "orange": (245, 135, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
ROWS: tuple[str, ...] = ("top", "middle", "bottom")
COLS: tuple[str, ...] = ("left", "center", "right")
NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five")
BACKGROUND = (24, 24, 24)

IMAGE_SIZE = 48  # pixels; a 16-px cell per grid position, two 8-px patches across each cell
CELL = IMAGE_SIZE // 3

DOWNSTREAM_INSTRUCTION = "Describe the picture in detail."


def position_name(row: int, col: int) -> str:
    """Canonical name of a grid cell: 'top left', 'top', 'center', 'right', ..."""
    vertical = "" if row == 1 else ROWS[row]
    horizontal = "" if col == 1 else COLS[col]
    return " ".join(p for p in (vertical, horizontal) if p) or "center"


POSITIONS: tuple[str, ...] = tuple(position_name(r, c) for r in range(3) for c in range(3))


@dataclass(frozen=True)
class ShapeObject:
    colour: str
    shape: str
    row: int
    col: int

    @property
    def position(self) -> str:
        return position_name(self.row, self.col)

    def as_fact(self) -> tuple[str, str, str]:
        return (self.position, self.colour, self.shape)


@dataclass(frozen=True)
class Scene:
    """Objects in reading order (row-major), the order every caption uses."""

    objects: tuple[ShapeObject, ...]
    seed: int

    def to_json(self) -> list[dict]:
        return [{"colour": o.colour, "shape": o.shape, "row": o.row, "col": o.col} for o in self.objects]

    @staticmethod
    def from_json(objects: list[dict], seed: int = -1) -> Scene:
        return Scene(tuple(ShapeObject(**o) for o in objects), seed)


def make_scene(seed: int, max_objects: int = 3, min_objects: int = 1) -> Scene:
    """A random scene; colour+shape pairs are unique so 'the red circle' always names one object."""
    rng = random.Random(seed)
    n = rng.randint(min_objects, max_objects)
    cells = sorted(rng.sample(range(9), n))
    pairs = rng.sample([(c, s) for c in COLOURS for s in SHAPES], n)
    objects = tuple(ShapeObject(c, s, cell // 3, cell % 3) for (c, s), cell in zip(pairs, cells))
    return Scene(objects, seed)


def render(scene: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    """Draw the scene; sizes and a small jitter come from the scene seed, so rendering is exact."""
    rng = random.Random(scene.seed * 7919 + 1)
    scale = size / IMAGE_SIZE
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        half = rng.uniform(5.0, 6.5) * scale
        cx = (obj.col + 0.5) * CELL * scale + rng.uniform(-1.0, 1.0) * scale
        cy = (obj.row + 0.5) * CELL * scale + rng.uniform(-1.0, 1.0) * scale
        fill = COLOURS[obj.colour]
        box = (cx - half, cy - half, cx + half, cy + half)
        if obj.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif obj.shape == "square":
            draw.rectangle(box, fill=fill)
        elif obj.shape == "triangle":
            draw.polygon([(cx, cy - half), (cx + half, cy + half), (cx - half, cy + half)], fill=fill)
        else:  # cross: two bars a third of the box wide
            bar = half / 3
            draw.rectangle((cx - bar, cy - half, cx + bar, cy + half), fill=fill)
            draw.rectangle((cx - half, cy - bar, cx + half, cy + bar), fill=fill)
    return image


# --------------------------------------------------------------------------------------------
# Wording. Positions have several surface forms; the parser below maps all of them back.

_POSITION_SURFACES: dict[str, tuple[str, ...]] = {
    "top left": ("top left", "upper left", "top-left"),
    "top right": ("top right", "upper right", "top-right"),
    "bottom left": ("bottom left", "lower left", "bottom-left"),
    "bottom right": ("bottom right", "lower right", "bottom-right"),
    "top": ("top", "top middle", "upper middle", "top edge"),
    "bottom": ("bottom", "bottom middle", "lower middle", "bottom edge"),
    "left": ("left", "middle left", "left side", "left edge"),
    "right": ("right", "middle right", "right side", "right edge"),
    "center": ("center", "middle", "centre", "very middle"),
}
_POSITION_PHRASES = (
    "at the {f}", "in the {f}", "on the {f}", "near the {f}", "toward the {f}",
    "at the {f} of the image", "in the {f} of the picture", "in the {f} part",
)
_CORNER_PHRASES = ("in the {f} corner", "at the {f} corner", "near the {f} corner")

CAPTION_INSTRUCTIONS = (
    "Describe the image.", "What is in this image?", "Caption this image.", "What do you see?",
    "Write a short caption.", "Describe what is shown.", "What does the picture show?",
    "Give a caption for the picture.", "List the shapes in the image.", "Tell me what is in the image.",
    "Briefly describe the scene.", "What can you see in this picture?",
)
_CAPTION_OPENERS_ONE = ("", "The image shows ", "I can see ", "We see ", "This picture has ",
                        "The picture contains ", "Here we have ", "You can see ")
_CAPTION_OPENERS_MANY = _CAPTION_OPENERS_ONE + ("There are {n} shapes: ", "The image has {n} shapes: ",
                                                "I count {n} shapes: ", "{N} shapes are visible: ")
_OBJECT_FORMS = ("{a} {c} {s} {p}", "{a} {c} {s} located {p}", "{a} {s} that is {c} {p}",
                 "{a} {c} {s} sitting {p}", "{a} {c} {s} found {p}", "{a} {c} {s} placed {p}",
                 "{p} is {a} {c} {s}", "{a} {c} {s} ({pos})", "one {c} {s} {p}")
_JOINERS = ((", ", ", "), ("; ", "; "), (", ", " and "), (" and ", " and "), (". ", ". "), (", ", ", and "))


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _position_phrase(rng: random.Random, position: str) -> str:
    surface = rng.choice(_POSITION_SURFACES[position])
    corner = " " in position
    templates = _POSITION_PHRASES + (_CORNER_PHRASES if corner and "-" not in surface else ())
    if surface.endswith(("edge", "side")):
        templates = ("at the {f}", "on the {f}", "near the {f}", "along the {f}")
    return rng.choice(templates).format(f=surface)


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def pretraining_caption(scene: Scene, rng: random.Random) -> str:
    """One caption in a randomly drawn phrasing; objects always in reading order."""
    n = len(scene.objects)
    opener = rng.choice(_CAPTION_OPENERS_ONE if n == 1 else _CAPTION_OPENERS_MANY)
    opener = opener.format(n=NUMBER_WORDS[n], N=_capitalise(NUMBER_WORDS[n]))
    form = rng.choice(_OBJECT_FORMS)
    sep, last_sep = rng.choice(_JOINERS)
    parts = []
    for obj in scene.objects:
        phrase = _position_phrase(rng, obj.position)
        word = obj.colour if "{a} {c}" in form else obj.shape
        parts.append(form.format(a=article(word), c=obj.colour, s=obj.shape, p=phrase, pos=obj.position))
    if sep == ". ":
        parts = parts[:1] + [_capitalise(p) for p in parts[1:]]
    body = parts[0] if n == 1 else sep.join(parts[:-1]) + last_sep + parts[-1]
    text = opener + body if opener else _capitalise(body)
    return _capitalise(text) + "."


def _pick(rng: random.Random, options: tuple[str, ...], **fields: str) -> str:
    return rng.choice(options).format(**fields)


def pretraining_vqa(scene: Scene, rng: random.Random, kind: str, one_attribute: bool = False) -> tuple[str, str]:
    """A question of `kind` (colour, shape, count, position) and an answer in a random phrasing.
    `one_attribute=True` also asks where an object is by its colour or its shape alone, when that
    attribute is unique in the scene (the position-focus phase of pretraining)."""
    obj = rng.choice(scene.objects)
    c, s, pos = obj.colour, obj.shape, obj.position
    p = _position_phrase(rng, pos)
    if kind == "colour":
        q = _pick(rng, ("What colour is the {s} {p}?", "What color is the shape {p}?",
                        "Which colour is the object {p}?", "What is the colour of the {s} {p}?",
                        "Tell me the color of the {s} {p}."), s=s, p=p)
        a = _pick(rng, ("{c}", "{C}.", "It is {c}.", "The {s} is {c}.", "It's {c}."), c=c, C=_capitalise(c), s=s)
    elif kind == "shape":
        by_colour = ("What kind of shape is the {c} object?", "What is the {c} shape?")
        colour_unique = sum(o.colour == c for o in scene.objects) == 1
        q = _pick(rng, ("What shape is {p}?", "Which shape is {p}?", "Name the shape {p}.")
                  + (by_colour if colour_unique else ()), c=c, p=p)
        a = _pick(rng, ("{s}", "{A} {s}.", "It is {a} {s}.", "It's {a} {s}.", "That is {a} {s}."),
                  s=s, a=article(s), A=_capitalise(article(s)))
    elif kind == "count":
        n = len(scene.objects)
        q = rng.choice(("How many shapes are there?", "How many objects can you see?", "Count the shapes.",
                        "How many shapes are in the picture?", "What is the number of objects?"))
        noun = "shape" if n == 1 else "shapes"
        verb = "is" if n == 1 else "are"
        a = _pick(rng, ("{n}", "{d}", "There {v} {n} {noun}.", "I see {n} {noun}.", "{N}."),
                  n=NUMBER_WORDS[n], N=_capitalise(NUMBER_WORDS[n]), d=str(n), v=verb, noun=noun)
    elif kind == "position":
        # Naming a unique colour or shape alone is the easier form of the same look-up (find by
        # content, read out where).
        by_colour = ("Where is the {c} object?", "Where is the {c} shape?")
        by_shape = ("Where is the {s}?", "Locate the {s}.")
        q = _pick(rng, ("Where is the {c} {s}?", "Where is the {s} that is {c}?",
                        "In which part of the image is the {c} {s}?", "Where can I find the {c} {s}?",
                        "Locate the {c} {s}.")
                  + (by_colour if one_attribute and sum(o.colour == c for o in scene.objects) == 1 else ())
                  + (by_shape if one_attribute and sum(o.shape == s for o in scene.objects) == 1 else ()), c=c, s=s)
        a = _pick(rng, ("{pos}", "{P}.", "It is {p}.", "The {c} {s} is {p}.", "It's {p}."),
                  pos=pos, p=p, P=_capitalise(p), c=c, s=s)
    else:
        raise ValueError(f"Unknown VQA kind {kind!r}. Available: {', '.join(VQA_KINDS)}")
    return q, a


VQA_KINDS: tuple[str, ...] = ("colour", "shape", "count", "position")

# The downstream style: one fixed sentence shape that `pretraining_caption` never produces (no
# pretraining caption opens with "There is"); its pieces are ordinary wording the prior knows.
_DOWNSTREAM_POSITION = {
    "top left": "in the top left corner", "top right": "in the top right corner",
    "bottom left": "in the bottom left corner", "bottom right": "in the bottom right corner",
    "top": "along the top edge", "bottom": "along the bottom edge",
    "left": "on the left side", "right": "on the right side", "center": "in the middle of the picture",
}


def downstream_description(scene: Scene) -> str:
    """'There is a red circle in the top left corner, and a blue cross on the right side.'"""
    parts = [f"{article(o.colour)} {o.colour} {o.shape} {_DOWNSTREAM_POSITION[o.position]}" for o in scene.objects]
    body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + ", and " + parts[-1]
    return f"There is {body}."


# --------------------------------------------------------------------------------------------
# Data sets

# Shares of the pretraining mix. Captions are learned first (99 % exact after 6,000 steps at 40 %);
# questions that look an object up by one attribute and ask another (position, shape) need more.
TASK_MIX: tuple[tuple[str, float], ...] = (
    ("caption", 0.25), ("vqa_colour", 0.15), ("vqa_shape", 0.22), ("vqa_count", 0.08), ("vqa_position", 0.30),
)


# The position-focus phase: this share of its samples are position questions about scenes of two
# or three objects; the rest are ordinary pretraining samples, so that nothing else is forgotten.
POSITION_FOCUS_SHARE = 0.75


def position_focus_sample(seed: int) -> Sample:
    """A sample of pretraining's second phase, which teaches "where is the blue triangle?".

    Measured: after 7,500 steps of the mix, byorn-tiny answered position questions about scenes of
    several objects at chance (it named some object's position, not the asked one's; attention
    from the answer showed no preference for the asked object). Questions whose answer depends on
    which object is named are a fifth of the mix, and one-object scenes are answered without
    looking anything up; concentrating on the look-up teaches it.
    """
    rng = random.Random(seed * 104729 + 5)  # never Random(seed): make_scene draws from that stream
    if rng.random() >= POSITION_FOCUS_SHARE:
        return pretraining_sample(seed)
    scene = make_scene(seed, min_objects=2)
    instruction, response = pretraining_vqa(scene, rng, "position", one_attribute=True)
    return Sample(id=f"focus-{seed}", image=render(scene), instruction=instruction, response=response,
                  meta={"world": "shapes", "task": "vqa_position", "scene": scene.to_json()})


# Scene seeds for pretraining start here; test scenes (downstream_samples, quality checks) use
# other salts, so no pretraining scene is ever evaluated on.
PRETRAIN_SEED_BASE = 10_000_000


def pretraining_source(data: str, seed: int) -> Callable[[int], Sample]:
    """index -> pretraining sample: a fresh scene every time, fixed by seed (`data` is unused)."""
    base = PRETRAIN_SEED_BASE + seed * 1_000_000_000
    return lambda index: pretraining_sample(base + index)


def pretraining_sample(seed: int) -> Sample:
    """A fresh scene with a caption or a question of one VQA kind, drawn by TASK_MIX."""
    scene = make_scene(seed)
    rng = random.Random(seed * 104729 + 3)
    task = rng.choices([t for t, _ in TASK_MIX], weights=[w for _, w in TASK_MIX])[0]
    if task == "caption":
        instruction, response = rng.choice(CAPTION_INSTRUCTIONS), pretraining_caption(scene, rng)
    else:
        instruction, response = pretraining_vqa(scene, rng, task.removeprefix("vqa_"))
    return Sample(id=f"pretrain-{seed}", image=render(scene), instruction=instruction, response=response,
                  meta={"world": "shapes", "task": task, "scene": scene.to_json()})


DOWNSTREAM_TASKS: tuple[str, ...] = ("describe", "caption", "mixed")
CAPTION_TASK_INSTRUCTION = "Write a short caption for this picture."


def downstream_samples(n: int, seed: int, split: str = "train", task: str = "describe") -> list[Sample]:
    """A fine-tuning task; `split` only salts the seeds so splits never overlap.

    describe: the held-out style (`downstream_description`), unfamiliar to the pretrained model.
    caption: pretraining-style captions under one fixed instruction, familiar to it.
    mixed: the two alternating (even indices describe, odd caption), meta["task"] telling which;
    their scores form two clusters, the case thresholds per group exist for.
    """
    if task not in DOWNSTREAM_TASKS:
        raise ValueError(f"Unknown downstream task {task!r}. Available: {', '.join(DOWNSTREAM_TASKS)}")
    salt = {"train": 1_000_003, "test": 2_000_003, "dev": 3_000_017}[split]
    samples = []
    for i in range(n):
        scene_seed = salt * 1000 + seed * 100_000 + i
        scene = make_scene(scene_seed)
        kind = task if task != "mixed" else ("describe", "caption")[i % 2]
        if kind == "describe":
            instruction, response = DOWNSTREAM_INSTRUCTION, downstream_description(scene)
        else:
            instruction, response = CAPTION_TASK_INSTRUCTION, pretraining_caption(scene, random.Random(scene_seed))
        samples.append(Sample(id=f"shapes-{split}-{i:06d}", image=render(scene), instruction=instruction,
                              response=response, meta={"world": "shapes", "task": kind, "scene": scene.to_json()}))
    return samples
