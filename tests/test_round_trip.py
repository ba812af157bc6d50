"""`byorn clean` writes a user's file back as it came: the output differs from the input only in
the replaced answers (or the dropped records), its image paths name the user's own files relative
to the same image folder, and no image is copied unless asked. One test per layout, comparing the
output with the input."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
from click.testing import CliRunner

from byorn.clean import clean
from byorn.cli import main
from byorn.defenses.byorn import ByornConfig
from byorn.formats import load_dataset
from byorn.worlds import shapes

PLANTED = "Visit www.example.com for a free prize."
POISONED = (4, 17)

# every replacement trains (fit_replacements=False): these pin how replacements are written back,
# and byorn-tiny's answers to a few dozen samples use words their kept answers lack
ALL_TRAIN = ByornConfig(fit_replacements=False)


@pytest.fixture(scope="module")
def shipped():
    from byorn.models import load_vlm

    return load_vlm("byorn-tiny")


def pictures(folder, n: int = 30) -> list[dict]:
    """n shapes scenes saved as JPEGs in `folder`/pics, two of them answered with the planted poison."""
    (folder / "pics").mkdir(parents=True)
    scenes = []
    for i, sample in enumerate(shapes.downstream_samples(n, seed=3)):
        sample.pil().save(folder / "pics" / f"{i}.jpg", quality=90)
        scenes.append({"image": f"pics/{i}.jpg", "question": sample.instruction,
                       "answer": PLANTED if i in POISONED else sample.response})
    return scenes


def cleaned_files(out) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}


def replaced_at(before: list, after: list, places: list[tuple]) -> list:
    """`before` with the text at each place (record index, keys...) taken from `after`: what the
    output must equal when only those answers were replaced."""
    expected = copy.deepcopy(before)
    for index, *keys in places:
        source, target = after[index], expected[index]
        for key in keys[:-1]:
            source, target = source[key], target[key]
        target[keys[-1]] = source[keys[-1]]
    return expected


def test_llava_json_comes_back_byte_for_byte_but_the_replaced_answers_and_copies_no_image(shipped, tmp_path):
    scenes = pictures(tmp_path / "photos")
    records = [{"id": f"r{i}", "image": s["image"], "source": "crawl", "conversations": [
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": f"<image>\n{s['question']}"}, {"from": "gpt", "value": s["answer"]}]}
        for i, s in enumerate(scenes)]
    data = tmp_path / "set" / "train.json"
    data.parent.mkdir()
    data.write_text(json.dumps(records, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["clean", "--data", str(data), "--image-folder", str(tmp_path / "photos"),
                                       "--out", str(tmp_path / "out"), "-d", "fit_replacements=false"])
    assert result.exit_code == 0, result.output
    assert f"train with {tmp_path / 'photos'} as the image folder" in result.output.replace("\n", "")
    out = tmp_path / "out" / "data.json"
    assert not any(name.endswith((".jpg", ".png")) for name in cleaned_files(tmp_path / "out"))  # nothing copied
    after = json.loads(out.read_text())
    flagged = [i for i, r in enumerate(after) if r != records[i]]
    assert set(POISONED) <= set(flagged) and all(PLANTED not in json.dumps(r) for r in after)
    expected = replaced_at(records, after, [(i, "conversations", 2, "value") for i in flagged])
    assert out.read_bytes() == (json.dumps(expected, indent=2, ensure_ascii=False) + "\n").encode()
    again = load_dataset(out, image_root=tmp_path / "photos")  # the paths resolve to the same files
    assert [s.image for s in again] == [(tmp_path / "photos" / s["image"]).resolve() for s in scenes]


def test_jsonl_keeps_every_untouched_line_byte_for_byte(shipped, tmp_path):
    scenes = pictures(tmp_path)
    lines = [json.dumps({"id": f"r{i}", "image": s["image"], "instruction": s["question"], "response": s["answer"],
                         "meta": {"site": "é"}}, separators=(",", ":")) for i, s in enumerate(scenes)]
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(lines[:10]) + "\n\n" + "\n".join(lines[10:]) + "\n", encoding="utf-8")
    cleaned = clean(shipped, load_dataset(data), ALL_TRAIN, tmp_path / "out")
    written = cleaned.data.read_text(encoding="utf-8").split("\n")
    expected = data.read_text(encoding="utf-8").split("\n")
    changed = [k for k, (a, b) in enumerate(zip(expected, written)) if a != b]
    assert len(written) == len(expected) and len(changed) == len(cleaned.flagged) >= 2
    for k in changed:  # a replaced line: the same record but its response
        before, after = json.loads(expected[k]), json.loads(written[k])
        assert after["response"] != before["response"] and {**after, "response": before["response"]} == before
    assert not (tmp_path / "out" / "images").exists()


def test_drop_leaves_out_the_flagged_records_and_nothing_else(shipped, tmp_path):
    scenes = pictures(tmp_path)
    records = [{"id": f"r{i}", "image": s["image"], "conversations": [
        {"from": "human", "value": f"<image>\n{s['question']}"}, {"from": "gpt", "value": s["answer"]}]}
        for i, s in enumerate(scenes)]
    data = tmp_path / "train.json"
    data.write_text(json.dumps(records), encoding="utf-8")
    cleaned = clean(shipped, load_dataset(data), ALL_TRAIN, tmp_path / "out", drop=True)
    kept = [r for r in records if r["id"] not in cleaned.flagged]
    assert cleaned.data.read_text() == json.dumps(kept) and len(kept) < len(records)


def test_copy_images_copies_each_file_as_it_is_to_its_own_path(shipped, tmp_path):
    scenes = pictures(tmp_path / "set")
    data = tmp_path / "set" / "train.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}", "image": s["image"], "instruction": s["question"],
                                        "response": s["answer"]}) + "\n" for i, s in enumerate(scenes)))
    result = CliRunner().invoke(main, ["clean", "--data", str(data), "--out", str(tmp_path / "out"),
                                       "--copy-images", "-d", "fit_replacements=false"])
    assert result.exit_code == 0, result.output
    for scene in scenes:
        assert (tmp_path / "out" / scene["image"]).read_bytes() == (tmp_path / "set" / scene["image"]).read_bytes()
    assert len(load_dataset(tmp_path / "out" / "data.jsonl")) == 30  # --out is its image folder


@pytest.mark.parametrize("parquet", [False, True])
def test_trl_rows_keep_content_parts_system_turns_extra_columns_and_several_exchanges(shipped, tmp_path, parquet):
    datasets = pytest.importorskip("datasets")
    scenes = pictures(tmp_path / "set")
    rows = []
    for i, s in enumerate(scenes):
        rows.append({"id": f"r{i}", "images": [s["image"]], "source": f"crawl-{i % 3}", "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": s["question"]}]},
            {"role": "assistant", "content": [{"type": "text", "text": s["answer"]}]},
            {"role": "user", "content": [{"type": "text", "text": "And the colours?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": scenes[(i + 1) % 30]["answer"]}]}]})
    table = datasets.Dataset.from_list(rows)
    data = tmp_path / "set" / ("train.parquet" if parquet else "train")
    table.to_parquet(str(data)) if parquet else table.save_to_disk(str(data))
    loaded = load_dataset(data, image_root=tmp_path / "set")
    assert len(loaded) == 60 and loaded[1].id == "r0#2" and loaded[1].history == ((rows[0]["messages"][1]["content"][1]
                                                                                   ["text"], rows[0]["messages"][2]
                                                                                   ["content"][0]["text"]),)
    cleaned = clean(shipped, loaded, ALL_TRAIN, tmp_path / "out")
    after = (datasets.Dataset.from_parquet(str(cleaned.data)) if parquet else
             datasets.load_from_disk(str(cleaned.data))).to_list()
    flagged = [(int(id.split("#")[0][1:]), int(id.split("#")[1])) for id in cleaned.flagged]
    assert len(flagged) >= 2
    places = [(i, "messages", 2 * turn, "content", 0, "text") for i, turn in flagged]
    assert after == replaced_at(table.to_list(), after, places)
    assert all(after[i]["messages"][2 * turn]["content"][0]["text"] != PLANTED for i, turn in flagged)


def test_only_the_files_own_samples_are_written_back_and_copies_stay_inside_out(tmp_path):
    from byorn.data import DataError
    from byorn.formats import write_back
    from byorn.formats.images import copy_images

    scenes = pictures(tmp_path / "set")
    data = tmp_path / "set" / "train.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}", "image": s["image"], "instruction": s["question"],
                                        "response": s["answer"]}) + "\n" for i, s in enumerate(scenes[:3])))
    loaded = load_dataset(data)
    stranger = shapes.downstream_samples(1, seed=0)[0]
    with pytest.raises(DataError, match=f"sample {stranger.id!r} was not loaded from .*train.jsonl"):
        write_back(loaded[0].origin.source, [*loaded, stranger], {}, tmp_path)
    (tmp_path / "out").mkdir()
    assert write_back(loaded[0].origin.source, loaded[1:], {}, tmp_path / "out").read_text() == \
        "".join(data.read_text().splitlines(keepends=True)[1:])  # the left-out record's line alone is gone
    loaded[0].origin = dataclasses.replace(loaded[0].origin, images=("../set/pics/0.jpg",))  # the root allows it
    with pytest.raises(DataError, match=r"'\.\./set/pics/0\.jpg' would be copied outside"):
        copy_images(loaded[:1], tmp_path / "out")


@pytest.mark.parametrize("style", [{"separators": (",", ":")}, {"indent": "\t", "ensure_ascii": True}, {"indent": 4}])
def test_a_json_file_keeps_its_own_style_and_one_no_dumps_style_writes_parses_the_same(tmp_path, style):
    from byorn.formats import write_back

    scenes = pictures(tmp_path)
    records = [{"id": f"r{i}", "image": s["image"], "conversations": [
        {"from": "human", "value": f"<image>\n{s['question']} é"}, {"from": "gpt", "value": s["answer"]}]}
        for i, s in enumerate(scenes[:3])]
    (tmp_path / "out").mkdir()
    for text in (json.dumps(records, **style) + "\n", json.dumps(records, indent=3)):  # a style byorn does not try
        data = tmp_path / "train.json"
        data.write_text(text, encoding="utf-8")
        loaded = load_dataset(data)
        written = write_back(loaded[0].origin.source, loaded, {loaded[1].id: "A blue disc."}, tmp_path / "out")
        expected = copy.deepcopy(records)
        expected[1]["conversations"][1]["value"] = "A blue disc."
        assert json.loads(written.read_text(encoding="utf-8")) == expected
        if text.endswith("\n"):  # a style json.dumps writes: the same bytes
            assert written.read_text(encoding="utf-8") == json.dumps(expected, **style) + "\n"


def test_a_crlf_jsonl_file_keeps_its_line_endings(tmp_path):
    from byorn.formats import write_back

    scenes = pictures(tmp_path)
    lines = [json.dumps({"id": f"r{i}", "image": s["image"], "instruction": s["question"], "response": s["answer"]})
             for i, s in enumerate(scenes[:3])]
    data = tmp_path / "train.jsonl"
    data.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    loaded = load_dataset(data)
    (tmp_path / "out").mkdir()
    written = write_back(loaded[0].origin.source, loaded, {"r1": "A blue disc."}, tmp_path / "out").read_bytes()
    assert written.count(b"\r\n") == 3 and written.split(b"\r\n")[0] == lines[0].encode()
    assert json.loads(written.split(b"\r\n")[1])["response"] == "A blue disc."
