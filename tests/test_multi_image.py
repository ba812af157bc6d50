"""Several images per record: read from each layout with their placeholders matched in order,
scored, judged, trained on and cleaned on the families that take several (in-process tiny
configurations); a clear error where a family takes one, or a record has more images than
placeholders."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from tiny_families import BUILDERS

from byorn.clean import clean
from byorn.config import TrainConfig
from byorn.data import DataError
from byorn.defenses.byorn import ByornConfig
from byorn.formats import load_dataset
from byorn.models.families import FAMILIES
from byorn.scoring import on_grey
from byorn.train import finetune
from byorn.worlds import shapes

SEVERAL = [t for f in FAMILIES if f.several_images for t in f.model_types]
ONE = [t for f in FAMILIES if not f.several_images for t in f.model_types]


def pairs(n: int, seed: int = 0) -> list:
    """Samples that compare two scenes: each shows its own image and the next sample's."""
    samples = shapes.downstream_samples(n + 1, seed=seed)
    return [replace(s, instruction=f"Compare: {s.instruction}", more_images=(samples[i + 1].pil(),))
            for i, s in enumerate(samples[:n])]


def test_the_families_that_take_several_images_are_the_interleaved_ones():
    assert set(SEVERAL) == {"llava_next", "qwen2_vl", "qwen2_5_vl", "idefics3"} and set(ONE) == {"llava", "paligemma"}


@pytest.mark.parametrize("name", SEVERAL)
def test_several_images_are_scored_each_seen_and_trained_on(name, tmp_path):
    vlm = BUILDERS[name]()
    samples = pairs(4)
    one = [replace(s, more_images=()) for s in samples]
    both, first = vlm.score(samples), vlm.score(one)
    assert all(a.token_nll != b.token_nll for a, b in zip(both, first))  # the second image is read
    viewed = vlm.score_views(samples, [on_grey])
    greyed = vlm.score([replace(s, image=on_grey(s.pil()), more_images=(on_grey(s.pils()[1]),)) for s in samples])
    for (seen, grey), want, again in zip(viewed, both, greyed, strict=True):
        assert seen.token_nll == pytest.approx(want.token_nll, abs=1e-5)
        assert grey.token_nll == pytest.approx(again.token_nll, abs=1e-5)  # every image took the view
    trainer = finetune(vlm, samples, TrainConfig(max_steps=1, batch_size=4, logging_steps=1), tmp_path)
    assert trainer.state.global_step == 1
    assert len(vlm.generate(samples[:2], max_new_tokens=3)) == 2


@pytest.mark.parametrize("name", ONE)
def test_a_family_that_takes_one_image_refuses_several_before_any_work(name):
    vlm = BUILDERS[name]()
    samples = pairs(2)
    problems = vlm.unreadable(samples)
    assert set(problems) == {0, 1} and "2 images; " in problems[0] and "takes one image per prompt" in problems[0]
    with pytest.raises(DataError, match=r"'image': 2 images; .* takes one image per prompt \(several: LLaVA-NeXT"):
        vlm.score(samples)


def write_scenes(folder, n: int = 12) -> list[str]:
    (folder / "pics").mkdir(parents=True)
    names = []
    for i, sample in enumerate(shapes.downstream_samples(n, seed=5)):
        sample.pil().save(folder / "pics" / f"{i}.jpg")
        names.append(f"pics/{i}.jpg")
    return names


def test_each_layout_reads_several_images_in_placeholder_order(tmp_path):
    pictures = write_scenes(tmp_path)
    llava = [{"id": "a", "image": pictures[:2], "conversations": [
        {"from": "human", "value": "<image>\n<image>\nWhich is larger?"}, {"from": "gpt", "value": "The first."}]}]
    (tmp_path / "llava.json").write_text(json.dumps(llava))
    (sample,) = load_dataset(tmp_path / "llava.json")
    assert [p.name for p in sample.images] == ["0.jpg", "1.jpg"] and sample.instruction == "Which is larger?"
    factory = [{"messages": [{"role": "user", "content": "<image><image>Which?"},
                             {"role": "assistant", "content": "The first."}], "images": pictures[1:3]}]
    (tmp_path / "factory.json").write_text(json.dumps(factory))
    assert [p.name for p in load_dataset(tmp_path / "factory.json")[0].images] == ["1.jpg", "2.jpg"]


