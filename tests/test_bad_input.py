"""One test per kind of bad input (issue: reliability). Each record-level kind is checked twice:
the default loader stops with an error naming file, record and field, and `--on-bad-sample skip`
drops exactly that record, loads the good one beside it and lists the error. Everything is made
on the fly; no binary fixtures."""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from byorn.attacks import build_attack
from byorn.cli import main
from byorn.config import ConfigError, TrainConfig, from_dict
from byorn.data import DataError, Sample
from byorn.defenses import build_defense
from byorn.formats import MAX_CHARS, LoadChecks, load_dataset, load_jsonl, load_llava_json

pytestmark = pytest.mark.badinput

GOOD = {"id": "good", "image": "good.png", "instruction": "What is shown?", "response": "A square."}


def png_bytes(size=(6, 5), color=(200, 30, 90)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def bad(**changes) -> dict:
    return {**GOOD, "id": "bad", "image": "bad.png", **changes}


def write(tmp_path: Path, records: list, bad_image: bytes | None = None) -> Path:
    """data.jsonl with the good record first; bad.png holds `bad_image` (a valid PNG by default)."""
    (tmp_path / "good.png").write_bytes(png_bytes())
    (tmp_path / "bad.png").write_bytes(png_bytes() if bad_image is None else bad_image)
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in [GOOD, *records]) + "\n",
                    encoding="utf-8")
    return path


def fails_then_skips(path: Path, message: str, **checks) -> None:
    """Default: a DataError matching `message` (which names file:line and field); skip mode:
    only the good sample, and the same error listed once."""
    with pytest.raises(DataError, match=message):
        load_dataset(path, checks=LoadChecks(**checks))
    skipped: list[str] = []
    samples = load_dataset(path, checks=LoadChecks(skipped=skipped, **checks))
    assert [s.id for s in samples] == ["good"]
    assert len(skipped) == 1 and re.search(message, skipped[0])


# ---- images ------------------------------------------------------------------------------------

IMAGE_KINDS = {
    "corrupt bytes": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
    "truncated png": png_bytes((64, 64))[:60],
    "zero-byte file": b"",
    "text file named .png": b"this is not an image\n",
    "html named .png": b"<html><body>404</body></html>",
}


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_an_undecodable_image_names_its_file_line_and_field(tmp_path, kind):
    path = write(tmp_path, [bad()], bad_image=IMAGE_KINDS[kind])
    fails_then_skips(path, r"bad\.png: .*data\.jsonl:2: field 'image': cannot decode image")


def test_a_decompression_bomb_is_refused_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # the guard stays on; a 6x5 image is fine
    path = write(tmp_path, [bad()], bad_image=png_bytes((20, 20)))
    fails_then_skips(path, r"bad\.png: .*field 'image': image too large, over Pillow's decompression-bomb limit")


def test_a_missing_image_file(tmp_path):
    path = write(tmp_path, [bad(image="nowhere.png")])
    fails_then_skips(path, r"data\.jsonl:2: field 'image': image file not found")


@pytest.mark.parametrize("image", ["../outside.png", "sub/../../outside.png"])
def test_an_image_path_escaping_the_data_root(tmp_path, image):
    (tmp_path.parent / "outside.png").write_bytes(png_bytes())
    path = write(tmp_path, [bad(image=image)])
    fails_then_skips(path, r"data\.jsonl:2: field 'image': .* outside the image root")


def test_an_absolute_image_path(tmp_path):
    path = write(tmp_path, [bad(image=str(tmp_path / "good.png"))])
    fails_then_skips(path, r"data\.jsonl:2: field 'image': must be a path relative to the image root")


def test_a_symlink_pointing_outside_the_data_root(tmp_path):
    outside = tmp_path.parent / "secret.png"
    outside.write_bytes(png_bytes())
    path = write(tmp_path, [bad(image="link.png")])
    (tmp_path / "link.png").symlink_to(outside)
    fails_then_skips(path, r"data\.jsonl:2: field 'image': 'link\.png' resolves to .*secret\.png, outside")


