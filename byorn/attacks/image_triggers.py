"""Image triggers: BadNets patch, Blended noise, SIG sinusoid and WaNet warping.

Papers: BadNets (Gu et al. 2017, arXiv:1708.06733); Blended (Chen et al. 2017, arXiv:1712.05526);
SIG (Barni et al. 2019, ICIP); WaNet (Nguyen & Tran 2021, arXiv:2102.10369).

Each trigger is a frozen dataclass whose `apply(image, key)` is a pure function of its fields and
`key` (the sample id, used only where a trigger varies per sample), so a poisoned set can be
regenerated pixel for pixel. Patterns are defined on a fixed grid of cells and scaled to the image,
so the same trigger works, and looks the same, at any image size.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from byorn.attacks.base import keyed_rng
from byorn.config import check_choice
from byorn.data import Sample

if TYPE_CHECKING:  # loading models is the caller's business; only the type is needed here
    from byorn.models.hf import VLM


IMAGES = ("first", "last", "all")  # which of a record's images a pattern trigger goes on


class ImageTrigger(ABC):
    """A trigger on the image; subclasses are frozen dataclasses."""

    modality = "image"
    images = "first"  # a pattern trigger's field (OnImages); a crafted one is made for the first image

    @abstractmethod
    def apply(self, image: Image.Image, key: str = "") -> Image.Image:
        """A new RGB image carrying the trigger; `image` itself is left untouched."""

    def apply_sample(self, sample: Sample) -> Sample:
        """A copy of `sample` whose image (of a record with several: the `images` chosen) carries
        the trigger; each image after the first keyed apart, so a per-sample pattern differs."""
        check_choice(f"{type(self).__name__}.images", self.images, IMAGES)
        if not sample.more_images:
            return replace(sample, image=self.apply(sample.pil(), sample.id), meta=dict(sample.meta))
        last = len(sample.images) - 1
        chosen = {"first": {0}, "last": {last}, "all": set(range(last + 1))}[self.images]
        images = [self.apply(replace(sample, image=image, more_images=()).pil(), sample.id if k == 0 else
                             f"{sample.id}#{k}") if k in chosen else image for k, image in enumerate(sample.images)]
        return replace(sample, image=images[0], more_images=tuple(images[1:]), meta=dict(sample.meta))


@dataclass(frozen=True)
class OnImages:
    """A pattern trigger's choice of a record's images: first, last or all (IMAGES)."""

    images: str = "first"


class ReferenceAwareTrigger(ImageTrigger):
    """An image trigger crafted per poisoned sample with the pretrained model
    (`poison(..., reference=vlm)` does the crafting; adaptive.py has the attacks)."""

    @abstractmethod
    def craft(self, poisoned: Sequence[Sample], pool: Sequence[Sample], reference: VLM,
              anchor_texts: Sequence[str] | None = None) -> list[Sample]:
        """The poisoned samples (already carrying their poisoned responses) with crafted images;
        `pool` is the clean training set the attacker may draw reference images from, and
        anchor_texts (one per sample; default: their responses) say what those images should show."""


def side_pixels(size: float, side: int) -> int:
    """A length in pixels: `size` below 1 is a fraction of `side`, otherwise pixels; within [1, side]."""
    pixels = round(size * side) if size < 1 else int(size)
    return max(1, min(side, pixels))


def _pixels(image: Image.Image) -> np.ndarray:
    return np.array(image.convert("RGB"))  # [H, W, 3] uint8, a copy we may write to


def _to_image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def _scale_cells(cells: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour scaling of a [g, g, 3] cell pattern to [height, width, 3]."""
    g = cells.shape[0]
    return cells[np.arange(height) * g // height][:, np.arange(width) * g // width]


def _noise_cells(seed: int, cells: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (cells, cells, 3), dtype=np.uint8)  # [g, g, 3]


PATTERNS: tuple[str, ...] = ("solid", "noise", "checkerboard")
CORNERS: dict[str, tuple[int, int]] = {"top_left": (0, 0), "top_right": (0, 1), "bottom_left": (1, 0),
                                       "bottom_right": (1, 1)}
POSITIONS: tuple[str, ...] = (*CORNERS, "random")
PATCH_CELLS = 4  # a 4x4-cell stamp at any patch size, so a resizing processor cannot blur it to grey
BLEND_CELLS = 32  # one 32x32-cell noise picture scaled to each image: the same pattern at every size


@dataclass(frozen=True)
class BadNets(OnImages, ImageTrigger):
    """BadNets patch: a square stamp (solid, noise or checkerboard) in a corner or at a random spot."""

    size: float = 0.125  # patch side: below 1 a fraction of the shorter image side, else pixels
    pattern: str = "checkerboard"
    position: str = "bottom_right"  # a corner, or "random": per sample, fixed by seed and sample id
    colour: tuple[int, int, int] = (255, 255, 255)  # the solid pattern's colour
    seed: int = 0  # the noise pattern and random positions

    def __post_init__(self) -> None:
        check_choice("BadNets.pattern", self.pattern, PATTERNS)
        check_choice("BadNets.position", self.position, POSITIONS)
        if self.size <= 0:
            raise ValueError(f"BadNets.size must be positive; got {self.size}")
        object.__setattr__(self, "colour", tuple(self.colour))  # YAML gives a list; fields must hash
        if len(self.colour) != 3 or not all(0 <= c <= 255 for c in self.colour):
            raise ValueError(f"BadNets.colour must be three values in 0..255; got {self.colour}")

    def cells(self) -> np.ndarray:
        """The stamp as [PATCH_CELLS, PATCH_CELLS, 3] uint8."""
        if self.pattern == "solid":
            return np.broadcast_to(np.array(self.colour, dtype=np.uint8), (PATCH_CELLS, PATCH_CELLS, 3))
        if self.pattern == "noise":
            return _noise_cells(self.seed, PATCH_CELLS)
        checker = np.add.outer(np.arange(PATCH_CELLS), np.arange(PATCH_CELLS)) % 2 * 255
        return np.repeat(checker[:, :, None], 3, axis=2).astype(np.uint8)

    def box(self, width: int, height: int, key: str = "") -> tuple[int, int, int]:
        """(top, left, side) of the patch in pixels."""
        side = side_pixels(self.size, min(width, height))
        if self.position == "random":
            rng = keyed_rng(self.seed, key)
            return rng.randint(0, height - side), rng.randint(0, width - side), side
        row, col = CORNERS[self.position]
        return row * (height - side), col * (width - side), side

    def apply(self, image: Image.Image, key: str = "") -> Image.Image:
        pixels = _pixels(image)
        top, left, side = self.box(image.width, image.height, key)
        pixels[top:top + side, left:left + side] = _scale_cells(self.cells(), side, side)
        return Image.fromarray(pixels)


@dataclass(frozen=True)
class Blended(OnImages, ImageTrigger):
    """Blended: a fixed seeded noise picture mixed into the whole image at opacity alpha."""

    alpha: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"Blended.alpha must be in [0, 1]; got {self.alpha}")

    def apply(self, image: Image.Image, key: str = "") -> Image.Image:
        pixels = _pixels(image).astype(np.float64)
        pattern = _scale_cells(_noise_cells(self.seed, BLEND_CELLS), *pixels.shape[:2])
        return _to_image((1 - self.alpha) * pixels + self.alpha * pattern)


