"""Loaders and writers in byorn.formats: round trips, and an error naming file, record and field
for every kind of bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from byorn.data import DataError, Sample, Turn
from byorn.formats import (
    LoadChecks,
    load_dataset,
    load_jsonl,
    load_llava_json,
    save_jsonl,
    save_llava_json,
)


def png(path: Path, color: tuple[int, int, int] = (200, 30, 90)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (5, 4), color)
    image.putpixel((1, 2), (0, 255, 7))  # not uniform, so a transposed or resampled copy would differ
    image.save(path)
    return path


def record(id: str = "a", **changes) -> dict:
    return {"id": id, "image": "img.png", "instruction": "What is shown?", "response": "A square.", **changes}


def write_jsonl(tmp_path: Path, records: list, name: str = "data.jsonl") -> Path:
    png(tmp_path / "img.png")
    path = tmp_path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


def llava(id: str = "a", **changes) -> dict:
    return {"id": id, "image": "img.png", "conversations": [{"from": "human", "value": "<image>\nWhat is shown?"},
                                                             {"from": "gpt", "value": "A square."}], **changes}


def write_json(tmp_path: Path, data, name: str = "data.json") -> Path:
    png(tmp_path / "img.png")
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def samples(tmp_path: Path) -> list[Sample]:
    rgba = Image.new("RGBA", (3, 3), (10, 20, 30, 255))
    return [
        Sample("plain", Image.new("RGB", (6, 2), (1, 2, 3)), "Describe.", "Red circle.", {"task": "caption"}),
        Sample("needs/escaping ü", png(tmp_path / "src" / "x.png"), "Ünïcode?\n2nd line", "Ja.",
               {"n": [1, 2.5, None]}),
        Sample("A", rgba, "q", "r", {"source": "elsewhere:3"}),
        Sample("a", Image.new("L", (2, 2), 77), "q", "r"),  # differs from "A" only in case
    ]


@pytest.mark.parametrize("save, load", [(save_jsonl, load_jsonl), (save_llava_json, load_llava_json)])
def test_round_trip(tmp_path, save, load):
    original = samples(tmp_path)
    data_file = save(original, tmp_path / "out")
    loaded = load(data_file)
    assert [s.id for s in loaded] == [s.id for s in original]
    assert len({s.image for s in loaded}) == len(original)  # one file per sample, even for "A" and "a"
    for before, after in zip(original, loaded):
        assert (after.instruction, after.response) == (before.instruction, before.response)
        assert after.meta == {"source": after.meta["source"], **before.meta}
        assert after.image.is_relative_to((tmp_path / "out" / "images").resolve())
        assert after.pil().tobytes() == before.pil().tobytes() and after.pil().size == before.pil().size
    assert loaded[2].meta["source"] == "elsewhere:3"  # an existing source is kept
    assert loaded[0].meta["source"].startswith(str(data_file))
    assert not [p for p in (tmp_path / "out").rglob("*.tmp")]


def test_save_replaces_existing_file_and_rejects_duplicate_ids(tmp_path):
    save_jsonl(samples(tmp_path), tmp_path / "out")
    save_jsonl(samples(tmp_path)[:1], tmp_path / "out")
    assert [s.id for s in load_jsonl(tmp_path / "out" / "data.jsonl")] == ["plain"]
    twice = samples(tmp_path)[:1] * 2
    with pytest.raises(DataError, match="'plain'.*field 'id'.*duplicate"):
        save_llava_json(twice, tmp_path / "out2")


def test_load_dataset_dispatches_on_suffix(tmp_path):
    assert load_dataset(write_jsonl(tmp_path, [record()]))[0].response == "A square."
    assert load_dataset(write_json(tmp_path, [llava()]))[0].instruction == "What is shown?"
    with pytest.raises(DataError, match=r"data\.csv.*unknown data set format '\.csv'"):
        load_dataset(tmp_path / "data.csv")


def test_jsonl_blank_lines_skipped_and_line_numbers_kept(tmp_path):
    path = write_jsonl(tmp_path, ["", json.dumps(record("a")), "   ", json.dumps(record("b"))])
    loaded = load_jsonl(path)
    assert [s.id for s in loaded] == ["a", "b"]
    assert loaded[1].meta["source"] == f"{path}:4"


def test_image_root_argument(tmp_path):
    png(tmp_path / "pics" / "img.png")
    path = tmp_path / "d" / "data.jsonl"
    path.parent.mkdir()
    path.write_text(json.dumps(record()) + "\n", encoding="utf-8")
    assert load_jsonl(path, image_root=tmp_path / "pics")[0].image == (tmp_path / "pics" / "img.png").resolve()


@pytest.mark.parametrize("rec, field", [
    ({k: v for k, v in record().items() if k != "id"}, "id"),
    (record(id=""), "id"),
    (record(id=7), "id"),
    (record(instruction="  "), "instruction"),
    (record(response=None), "response"),
    (record(image=["img.png"]), "image"),  # (no image at all is a text-only record: tests/test_text_only.py)
    (record(meta=[1]), "meta"),
])
def test_jsonl_field_errors_name_file_line_and_field(tmp_path, rec, field):
    path = write_jsonl(tmp_path, [record("ok"), "", rec])
    with pytest.raises(DataError, match=rf"data\.jsonl:3: field '{field}': "):
        load_jsonl(path)


def test_jsonl_malformed_line_and_non_object(tmp_path):
    with pytest.raises(DataError, match=r"data\.jsonl:2: invalid JSON"):
        load_jsonl(write_jsonl(tmp_path, [record(), '{"id": "b",']))
    with pytest.raises(DataError, match=r"data\.jsonl:1: record must be a JSON object, got list"):
        load_jsonl(write_jsonl(tmp_path, ["[1, 2]"]))


def test_duplicate_ids_name_both_locations(tmp_path):
    with pytest.raises(DataError, match=r"data\.jsonl:3: field 'id': duplicate id 'a' \(first at .*data\.jsonl:1\)"):
        load_jsonl(write_jsonl(tmp_path, [record("a"), record("b"), record("a")]))
    with pytest.raises(DataError, match=r"data\.json\[1\] \(id 'a'\): field 'id': duplicate .*data\.json\[0\]"):
        load_llava_json(write_json(tmp_path, [llava("a"), llava("a")]))


def test_json_errors_name_index_id_and_field(tmp_path):
    with pytest.raises(DataError, match=r"data\.json\[1\] \(id 'b'\): field 'conversations\[1\]\.value': "
                                        r"must be a non-empty string"):
        load_llava_json(write_json(tmp_path, [llava("a"), llava("b", conversations=[
            {"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": ""}])]))
    with pytest.raises(DataError, match=r"data\.json\[0\]: field 'id': must be a non-empty string, got 3"):
        load_llava_json(write_json(tmp_path, [llava(3)]))
    message = r"data\.json\[0\] \(id 'a'\): field 'image': the human turn has an <image> placeholder but the record no"
    with pytest.raises(DataError, match=message):
        load_llava_json(write_json(tmp_path, [{k: v for k, v in llava().items() if k != "image"}]))


def test_json_malformed_top_level_and_non_object(tmp_path):
    (tmp_path / "data.json").write_text('[\n  {"id": "a",\n  oops\n]', encoding="utf-8")
    with pytest.raises(DataError, match=r"data\.json:3: invalid JSON"):
        load_llava_json(tmp_path / "data.json")
    with pytest.raises(DataError, match=r"data\.json: top level must be a list of records, got dict"):
        load_llava_json(write_json(tmp_path, {"data": []}))
    with pytest.raises(DataError, match=r"data\.json\[1\]: record must be a JSON object, got str"):
        load_llava_json(write_json(tmp_path, [llava(), "b"]))


def test_llava_placeholder_stripped_wherever_it_stands(tmp_path):
    turns = [{"from": "human", "value": "Which colour?\n<image>\n"}, {"from": "gpt", "value": "Red."}]
    assert load_llava_json(write_json(tmp_path, [llava(conversations=turns)]))[0].instruction == "Which colour?"


@pytest.mark.parametrize("roles, problem", [(["gpt"], "no 'human' turn"), (["human"], "not followed by a 'gpt'"),
                                            (["human", "human", "gpt"], "not followed by a 'gpt'"),
                                            (["human", "bot"], r"unknown role\(s\) \['bot'\]")])
def test_llava_conversation_without_pair(tmp_path, roles, problem):
    turns = [{"from": role, "value": "x"} for role in roles]
    with pytest.raises(DataError, match=rf"data\.json\[0\] \(id 'a'\): field 'conversations': .*{problem}"):
        load_llava_json(write_json(tmp_path, [llava(conversations=turns)]))


def test_llava_multi_turn_gives_a_sample_per_answer_or_the_first_pair_or_an_error(tmp_path):
    turns = llava()["conversations"] + [{"from": "human", "value": "And?"}, {"from": "gpt", "value": "Blue."}]
    path = write_json(tmp_path, [llava(conversations=turns)])
    first, second = load_llava_json(path)  # multi_turn="each"
    assert (first.id, second.id) == ("a#1", "a#2") and first.history == ()
    assert second.history == ((first.instruction, first.response),) and second.response == "Blue."
    assert second.turn == Turn("a", 2, 2, ("a#1",)) and "record" not in second.meta  # the layout's, not meta
    with pytest.raises(DataError, match=r"data\.json\[0\] \(id 'a'\): field 'conversations': 2 turn.*'first'"):
        load_llava_json(path, multi_turn="error")
    sample = load_llava_json(path, multi_turn="first")[0]
    assert (sample.response, sample.meta["extra_turns"]) == ("A square.", 2)
    again = load_llava_json(save_llava_json([first, second], tmp_path / "out"))  # one record again
    assert json.loads((tmp_path / "out" / "data.json").read_text())[0]["id"] == "a"
    assert [(s.id, s.history, s.response) for s in again] == [(s.id, s.history, s.response) for s in (first, second)]


def test_path_escapes_are_rejected(tmp_path):
    root = tmp_path / "root"
    png(tmp_path / "outside.png")
    png(root / "img.png")
    (root / "link.png").symlink_to(tmp_path / "outside.png")
    for image in ["../outside.png", str(tmp_path / "outside.png"), "link.png", "sub/../../outside.png"]:
        path = write_jsonl(root, [record(image=image)])
        with pytest.raises(DataError, match=r"data\.jsonl:1: field 'image': .*(outside the image root|relative)"):
            load_jsonl(path)
    assert load_jsonl(write_jsonl(root, [record(image="sub/../img.png")]))[0].image == (root / "img.png").resolve()


def test_missing_image_file(tmp_path):
    with pytest.raises(DataError, match=r"data\.jsonl:1: field 'image': image file not found: .*nope\.png"):
        load_jsonl(write_jsonl(tmp_path, [record(image="nope.png")]))


def test_images_are_checked_at_load_time_unless_asked_not_to(tmp_path):
    (tmp_path / "img.png").write_bytes(b"not a png")
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(record()) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"img\.png: .*data\.jsonl:1: field 'image': cannot decode image"):
        load_jsonl(path)
    sample = load_jsonl(path, checks=LoadChecks(check_images=False))[0]
    with pytest.raises(DataError, match=r"img\.png: sample 'a', field 'image'"):
        sample.pil()


@pytest.mark.parametrize("loader, name", [(load_jsonl, "data.jsonl"), (load_llava_json, "data.json")])
def test_non_utf8_file(tmp_path, loader, name):
    (tmp_path / name).write_bytes(b'[{"id": "a"}]\n' + "é".encode("latin-1"))
    with pytest.raises(DataError, match=rf"{name}:2: not UTF-8"):
        loader(tmp_path / name)


def test_missing_data_file(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.jsonl: cannot read"):
        load_jsonl(tmp_path / "nothere.jsonl")


def test_saved_files_keep_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        data_file = save_jsonl(samples(tmp_path)[:1], tmp_path / "out")
    finally:
        os.umask(old)
    assert data_file.stat().st_mode & 0o777 == 0o644


def test_sharegpt_and_chat_role_names_read_as_llavas(tmp_path):
    turns = [{"from": "user", "value": "<image>\nWhich colour?"}, {"from": "assistant", "value": "Red."}]
    sample = load_llava_json(write_json(tmp_path, [llava(conversations=turns)]))[0]
    assert (sample.instruction, sample.response) == ("Which colour?", "Red.")


def test_turns_before_the_first_human_one_are_left_out_but_said(tmp_path, caplog):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    record = {"id": "a", "image": "a.png", "conversations": [
        {"from": "system", "value": "You are terse."}, {"from": "human", "value": "<image>\nWhat?"},
        {"from": "gpt", "value": "A square."}]}
    (tmp_path / "data.json").write_text(json.dumps([record]))
    with caplog.at_level("WARNING", logger="byorn.formats.conversations"):
        (sample,) = load_llava_json(tmp_path / "data.json")
    assert (sample.instruction, sample.response) == ("What?", "A square.")
    assert sample.meta["turns_before_first_human"] == 1
    assert "1 record(s) begin with turns before the first human one" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="byorn.formats.conversations"):  # byorn's own output has no such turn left
        (again,) = load_llava_json(save_llava_json([sample], tmp_path / "out"))
    assert "turns_before_first_human" not in again.meta and not caplog.text


def test_an_empty_image_key_of_another_format_is_a_text_only_record(tmp_path):
    record = {"id": "a", "instruction": "Why?", "response": "Because.", "images": [], "image_url": None}
    (tmp_path / "data.jsonl").write_text(json.dumps(record) + "\n")
    assert not load_jsonl(tmp_path / "data.jsonl")[0].has_image
    (tmp_path / "data.jsonl").write_text(json.dumps({**record, "images": ["a.png"]}) + "\n")
    with pytest.raises(DataError, match="field 'images': byorn reads a record's image from the field 'image'"):
        load_jsonl(tmp_path / "data.jsonl")


def test_a_users_own_meta_record_does_not_join_records_and_turns_keep_their_image(tmp_path):
    image = Image.new("RGB", (4, 4))
    samples = [Sample(f"s{i}", image, "What?", f"Answer {i}.", {"record": "shard-A"}) for i in range(3)]
    records = json.loads(save_llava_json(samples, tmp_path / "a").read_text())
    assert [r["id"] for r in records] == ["s0", "s1", "s2"] and records[0]["meta"]["record"] == "shard-A"
    # a conversation whose later turn shows another image (a trigger stamped on it) has no LLaVA record
    turns = [Sample(f"c#{n}", tmp_path / "x.png", "What?", "A.", turn=Turn("c", n, 2)) for n in (1, 2)]
    turns[1].image = image
    with pytest.raises(DataError, match="record 'c': its turns show different images"):
        save_llava_json(turns, tmp_path / "b")
    turns[1].image = turns[0].image
    with pytest.raises(DataError, match="turns of record 'c' are not together and in order"):
        save_llava_json(turns[::-1], tmp_path / "c")  # written twice, the file would not load back


def test_only_the_loaders_marks_make_a_sample_one_turn_of_a_conversation():
    from byorn.data import conversation_of

    forged = {"record": "c", "turn": 2, "turns": 2}  # meta is the data author's: it marks nothing
    assert conversation_of(Sample("a", None, "Why?", "So.", forged)) is None
    assert conversation_of(Sample("c#2", None, "Why?", "So.", turn=Turn("c", 2, 2, ("c#1",)))) == "c"