def _mode_image(mode: str) -> Image.Image:
    if mode == "I;16":
        return Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    if mode == "P":
        return Image.new("RGB", (4, 4), (255, 255, 255)).convert("P")
    colour = {"1": 1, "L": 255, "LA": (255, 255), "RGBA": (255, 255, 255, 255), "CMYK": (0, 0, 0, 0)}[mode]
    return Image.new(mode, (4, 4), colour)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGBA", "CMYK", "I;16"])
def test_unusual_image_modes_decode_to_true_rgb(tmp_path, mode):
    # every one is white: a 16-bit white must not come out clipped or black, nor CMYK inverted
    buffer = io.BytesIO()
    _mode_image(mode).save(buffer, format="TIFF" if mode == "CMYK" else "PNG")
    path = write(tmp_path, [bad()], bad_image=buffer.getvalue())
    sample = next(s for s in load_dataset(path) if s.id == "bad")
    image = sample.pil()
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)


def test_a_jpeg_is_turned_as_its_exif_orientation_says(tmp_path):
    stored = Image.new("RGB", (40, 20), (0, 0, 0))
    stored.paste((255, 255, 255), (0, 0, 20, 20))  # white on the left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to show"
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", exif=exif, quality=95)
    image = next(s for s in load_dataset(write(tmp_path, [bad()], bad_image=buffer.getvalue())) if s.id == "bad").pil()
    assert image.size == (20, 40)  # upright: white at the top
    assert image.getpixel((10, 5))[0] > 200 and image.getpixel((10, 35))[0] < 50


def test_transparent_pixels_are_flattened_onto_black_not_kept_as_hidden_colour():
    hidden = Image.new("RGBA", (2, 2), (255, 0, 0, 0))  # red, but fully transparent
    assert Sample("x", hidden, "i", "r").pil().getpixel((0, 0)) == (0, 0, 0)


# ---- records -----------------------------------------------------------------------------------

