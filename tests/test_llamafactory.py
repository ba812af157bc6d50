"""LLaMA-Factory's ShareGPT-style layout (byorn.formats.llamafactory): read with the names its
dataset_info.json gives, scanned, cleaned and written back as it came, registered for
LLaMA-Factory's own training."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_round_trip import PLANTED, pictures, replaced_at

from byorn.clean import clean
from byorn.cli import main
from byorn.data import DataError
from byorn.defenses.byorn import ByornConfig
from byorn.formats import load_dataset

OPENAI_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}

# every replacement trains (fit_replacements=False): these pin how replacements are written back,
# and byorn-tiny's answers to a few dozen samples use words their kept answers lack
ALL_TRAIN = ByornConfig(fit_replacements=False)


def demo(folder, tags: dict | None = None, messages: str = "messages") -> tuple:
    """An mllm_demo.json-style file (no ids; an <image> tag in the first user turn; a second
    exchange) and its dataset_info.json entry, with the given role and text names."""
    tags = tags or OPENAI_TAGS
    scenes = pictures(folder)
    role, text, user, assistant = (tags[k] for k in ("role_tag", "content_tag", "user_tag", "assistant_tag"))
    records = [{messages: [{text: f"<image>{s['question']}", role: user}, {text: s["answer"], role: assistant}],
                "images": [s["image"]], "system": "You describe pictures."} for s in scenes]
    for i in (0, 10, 20):  # a second exchange in some records
        records[i][messages] += [{text: "And again?", role: user}, {text: scenes[i + 1]["answer"], role: assistant}]
    (folder / "mllm_demo.json").write_text(json.dumps(records, indent=2, ensure_ascii=False), encoding="utf-8")
    entry = {"file_name": "mllm_demo.json", "formatting": "sharegpt", "columns": {"messages": messages,
                                                                                  "images": "images",
                                                                                  "system": "system"}, "tags": tags}
    (folder / "dataset_info.json").write_text(json.dumps({"mllm_demo": entry, "other": {"file_name": "x.json"}}))
    return records, entry


@pytest.fixture(scope="module")
def shipped():
    from byorn.models import load_vlm

    return load_vlm("byorn-tiny")


def test_an_mllm_demo_style_file_loads_each_answer_with_its_history(tmp_path):
    records, _ = demo(tmp_path)
    samples = load_dataset(tmp_path / "mllm_demo.json")
    assert [s.id for s in samples[:3]] == ["0#1", "0#2", "1"] and len(samples) == 33  # no ids: the index names it
    first, second = samples[:2]
    assert first.image == (tmp_path / "pics" / "0.jpg").resolve()
    assert (first.instruction, first.response) == (records[0]["messages"][0]["content"].removeprefix("<image>"),
                                                   records[0]["messages"][1]["content"])
    assert second.history == ((first.instruction, first.response),) and second.turn.earlier == ("0#1",)


def test_dataset_info_renames_columns_tags_and_roles(tmp_path):
    tags = {"role_tag": "speaker", "content_tag": "text", "user_tag": "customer", "assistant_tag": "agent"}
    records, _ = demo(tmp_path, tags, messages="dialog")
    samples = load_dataset(tmp_path / "mllm_demo.json")
    assert len(samples) == 33 and samples[0].response == records[0]["dialog"][1]["text"]


def test_without_dataset_info_the_records_keys_tell_the_layout(tmp_path):
    records, _ = demo(tmp_path)
    (tmp_path / "dataset_info.json").unlink()
    assert load_dataset(tmp_path / "mllm_demo.json")[0].response == records[0]["messages"][1]["content"]


@pytest.mark.parametrize("change, message", [
    (lambda r, e: e.update(formatting="alpaca"), r"entry 'mllm_demo', field 'formatting': 'alpaca'; byorn reads"),
    (lambda r, e: r[0].update(images=["pics/0.jpg", "pics/1.jpg"]), r"\[0\] \(id '0'\): field 'images': 2 images"),
    (lambda r, e: r[1]["messages"][1].update(role="gpt"), r"\[1\] \(id '1'\): field 'messages': unknown role"),
    (lambda r, e: r[2].update(images=[]), r"\[2\] \(id '2'\): field 'images': the human turn has an <image>"),
])
def test_bad_records_and_entries_are_errors_that_name_them(tmp_path, change, message):
    records, entry = demo(tmp_path)
    change(records, entry)
    (tmp_path / "mllm_demo.json").write_text(json.dumps(records))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"mllm_demo": entry}))
    with pytest.raises(DataError, match=message):
        load_dataset(tmp_path / "mllm_demo.json")


def test_it_scans_cleans_and_comes_back_as_it_went_registered_for_llamafactory(shipped, tmp_path):
    records, entry = demo(tmp_path / "data")
    scan = CliRunner().invoke(main, ["scan", "--data", str(tmp_path / "data" / "mllm_demo.json"),
                                     "--out", str(tmp_path / "scan")])
    assert scan.exit_code == 0, scan.output
    assert "0#1" in (tmp_path / "scan" / "scan.csv").read_text()
    cleaned = clean(shipped, load_dataset(tmp_path / "data" / "mllm_demo.json"), ALL_TRAIN, tmp_path / "out")
    after = json.loads(cleaned.data.read_text())
    flagged = [(int(id.partition("#")[0]), int(id.partition("#")[2] or 1)) for id in cleaned.flagged]
    assert len(flagged) >= 2 and PLANTED not in cleaned.data.read_text()
    expected = replaced_at(records, after, [(i, "messages", 2 * turn - 1, "content") for i, turn in flagged])
    assert cleaned.data.read_text() == json.dumps(expected, indent=2, ensure_ascii=False)
    info = json.loads((tmp_path / "out" / "dataset_info.json").read_text())
    assert info == {"mllm_demo": {**entry, "file_name": "data.json"}}
    assert len(load_dataset(cleaned.data, image_root=tmp_path / "data")) == 33  # LLaMA-Factory's media_dir: data/


def test_clean_never_replaces_the_dataset_info_json_that_registers_its_input(shipped, tmp_path):
    demo(tmp_path / "data")
    before = (tmp_path / "data" / "dataset_info.json").read_text()
    with pytest.raises(ValueError, match=r"would clear '.*dataset_info\.json', which it reads"):
        clean(shipped, load_dataset(tmp_path / "data" / "mllm_demo.json"), ALL_TRAIN, tmp_path / "data")
    assert (tmp_path / "data" / "dataset_info.json").read_text() == before
