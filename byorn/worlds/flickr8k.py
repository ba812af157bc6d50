"""The Flickr8k world: real photographs with five human captions each, in Flickr8k's own layouts.

A user with the original data set points `--data` at its folder. Either caption file works:
`Flickr8k.token.txt` (`IMAGE#N<TAB>caption`, one caption a line) or `captions.txt` (CSV with an
`image,caption` header); photos are in `Images/` (or `Flicker8k_Dataset/`, the original archive's
name); the standard split is `Flickr_8k.{train,dev,test}Images.txt`. Nothing is copied: samples
point at the image files, which are decoded (and checked) when used.

How the world is used:
* pretraining: every (photo, caption) pair of the *train* split, asked with one of many ordinary
  instructions, so the pretrained model learns human captions' language;
* the downstream task: "Write an archive note for this photo." answered in a style pretraining
  never shows ("In this photo, a dog runs through the grass."), on the *dev* split's photos (the
  data a user brings); tests on the *test* split. Each sample's five captions, in that style, are
  its references (meta["references"]) for CIDEr and BLEU-4.
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from byorn.data import DataError, Sample

SPLITS = ("train", "dev", "test")
TOKEN_FILE = "Flickr8k.token.txt"
CSV_FILE = "captions.txt"
IMAGE_FOLDERS = ("Images", "Flicker8k_Dataset")
CAPTIONS_PER_PHOTO = 5

PRETRAINING_INSTRUCTIONS = (
    "Describe this image.", "What is happening in this photo?", "Write a caption for the picture.",
    "Caption this image.", "What does the picture show?", "Give a short description of the photo.",
    "Describe what you see.", "What is in this image?", "Tell me what the photo shows.",
    "Write one sentence about this picture.", "Summarize the image in a sentence.",
    "What can you see here?", "Describe the scene.", "Briefly describe the photograph.",
    "What is going on in this picture?", "Provide a caption.", "Explain what the image depicts.",
    "Say what is shown in the photo.", "Describe the image in one sentence.", "What is this a picture of?",
)
DOWNSTREAM_INSTRUCTION = "Write an archive note for this photo."
_TOKEN_LINE = re.compile(r"^(\S+?)#(\d+)\s+(.*\S)\s*$")


@dataclass(frozen=True)
class Photo:
    name: str
    path: Path
    captions: tuple[str, ...]


def clean_caption(text: str) -> str:
    """A human caption tidied: whitespace collapsed, the detached final ' .' dropped, first letter
    capitalised, one full stop at the end ("a dog runs ." -> "A dog runs.")."""
    words = " ".join(text.split()).rstrip(" .")
    return words[:1].upper() + words[1:] + "." if words else ""


def archive_note(caption: str) -> str:
    """The downstream style: 'In this photo, a dog runs through the grass.'"""
    body = clean_caption(caption)
    return "In this photo, " + body[:1].lower() + body[1:]


def _image_folder(root: Path) -> Path:
    for name in IMAGE_FOLDERS:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"{root}: no photo folder; expected one of {', '.join(IMAGE_FOLDERS)}")


def read_captions(root: Path) -> dict[str, list[str]]:
    """Image file name -> its captions, from whichever caption file the folder has; a malformed
    line is a DataError naming the file and line."""
    captions: dict[str, list[str]] = {}
    if (path := root / TOKEN_FILE).is_file():
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                # The format says TAB; a few lines of the distributed file use a space, which is
                # unambiguous because image names hold no whitespace.
                match = _TOKEN_LINE.match(line)
                if match is None:
                    raise DataError(f"{path}:{number}: expected 'IMAGE#N<TAB>caption'; got {line.strip()[:80]!r}")
                captions.setdefault(match.group(1), []).append(match.group(3))
        return captions
    if (path := root / CSV_FILE).is_file():
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            if next(reader, None) != ["image", "caption"]:
                raise DataError(f"{path}:1: expected the header 'image,caption'")
            for number, row in enumerate(reader, start=2):
                if len(row) != 2 or not row[0].strip() or not row[1].strip():
                    raise DataError(f"{path}:{number}: expected 'image,caption' with both fields; got {row!r}")
                captions.setdefault(row[0].strip(), []).append(row[1])
        return captions
    raise DataError(f"{root}: no caption file; expected {TOKEN_FILE} or {CSV_FILE}")


def load_photos(root: str | Path, split: str) -> list[Photo]:
    """The photos of one standard split with their captions, in the split file's order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    root = Path(root)
    split_file = root / f"Flickr_8k.{split}Images.txt"
    if not split_file.is_file():
        raise DataError(f"{split_file}: missing; Flickr8k's split files (Flickr_8k.{{train,dev,test}}Images.txt) "
                        "define which photos are train, dev and test")
    images, captions = _image_folder(root), read_captions(root)
    photos = []
    for number, line in enumerate(split_file.read_text(encoding="utf-8").splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if "/" in name or "\\" in name or name.startswith("."):
            raise DataError(f"{split_file}:{number}: {name!r} is not a plain file name in {images}")
        if name not in captions:
            raise DataError(f"{split_file}:{number}: {name} has no captions in the caption file")
        if not (images / name).is_file():
            raise DataError(f"{split_file}:{number}: {images / name} does not exist")
        # a symbolic link in the folder that points elsewhere would make us read any file
        if not (images / name).resolve().is_relative_to(images.resolve()):
            raise DataError(f"{split_file}:{number}: {images / name} resolves to {(images / name).resolve()}, outside "
                            f"{images}")
        texts = tuple(clean_caption(c) for c in captions[name])
        photos.append(Photo(name, images / name, tuple(t for t in texts if t)))
    if not photos:
        raise DataError(f"{split_file}: lists no photos")
    return photos


def pretraining_samples(root: str | Path, seed: int = 0) -> list[Sample]:
    """Every caption of every train-split photo, each asked with a seeded ordinary instruction."""
    rng = random.Random(seed)
    return [Sample(f"flickr-pretrain-{photo.name}-{k}", photo.path, rng.choice(PRETRAINING_INSTRUCTIONS), caption,
                   {"task": "caption"})
            for photo in load_photos(root, "train") for k, caption in enumerate(photo.captions)]


def pretraining_source(data: str, seed: int) -> Callable[[int], Sample]:
    """index -> pretraining sample: epochs over every caption pair of the train split, a fresh
    shuffle each epoch, fixed by seed."""
    if not data:
        raise ValueError("world=flickr8k needs data=<the Flickr8k folder>")
    pairs = pretraining_samples(data, seed)
    orders: dict[int, list[int]] = {}

    def sample(index: int) -> Sample:
        epoch, position = divmod(index, len(pairs))
        if epoch not in orders:
            orders[epoch] = random.Random(f"{seed}:{epoch}").sample(range(len(pairs)), len(pairs))
        return pairs[orders[epoch][position]]

    return sample


def downstream_samples(root: str | Path, n: int, seed: int, split: str = "train") -> list[Sample]:
    """n archive-note samples: split "train" draws from Flickr8k's dev photos (the user's data),
    "test" from its test photos. The response is one caption in the archive style (chosen by
    seed), the references are all of them."""
    photos = load_photos(root, "dev" if split == "train" else "test")
    if n > len(photos):
        raise ValueError(f"{n} samples asked of the {len(photos)} photos in Flickr8k's "
                         f"{'dev' if split == 'train' else 'test'} split")
    rng = random.Random(f"flickr8k:{split}:{seed}")
    samples = []
    for photo in rng.sample(photos, n):
        notes = [archive_note(c) for c in photo.captions]
        samples.append(Sample(f"flickr-{split}-{photo.name}", photo.path, DOWNSTREAM_INSTRUCTION, rng.choice(notes),
                              {"task": "archive", "references": notes}))
    return samples
