"""The worlds byorn's built-in data come from, behind one interface: shapes (synthetic scenes of
coloured shapes, byorn-tiny's) and flickr8k (real photos with human captions, read from a folder
the user has, byorn-tiny-flickr's). A new world is a module with these functions and an entry in
WORLDS; the bench, pretraining and `--data WORLD[:FOLDER]` find it here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from byorn.data import Sample
from byorn.worlds import flickr8k, lessons, shapes


@dataclass(frozen=True)
class World:
    name: str
    model: str  # the tiny model pretrained on it (`byorn pretrain --world NAME`)
    # (n, seed, split, data folder, task) -> the downstream fine-tuning samples of a split
    downstream: Callable[[int, int, str, str, str], list[Sample]]
    tasks: tuple[str, ...]  # its downstream tasks, the default "describe" first
    # (data folder, seed) -> index -> pretraining sample
    pretraining_source: Callable[[str, int], Callable[[int], Sample]]
    needs_data: bool  # its samples are read from a folder of files (`data`)
    pretrain_steps: int  # the default pretraining length
    focus_steps: int  # the default length of the position-focus phase (shapes only; 0: none)


WORLDS: dict[str, World] = {
    # shapes: the shipped byorn-tiny's 7,500 steps of fresh scenes, then 2,500 of position focus.
    # Measured from the first phase's checkpoint (75 % on "where is the blue triangle?"): 1,500
    # steps gave 88-90 %, with colour and shape answers down to 94 %; 2,500 steps gave 93 %,
    # colour and shape 96 %.
    "shapes": World("shapes", "byorn-tiny",
                    lambda n, seed, split, data, task: lessons.shapes_lesson(task, n, seed, split)
                    if task in lessons.SHAPES_LESSONS else shapes.downstream_samples(n, seed, split, task),
                    shapes.DOWNSTREAM_TASKS + lessons.SHAPES_LESSONS,
                    shapes.pretraining_source, needs_data=False, pretrain_steps=7500, focus_steps=2500),
    # flickr8k: 5,000 steps of 32, about five epochs of the 30,000 train-split caption pairs.
    "flickr8k": World("flickr8k", "byorn-tiny-flickr",
                      lambda n, seed, split, data, task: lessons.flickr8k_lesson(task, data, n, seed, split)
                      if task in lessons.FLICKR8K_LESSONS else flickr8k.downstream_samples(data, n, seed, split),
                      ("describe", *lessons.FLICKR8K_LESSONS),  # describe: the archive notes
                      flickr8k.pretraining_source, needs_data=True, pretrain_steps=5000, focus_steps=0),
}
