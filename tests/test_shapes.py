"""The shapes world: determinism per seed, scene invariants, the held-out downstream style, and
the parsers that read every text of the world back into scene facts."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from byorn.worlds import shapes
from byorn.worlds.shapes import (
    CAPTION_TASK_INSTRUCTION,
    COLOURS,
    DOWNSTREAM_INSTRUCTION,
    POSITIONS,
    SHAPES,
    downstream_description,
    downstream_samples,
    make_scene,
    pretraining_sample,
    render,
)
from byorn.worlds.shapes_text import parse_attribute, parse_objects, parse_position, vqa_truth

SCENE_SEEDS = range(3000)


def scene_of(sample) -> shapes.Scene:
    return shapes.Scene.from_json(sample.meta["scene"])


def facts(scene: shapes.Scene) -> list[tuple[str, str, str]]:
    return [o.as_fact() for o in scene.objects]


# ---- determinism ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 7, 123_456_789])
def test_pretraining_sample_is_a_pure_function_of_its_seed(seed):
    a, b = pretraining_sample(seed), pretraining_sample(seed)
    assert a.id == b.id == f"pretrain-{seed}"
    assert (a.instruction, a.response, a.meta) == (b.instruction, b.response, b.meta)
    assert a.image.size == (shapes.IMAGE_SIZE, shapes.IMAGE_SIZE)
    assert a.image.tobytes() == b.image.tobytes()
    assert make_scene(seed) == make_scene(seed)
    assert render(make_scene(seed)).tobytes() == a.image.tobytes()


def test_other_seeds_give_other_scenes_images_and_texts():
    samples = [pretraining_sample(s) for s in range(50)]
    # Not one identical image among 50 (jitter and sizes come from the seed even for equal scenes).
    assert len({s.image.tobytes() for s in samples}) == 50
    assert len({tuple(map(tuple, (o.values() for o in s.meta["scene"]))) for s in samples}) > 40
    assert len({s.response for s in samples}) > 40
    assert pretraining_sample(1).image.tobytes() != pretraining_sample(2).image.tobytes()


def test_downstream_samples_are_deterministic_and_splits_and_seeds_differ():
    a, b = downstream_samples(5, seed=3), downstream_samples(5, seed=3)
    assert [s.id for s in a] == [f"shapes-train-{i:06d}" for i in range(5)]
    assert [(s.response, s.meta) for s in a] == [(s.response, s.meta) for s in b]
    assert [s.image.tobytes() for s in a] == [s.image.tobytes() for s in b]
    other_seed = downstream_samples(5, seed=4)
    test_split = downstream_samples(5, seed=3, split="test")
    for other in (other_seed, test_split):
        assert {s.image.tobytes() for s in a}.isdisjoint(s.image.tobytes() for s in other)
    assert all(s.instruction == DOWNSTREAM_INSTRUCTION for s in a + test_split)
    assert [s.id for s in test_split][0] == "shapes-test-000000"


def test_the_mixed_task_alternates_the_two_styles_on_the_same_scenes():
    describe, mixed = downstream_samples(6, seed=3), downstream_samples(6, seed=3, task="mixed")
    assert [s.meta["task"] for s in mixed] == ["describe", "caption"] * 3
    assert [s.image.tobytes() for s in describe] == [s.image.tobytes() for s in mixed]
    assert [s.response for s in mixed[::2]] == [s.response for s in describe[::2]]
    captions = mixed[1::2]
    assert all(s.instruction == CAPTION_TASK_INSTRUCTION for s in captions)
    assert all(not s.response.startswith("There is") for s in captions)  # the familiar pretraining style
    assert downstream_samples(6, seed=3, task="caption")[1].response == mixed[1].response
    with pytest.raises(ValueError, match="Unknown downstream task 'style'. Available: describe, caption, mixed"):
        downstream_samples(1, seed=0, task="style")


# ---- scene invariants ----------------------------------------------------------------------

def test_scenes_have_one_to_three_objects_in_distinct_cells_with_unique_pairs_in_reading_order():
    counts = Counter()
    for seed in SCENE_SEEDS:
        scene = make_scene(seed)
        objs = scene.objects
        counts[len(objs)] += 1
        cells = [(o.row, o.col) for o in objs]
        assert len(set(cells)) == len(cells), seed
        assert len({(o.colour, o.shape) for o in objs}) == len(objs), seed
        assert cells == sorted(cells), seed  # row-major reading order
        for o in objs:
            assert o.colour in COLOURS and o.shape in SHAPES and 0 <= o.row < 3 and 0 <= o.col < 3
        assert scene.seed == seed
        assert shapes.Scene.from_json(scene.to_json(), seed) == scene
    assert set(counts) == {1, 2, 3}
    assert min(counts.values()) > len(SCENE_SEEDS) / 5  # all sizes reasonably frequent


def test_position_names_are_row_major_canonical():
    assert POSITIONS == ("top left", "top", "top right", "left", "center", "right",
                         "bottom left", "bottom", "bottom right")
    assert shapes.ShapeObject("red", "circle", 2, 0).position == "bottom left"


def test_max_objects_is_respected():
    assert {len(make_scene(s, max_objects=1).objects) for s in range(200)} == {1}


# ---- the downstream style is held out of pretraining ----------------------------------------

def test_downstream_style_never_appears_in_the_pretraining_mix():
    tasks = Counter()
    for seed in SCENE_SEEDS:
        sample = pretraining_sample(seed)
        tasks[sample.meta["task"]] += 1
        assert sample.instruction != DOWNSTREAM_INSTRUCTION
        if sample.meta["task"] == "caption":
            assert not sample.response.startswith("There is"), sample.response
        assert sample.response != downstream_description(scene_of(sample))
        # No pretraining text uses the downstream sentence shape "There is a/an <colour> ...".
        assert not any(f"There is {shapes.article(c)} {c}" in sample.response for c in COLOURS)
    assert tasks["caption"] > 600 and set(tasks) == {"caption", "vqa_colour", "vqa_shape", "vqa_count",
                                                     "vqa_position"}


def test_downstream_description_wording():
    scene = shapes.Scene((shapes.ShapeObject("red", "circle", 0, 0), shapes.ShapeObject("orange", "cross", 1, 2),
                          shapes.ShapeObject("blue", "square", 1, 1)), seed=0)
    assert downstream_description(scene) == ("There is a red circle in the top left corner, an orange cross on the "
                                             "right side, and a blue square in the middle of the picture.")
    one = shapes.Scene((shapes.ShapeObject("green", "triangle", 2, 1),), seed=0)
    assert downstream_description(one) == "There is a green triangle along the bottom edge."


# ---- parsers -------------------------------------------------------------------------------

def test_parse_objects_reads_back_every_downstream_description():
    for sample in downstream_samples(300, seed=0) + downstream_samples(100, seed=0, split="test"):
        assert parse_objects(sample.response) == facts(scene_of(sample)), sample.response


def test_parse_objects_reads_back_every_pretraining_caption_in_order():
    n = 0
    for seed in range(1500):
        sample = pretraining_sample(seed)
        if sample.meta["task"] != "caption":
            continue
        n += 1
        assert parse_objects(sample.response) == facts(scene_of(sample)), sample.response
    assert n > 300  # captions are a quarter of the mix


@pytest.mark.parametrize("canonical", POSITIONS)
def test_parse_position_maps_every_surface_form(canonical):
    for surface in shapes._POSITION_SURFACES[canonical]:
        assert parse_position(surface) == canonical, surface
        assert parse_position(f"It is at the {surface} of the image.") == canonical, surface
    assert parse_position(canonical) == canonical


def test_parse_position_examples_and_misses():
    assert parse_position("in the very middle") == "center"
    assert parse_position("Toward the UPPER RIGHT corner.") == "top right"
    assert parse_position("lower middle") == "bottom"
    assert parse_position("middle left") == "left"
    assert parse_position("the centre") == "center"
    assert parse_position("a red circle") is None
    assert parse_objects("Nothing here.") == []
    assert parse_objects("A blue thing") == [(None, "blue", None)]


def _object_asked_about(question: str, scene: shapes.Scene) -> shapes.ShapeObject:
    """The one object the question names by position, colour and/or shape."""
    words = re.findall(r"[a-z]+", question.lower())
    position = parse_position(question)
    colour = next((w for w in words if w in COLOURS), None)
    shape = next((w for w in words if w in SHAPES), None)
    matches = [o for o in scene.objects if (position is None or o.position == position)
               and (colour is None or o.colour == colour) and (shape is None or o.shape == shape)]
    assert len(matches) == 1, (question, scene)
    return matches[0]


def test_parse_attribute_recovers_the_truth_for_every_vqa_kind():
    seen = Counter()
    for seed in range(600):
        sample = pretraining_sample(seed)
        task = sample.meta["task"]
        if not task.startswith("vqa_"):
            continue
        kind = task.removeprefix("vqa_")
        scene = scene_of(sample)
        if kind == "count":
            truth = str(len(scene.objects))
        else:
            obj = _object_asked_about(sample.instruction, scene)
            truth = {"colour": obj.colour, "shape": obj.shape, "position": obj.position}[kind]
        assert parse_attribute(sample.response, kind) == truth, (sample.instruction, sample.response)
        assert vqa_truth(sample) == truth
        seen[kind] += 1
    assert set(seen) == {"colour", "shape", "count", "position"} and min(seen.values()) > 40


def test_parse_attribute_examples_and_unknown_kind():
    assert parse_attribute("There are 3 shapes.", "count") == "3"
    assert parse_attribute("Two.", "count") == "2"
    assert parse_attribute("It's an orange cross.", "shape") == "cross"
    assert parse_attribute("no idea", "colour") is None
    with pytest.raises(ValueError, match="Unknown attribute kind 'size'. Available: colour, shape, count, position"):
        parse_attribute("big", "size")


def test_position_questions_name_one_attribute_only_when_asked_to_and_it_is_unique():
    import random

    one_attribute = 0
    for seed in range(400):
        scene = make_scene(seed)
        full, _ = shapes.pretraining_vqa(scene, random.Random(seed), "position")
        question, _ = shapes.pretraining_vqa(scene, random.Random(seed), "position", one_attribute=True)
        asked = _object_asked_about(question, scene)  # exactly one object fits the question
        named = [w for w in question.rstrip("?.").split() if w in COLOURS or w in SHAPES]
        assert len([w for w in full.rstrip("?.").split() if w in COLOURS or w in SHAPES]) == 2, full
        if len(named) == 1:
            one_attribute += 1
            fits = [o for o in scene.objects if named[0] in (o.colour, o.shape)]
            assert fits == [asked], (question, scene)
    assert 40 < one_attribute < 300


def test_the_position_focus_phase_asks_mostly_where_objects_are_in_scenes_of_several():
    samples = [shapes.position_focus_sample(seed) for seed in range(400)]
    focus = [s for s in samples if s.id.startswith("focus-")]
    assert 0.68 < len(focus) / len(samples) < 0.82  # POSITION_FOCUS_SHARE, the rest is the ordinary mix
    assert all(s.id.startswith("pretrain-") for s in samples if s not in focus)
    for sample in focus:
        scene = scene_of(sample)
        assert len(scene.objects) >= 2 and sample.meta["task"] == "vqa_position"
        assert parse_attribute(sample.response, "position") == _object_asked_about(sample.instruction, scene).position
    assert shapes.position_focus_sample(7).response == shapes.position_focus_sample(7).response