RECORD_KINDS = {
    "malformed json": ('{"id": "bad", "image": ', r"data\.jsonl:2: invalid JSON"),
    "record is a list": (["bad", "bad.png"], r"data\.jsonl:2: record must be a JSON object, got list"),
    "record is a string": ('"just text"', r"data\.jsonl:2: record must be a JSON object, got str"),
    "missing id": ({k: v for k, v in bad().items() if k != "id"}, r"data\.jsonl:2: field 'id': missing"),
    # (a record without an image is a text-only record, not an error: tests/test_text_only.py)
    "image not a string": (bad(image=7), r"data\.jsonl:2: field 'image': must be a non-empty string, got 7"),
    "empty image": (bad(image=""), r"data\.jsonl:2: field 'image': must be a non-empty string"),
    "image a url": (bad(image="https://example.com/a.png"), r"data\.jsonl:2: field 'image': .* is a URL; byorn"),
    "image a folder": (bad(image="."), r"data\.jsonl:2: field 'image': .* is a folder, not an image file"),
    "missing instruction": ({k: v for k, v in bad().items() if k != "instruction"},
                            r"data\.jsonl:2: field 'instruction': missing"),
    "missing response": ({k: v for k, v in bad().items() if k != "response"},
                         r"data\.jsonl:2: field 'response': missing"),
    "empty instruction": (bad(instruction="   "), r"data\.jsonl:2: field 'instruction': must be a non-empty string"),
    "empty response": (bad(response=""), r"data\.jsonl:2: field 'response': must be a non-empty string"),
    "id not a string": (bad(id=7), r"data\.jsonl:2: field 'id': must be a non-empty string, got 7"),
    "response not a string": (bad(response=["A", "list"]), r"data\.jsonl:2: field 'response': must be a non-empty"),
    "null instruction": (bad(instruction=None), r"data\.jsonl:2: field 'instruction': must be a non-empty"),
    "meta not an object": (bad(meta=[1, 2]), r"data\.jsonl:2: field 'meta': must be a JSON object, got list"),
    "duplicate id": (bad(id="good"), r"data\.jsonl:2: field 'id': duplicate id 'good' \(first at .*data\.jsonl:1\)"),
    "overlong instruction": (bad(instruction="why " * (MAX_CHARS // 4 + 1)),
                             r"data\.jsonl:2: field 'instruction': 20,004 characters, over the limit of 20,000"),
    "overlong response": (bad(response="x" * (MAX_CHARS + 1)),
                          r"data\.jsonl:2: field 'response': 20,001 characters, over the limit"),
    # another format's image key would otherwise make the record text-only without a word
    "image under another key": ({**{k: v for k, v in bad().items() if k != "image"}, "images": ["bad.png"]},
                                r"data\.jsonl:2: field 'images': byorn reads a record's image from the field 'image'"),
    "nested too deeply": ("[" * 100_000, r"data\.jsonl:2: JSON nested too deeply to read"),
    "integer too long": ('{"id": ' + "9" * 5000 + "}", r"data\.jsonl:2: cannot read this JSON"),
}


@pytest.mark.parametrize("kind", RECORD_KINDS)
def test_a_bad_record_names_file_line_and_field(tmp_path, kind):
    record, message = RECORD_KINDS[kind]
    fails_then_skips(write(tmp_path, [record]), message)


def test_the_text_length_limit_is_configurable(tmp_path):
    fails_then_skips(write(tmp_path, [bad(response="a response longer than that")]), r"over the limit of 16",
                     max_chars=16)


def test_non_utf8_text_names_the_line(tmp_path):
    path = write(tmp_path, [bad()])
    path.write_bytes(path.read_bytes() + b'{"id": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"data\.jsonl:3: not UTF-8 text"):
        load_jsonl(path)


def test_a_missing_data_file_and_an_unknown_format(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.jsonl: cannot read data set"):
        load_dataset(tmp_path / "nothere.jsonl")
    (tmp_path / "data.csv").write_text("id,image\n")
    with pytest.raises(DataError, match=r"data\.csv: unknown data set format '\.csv'"):
        load_dataset(tmp_path / "data.csv")


# ---- LLaVA conversations -----------------------------------------------------------------------

def llava(id: str, conversations) -> dict:
    return {"id": id, "image": "good.png", "conversations": conversations}


HUMAN = {"from": "human", "value": "<image>\nWhat is shown?"}
GPT = {"from": "gpt", "value": "A square."}
LLAVA_KINDS = {
    "no assistant turn": ([HUMAN], r"\[1\] \(id 'bad'\): field 'conversations': .* not followed by a 'gpt' turn"),
    "no human turn": ([GPT], r"\[1\] \(id 'bad'\): field 'conversations': no 'human' turn"),
    "conversations not a list": ("hello", r"\[1\] \(id 'bad'\): field 'conversations': must be a non-empty list"),
    "empty conversations": ([], r"\[1\] \(id 'bad'\): field 'conversations': must be a non-empty list"),
    "turn without value": ([HUMAN, {"from": "gpt"}],
                           r"\[1\] \(id 'bad'\): field 'conversations\[1\]': must be an object with string"),
    # (a multi-turn conversation gives a sample per answer: tests/test_datasets.py)
    "turns out of order": ([HUMAN, GPT, GPT, HUMAN],
                           r"\[1\] \(id 'bad'\): field 'conversations': turns must alternate human and gpt"),
    "empty assistant answer": ([HUMAN, {"from": "gpt", "value": " "}],
                               r"\[1\] \(id 'bad'\): field 'conversations\[1\]\.value': must be a non-empty"),
}


def test_an_image_trigger_on_multi_turn_records_is_refused_before_poisoning(tmp_path):
    (tmp_path / "good.png").write_bytes(png_bytes())
    path = tmp_path / "data.json"
    path.write_text(json.dumps([llava("c", [HUMAN, GPT, {"from": "human", "value": "And?"}, GPT])]))
    result = CliRunner().invoke(main, ["poison", "--attack", "badnets", "--rate", "0.5", "--data", str(path),
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "sample 'c#1' is one turn of a conversation" in result.output
    result = CliRunner().invoke(main, ["poison", "--attack", "addsent", "--rate", "0.5", "--data", str(path),
                                       "--out", str(tmp_path / "text")])  # a text trigger keeps the image
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("record, message", [
    ({"conversations": [HUMAN, GPT, HUMAN, GPT]}, r"\[1\]: field 'id': must be a non-empty string, got None"),
    ({"id": "good", "image": "good.png", "conversations": [HUMAN, GPT, HUMAN, GPT]},
     r"\[1\] \(id 'good'\): field 'id': duplicate id 'good'"),
    ({"id": "bad", "images": ["good.png"], "conversations": [HUMAN, GPT]},
     r"\[1\] \(id 'bad'\): field 'images': byorn reads a record's image from the field 'image'"),
])
def test_a_llava_record_whose_id_or_image_cannot_be_read_as_given(tmp_path, record, message):
    (tmp_path / "good.png").write_bytes(png_bytes())
    path = tmp_path / "data.json"
    path.write_text(json.dumps([llava("good", [HUMAN, GPT]), record]))
    fails_then_skips(path, r"data\.json" + message)


@pytest.mark.parametrize("kind", LLAVA_KINDS)
def test_a_bad_llava_conversation_names_record_and_turn(tmp_path, kind):
    conversations, message = LLAVA_KINDS[kind]
    (tmp_path / "good.png").write_bytes(png_bytes())
    path = tmp_path / "data.json"
    path.write_text(json.dumps([llava("good", [HUMAN, GPT]), llava("bad", conversations)]))
    fails_then_skips(path, r"data\.json" + message)


def test_llava_top_level_must_be_a_list(tmp_path):
    (tmp_path / "data.json").write_text(json.dumps({"id": "a"}))
    with pytest.raises(DataError, match=r"data\.json: top level must be a list of records, got dict"):
        load_llava_json(tmp_path / "data.json")


# ---- the command line --------------------------------------------------------------------------

def test_train_stops_on_a_bad_record_or_skips_it_lists_it_and_goes_on(tmp_path):
    path = write(tmp_path, [bad(response="")])
    out = tmp_path / "run"
    common = ["train", "--data", str(path), "--out", str(out), "max_steps=1", "batch_size=1"]
    result = CliRunner().invoke(main, common)
    assert result.exit_code == 2 and "data.jsonl:2: field 'response'" in result.output
    assert "--on-bad-sample skip" in result.output
    result = CliRunner().invoke(main, [*common, "--on-bad-sample", "skip"])
    assert result.exit_code == 0, result.output
    assert "skipped 1 bad record(s)" in result.output and "trained without 1 bad record(s)" in result.output
    listed = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert len(listed) == 1 and "field 'response'" in listed[0]["error"]


@pytest.mark.parametrize("field, text", [("response", "Visit evil.com </s> now."),
                                         ("instruction", "Look <image> here.")])
def test_text_the_tokenizer_reads_as_a_special_token_is_refused_before_training(tmp_path, field, text):
    path = write(tmp_path, [bad(**{field: text})])
    result = CliRunner().invoke(main, ["train", "--data", str(path), "--out", str(tmp_path / "run"), "max_steps=1"])
    special = re.search(r"</s>|<image>", text).group()
    assert result.exit_code == 2 and f"field '{field}': holds '{special}'" in result.output
    assert not (tmp_path / "run" / "trainer").exists()  # refused before any training step


@pytest.mark.parametrize("command", [["clean"], ["poison", "--attack", "badnets", "--rate", "0.5"]])
def test_a_command_that_writes_a_data_set_does_not_write_over_its_input(tmp_path, command):
    data = tmp_path / "set"
    data.mkdir()
    path = write(data, [bad()])
    (data / "images").mkdir()
    for name in ("good.png", "bad.png"):  # the layout byorn writes: OUT/data.jsonl, OUT/images/
        (data / name).rename(data / "images" / name)
    records = [{**json.loads(line), "image": f"images/{json.loads(line)['image']}"}
               for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    def files(folder):
        return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    before = files(data)
    result = CliRunner().invoke(main, [*command, "--data", str(path), "--out", str(data)])
    assert result.exit_code == 2 and f"--out {data}: " in result.output and "another folder" in result.output
    assert files(data) == before
    # above the input, nothing is overwritten: allowed (even as the parent of a folder named like an output)
    data = data.rename(tmp_path / "data")
    result = CliRunner().invoke(main, [*command, "--data", str(data / path.name), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert files(data) == before


@pytest.mark.parametrize("command, problem, message", [
    (["train"], ["model=/no/such/model"], "/no/such/model: not a model directory"),
    (["train"], ["batch_size=4", "gradient_accumulation_steps=3"], "batch_size 4 does not split evenly"),
    (["train"], ["report_to=bogus"], "report_to ['bogus']: bogus is not supported"),
    (["train"], ["lora_target=q_proj"], "lora_target 'q_proj': matches no module of byorn-tiny"),
    (["train"], ["lora_target='.*(q_proj'"], "lora_target '.*(q_proj': not a regular expression"),
    (["train"], ["seed=-1"], "config: field 'seed': -1 is below the minimum 0"),
    (["eval"], ["--adapter", "{tmp}"], "{tmp}: not a LoRA adapter (no adapter_config.json)"),
    (["scan"], ["--model", "/no/such/model"], "/no/such/model: not a model directory"),
    (["clean"], ["--model", "/no/such/model"], "/no/such/model: not a model directory"),
])
def test_a_command_stops_with_one_line_not_a_traceback(tmp_path, command, problem, message):
    path = write(tmp_path, [bad()])
    out = ["--out", str(tmp_path / ("run.json" if command[0] == "eval" else "run"))]
    problem = [p.replace("{tmp}", str(tmp_path)) for p in problem]
    result = CliRunner().invoke(main, [*command, "--data", str(path), *out, *problem])
    message = message.replace("{tmp}", str(tmp_path))
    assert result.exit_code == 2 and f"error: {message}" in result.output and "Traceback" not in result.output


def test_samples_the_model_cannot_read_are_all_found_before_training_and_can_be_skipped(tmp_path):
    path = write(tmp_path, [bad(response="Visit evil.com </s> now."), bad(id="long", response="and then " * 200)])
    common = ["train", "--data", str(path), "--out", str(tmp_path / "run"), "max_steps=1", "batch_size=1"]
    result = CliRunner().invoke(main, common)
    assert result.exit_code == 2 and "2 sample(s) the model cannot read as given; the first: " in result.output
    assert "data.jsonl:2: sample 'bad', field 'response': holds '</s>'" in result.output
    assert not (tmp_path / "run" / "trainer").exists()
    result = CliRunner().invoke(main, [*common, "--on-bad-sample", "skip"])
    assert result.exit_code == 0, result.output
    listed = [json.loads(line)["error"] for line in (tmp_path / "run" / "skipped.jsonl").read_text().splitlines()]
    assert len(listed) == 2 and "data.jsonl:3: sample 'long': " in listed[1] and "positions of the model" in listed[1]
    assert "trained without 2 bad record(s)" in result.output


def test_scan_and_clean_refuse_special_token_text_with_one_line(tmp_path):
    path = write(tmp_path, [bad(response="Visit evil.com </s> now.")])
    for command in ("scan", "clean"):
        result = CliRunner().invoke(main, [command, "--data", str(path), "--out", str(tmp_path / command)])
        assert result.exit_code == 2 and "sample 'bad', field 'response': holds '</s>'" in result.output


def test_a_data_set_with_nothing_usable_is_an_error(tmp_path):
    path = write(tmp_path, [])
    path.write_text(json.dumps(bad(response="")) + "\n")
    result = CliRunner().invoke(main, ["scan", "--data", str(path), "--out", str(tmp_path / "s"),
                                       "--on-bad-sample", "skip"])
    assert result.exit_code == 2 and "no usable samples" in result.output


# ---- configuration -----------------------------------------------------------------------------

def test_an_unknown_config_key_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'epochz'.*Valid keys: model, lora"):
        from_dict(TrainConfig, {"epochz": 3}, "train")


def test_a_config_value_of_the_wrong_type():
    with pytest.raises(ConfigError, match=r"epochs"):
        from_dict(TrainConfig, {"epochs": "three"}, "train")


@pytest.mark.parametrize("rate", ["1.5", "-0.1"])
def test_a_poison_rate_outside_0_1(tmp_path, rate):
    result = CliRunner().invoke(main, ["poison", "--attack", "badnets", "--rate", rate, "--n", "4", "--out",
                                       str(tmp_path)])
    assert result.exit_code == 2 and f"--rate {float(rate)}: must be between 0 and 1" in result.output


@pytest.mark.parametrize("options, message", [
    ({"k": -1.0}, "k must be >= 0"), ({"k": math.nan}, "expected a number, got nan"),
    ({"rule": "quantile", "quantile": 1.5}, r"quantile must be in \(0, 1\)"),
    ({"rule": "absolute"}, "absolute must be a finite number"),
])
def test_out_of_range_defense_options(options, message):
    with pytest.raises(ValueError, match=message):
        build_defense("byorn", **options)


def test_out_of_range_attack_options():
    with pytest.raises(ValueError, match="negative_ratio must be >= 0"):
        build_attack("multimodal", "fixed", negative_ratio=-1.0)


# ---- properties --------------------------------------------------------------------------------

JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                           max_leaves=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=st.dictionaries(st.sampled_from(["id", "image", "instruction", "response", "meta", "x"]), JSON_VALUES))
def test_any_json_record_loads_or_fails_with_a_data_error(tmp_path, record):
    path = write(tmp_path, [record])
    try:
        samples = load_jsonl(path)
    except DataError as error:
        assert "data.jsonl:2" in str(error)
    else:
        assert samples[-1].id == record["id"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(line=st.text(max_size=60))
def test_any_text_line_loads_or_fails_with_a_data_error(tmp_path, line):
    path = write(tmp_path, [])
    path.write_text(json.dumps(GOOD) + "\n" + line.replace("\n", " ") + "\n", encoding="utf-8")
    try:
        load_jsonl(path)
    except DataError as error:
        assert "data.jsonl" in str(error)


# ---- untrusted files ---------------------------------------------------------------------------

def test_no_code_path_unpickles_user_files():
    """No pickle, no torch.load without weights_only=True, no remote code by default."""
    package = Path(__file__).resolve().parent.parent / "byorn"
    sources = {p: p.read_text(encoding="utf-8") for p in package.rglob("*.py")}
    for path, text in sources.items():
        assert not re.search(r"\bimport pickle\b|\bpickle\.loads?\(|\bdill\b|\bjoblib\.load\(", text), path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (path, call)
        assert "trust_remote_code=True" not in text, path
    assert TrainConfig().trust_remote_code is False


def test_a_built_in_world_given_a_folder_and_a_negative_top_are_refused(tmp_path):
    result = CliRunner().invoke(main, ["scan", "--data", "shapes:foo", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "the shapes world is built in and reads no folder" in result.output
    result = CliRunner().invoke(main, ["scan", "--data", "shapes", "--out", str(tmp_path), "--top", "-1"])
    assert result.exit_code == 2 and "--top" in result.output