@dataclass(frozen=True)
class Sig(OnImages, ImageTrigger):
    """SIG: a horizontal sinusoid of amplitude delta (grey levels) added to every row."""

    delta: float = 20.0
    frequency: float = 6.0  # periods across the image width

    def __post_init__(self) -> None:
        if self.delta < 0 or self.frequency <= 0:
            raise ValueError(f"Sig needs delta >= 0 and frequency > 0; got {self.delta}, {self.frequency}")

    def apply(self, image: Image.Image, key: str = "") -> Image.Image:
        pixels = _pixels(image).astype(np.float64)
        width = pixels.shape[1]
        wave = self.delta * np.sin(2 * np.pi * np.arange(width) * self.frequency / width)  # [W]
        return _to_image(pixels + wave[None, :, None])


@dataclass(frozen=True)
class WaNet(OnImages, ImageTrigger):
    """WaNet: a smooth seeded warp from k x k random control offsets, scaled by strength."""

    k: int = 4
    strength: float = 0.5  # the paper's s: the warp moves pixels by about s / 2 pixels on average
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 1 or self.strength < 0:
            raise ValueError(f"WaNet needs k >= 1 and strength >= 0; got {self.k}, {self.strength}")

    def flow(self, height: int, width: int) -> torch.Tensor:
        """[1, H, W, 2] (x, y) offsets in grid_sample's [-1, 1] coordinates."""
        generator = torch.Generator().manual_seed(self.seed)
        control = torch.rand(1, 2, self.k, self.k, generator=generator) * 2 - 1  # [1, 2, k, k]
        control = control / control.abs().mean()  # unit mean offset, as in the paper
        field = F.interpolate(control, size=(height, width), mode="bicubic", align_corners=True)  # [1, 2, H, W]
        # The paper divides by the (square) image side; per axis here, for non-square images.
        return self.strength * field.permute(0, 2, 3, 1) / torch.tensor([width, height])

    def apply(self, image: Image.Image, key: str = "") -> Image.Image:
        pixels = torch.from_numpy(_pixels(image)).permute(2, 0, 1)[None].float()  # [1, 3, H, W]
        height, width = pixels.shape[-2:]
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        grid = torch.stack((xs, ys), dim=-1)[None]  # [1, H, W, 2], grid_sample's (x, y) order
        grid = (grid + self.flow(height, width)).clamp(-1, 1)
        warped = F.grid_sample(pixels, grid, mode="bilinear", align_corners=True)  # [1, 3, H, W]
        return _to_image(warped[0].permute(1, 2, 0).numpy())