@pytest.mark.parametrize("images, text, message", [
    (["pics/0.jpg", "pics/1.jpg"], "<image>\nWhich?", r"field 'image': 2 images but 1 <image> placeholder"),
    (["pics/0.jpg", "pics/1.jpg"], "Which?", r"field 'image': 2 images but 0 <image> placeholder"),
    (["pics/0.jpg"], "<image><image>Which?", r"field 'conversations': 2 <image> placeholders for 1 image"),
    (["pics/0.jpg", "pics/9.jpg"], "<image><image>Which?", r"field 'image\[1\]': image file not found"),
    (["pics/0.jpg", "../outside.jpg"], "<image><image>Which?", r"field 'image\[1\]': .* outside the image root"),
])
def test_images_and_placeholders_that_do_not_match_are_errors_naming_the_record(tmp_path, images, text, message):
    write_scenes(tmp_path, 2)
    record = {"id": "a", "image": images, "conversations": [{"from": "human", "value": text},
                                                              {"from": "gpt", "value": "The first."}]}
    (tmp_path / "data.json").write_text(json.dumps([record]))
    with pytest.raises(DataError, match=r"data\.json\[0\] \(id 'a'\): " + message):
        load_dataset(tmp_path / "data.json")


def test_clean_judges_and_writes_back_records_of_several_images(tmp_path):
    pictures = write_scenes(tmp_path, 13)
    scenes = shapes.downstream_samples(12, seed=5)
    records = [{"id": f"r{i}", "image": [pictures[i], pictures[i + 1]], "conversations": [
        {"from": "human", "value": f"<image> <image>\n{s.instruction}"},
        {"from": "gpt", "value": "Visit www.example.com now." if i == 3 else s.response}]}
        for i, s in enumerate(scenes)]
    data = tmp_path / "data.json"
    data.write_text(json.dumps(records, indent=1))
    vlm = BUILDERS["qwen2_vl"]()
    config = ByornConfig(rule="quantile", quantile=0.8, max_new_tokens=4, fit_replacements=False)
    cleaned = clean(vlm, load_dataset(data), config, tmp_path / "out", train=TrainConfig(batch_size=4))
    assert cleaned.flagged and cleaned.n_out == 12
    after = json.loads(cleaned.data.read_text())
    for before, now in zip(records, after, strict=True):  # only flagged answers changed; both images kept
        if now["id"] not in cleaned.flagged:
            assert now == before
        assert now["image"] == before["image"] and now["conversations"][0] == before["conversations"][0]


@pytest.mark.parametrize("images, changed", [("first", [True, False, False]), ("last", [False, False, True]),
                                             ("all", [True, True, True])])
def test_an_image_trigger_goes_on_the_images_chosen(images, changed):
    from byorn.attacks import build_attack

    sample = replace(pairs(1)[0], more_images=tuple(s.pil() for s in shapes.downstream_samples(2, seed=9)))
    triggered = build_attack("badnets", "fixed", images=images).trigger.apply_sample(sample)
    before, after = [s.tobytes() for s in sample.pils()], [s.tobytes() for s in triggered.pils()]
    assert [a != b for a, b in zip(before, after)] == changed


def test_an_unknown_choice_of_images_is_named():
    from byorn.attacks import build_attack

    with pytest.raises(ValueError, match="BadNets.images"):
        build_attack("badnets", "fixed", images="second").trigger.apply_sample(pairs(1)[0])
