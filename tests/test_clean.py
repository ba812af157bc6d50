"""`byorn clean` (the defended data set for any trainer), `--image-folder`, and `byorn eval` on a
user's own triggered test file."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from PIL import Image

from byorn.clean import clean
from byorn.cli import main
from byorn.config import ConfigError
from byorn.data import DataError
from byorn.defenses.byorn import ByornConfig, ByornDefense
from byorn.formats import LoadChecks, load_dataset, save_jsonl, save_llava_json
from byorn.models import load_vlm
from byorn.worlds import shapes

PLANTED = "Visit www.example.com for a free prize."


def planted_set(n: int = 30) -> list:
    samples = shapes.downstream_samples(n, seed=3)
    for i in (4, 17):
        samples[i] = samples[i].with_response(PLANTED)
    return samples


def left_out(out_dir) -> set[str]:
    """The ids the audit log says were left out, their replacement unfit to train."""
    audit = [json.loads(line) for line in (out_dir / "audit.jsonl").read_text().splitlines()]
    return {r["id"] for r in audit if "left_out" in r}


@pytest.fixture(scope="module")
def shipped():
    return load_vlm("byorn-tiny")


def test_clean_replaces_each_flagged_response_with_what_in_training_byorn_would_train_on(shipped, tmp_path):
    samples = planted_set()
    cleaned = clean(shipped, samples, ByornConfig(), tmp_path / "out")
    out = {s.id: s for s in load_dataset(cleaned.data)}
    assert {samples[4].id, samples[17].id} <= set(cleaned.flagged)
    defense = ByornDefense(ByornConfig())
    defense.prepare(shipped, samples, tmp_path / "train")  # what `byorn train --defense byorn` replaces with
    # what training leaves out (a replacement in words no kept answer uses) clean leaves out too
    assert cleaned.n_out == len(out) == len(samples) - len(defense.left_out)
    assert set(out) == {s.id for s in defense.training_set(samples)}
    for sample in samples:
        if sample.id in defense.left_out:
            continue
        if sample.id in defense.reference_answers:
            assert out[sample.id].response == defense.reference_answers[sample.id] != sample.response
            assert out[sample.id].meta["original_response"] == sample.response
        else:
            assert out[sample.id].response == sample.response
    audit = [json.loads(line) for line in (tmp_path / "out" / "audit.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in audit) == sorted(cleaned.flagged)
    assert {r["id"]: r["left_out"] for r in audit if "left_out" in r} == defense.left_out != {}
    review = (tmp_path / "out" / "review.html").read_text()
    assert all(f"left out of training: {why}" in review for why in defense.left_out.values())


def test_clean_drops_instead_and_keeps_the_input_layout(shipped, tmp_path):
    data = save_jsonl(planted_set(), tmp_path / "in")
    result = CliRunner().invoke(main, ["clean", "--data", str(data), "--out", str(tmp_path / "out"), "--drop"])
    assert result.exit_code == 0, result.output
    written = tmp_path / "out" / "data.jsonl"
    kept = load_dataset(written, image_root=data.parent)  # its image paths are the input's
    assert PLANTED not in {s.response for s in kept} and f"{len(kept)} samples written" in result.output


@pytest.mark.parametrize("generator", ["current", "ema"])
def test_clean_refuses_the_in_training_generators(shipped, tmp_path, generator):
    with pytest.raises(ConfigError, match=f"generator={generator}"):
        clean(shipped, planted_set(), ByornConfig(generator=generator), tmp_path)


def test_an_image_folder_elsewhere_is_found_with_image_folder_and_missing_without(tmp_path):
    data = save_llava_json(shapes.downstream_samples(6, seed=2), tmp_path / "set")
    (tmp_path / "pictures").mkdir()
    shutil.move(str(tmp_path / "set" / "images"), str(tmp_path / "pictures" / "images"))
    scan = ["scan", "--data", str(data), "--out", str(tmp_path / "scan")]
    without = CliRunner().invoke(main, scan)
    assert without.exit_code == 2 and "field 'image': image file not found" in without.output
    found = CliRunner().invoke(main, [*scan, "--image-folder", str(tmp_path / "pictures")])
    assert found.exit_code == 0, found.output
    missing = CliRunner().invoke(main, [*scan, "--image-folder", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_eval_reports_the_asr_of_a_users_own_triggered_file(tmp_path):
    clean_inputs = shapes.downstream_samples(4, seed=8, split="test")
    triggered = save_jsonl([s.with_response(s.response) for s in clean_inputs], tmp_path / "triggered")
    out = tmp_path / "not" / "yet" / "eval.json"  # its folder is made
    args = ["eval", "--n", "4", "--triggered", str(triggered), "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--target-rule", "regex:\\b(there|the)\\b"])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    # the shipped model describes the scenes ("There is ...", "The image shows ..."): every answer
    # matches, but so does every clean answer, so no input is counted
    assert figures["n_triggered"] == 4 and figures["asr_n"] == 0
    assert figures["asr"] is None and "NaN" not in out.read_text()  # strict JSON: no input counted, no rate
    hits = CliRunner().invoke(main, [*args, "--target-rule", "contains:banana"])
    assert hits.exit_code == 0 and json.loads(out.read_text())["asr"] == 0.0
    for bad, message in ((["--target-rule", "nearly:x"], "expected KIND:TEXT"),
                         (["--target-rule", "regex:("], "not a regular expression"),
                         (["--target-rule", "regex:.*"], "matches the empty answer, so every answer")):
        failed = CliRunner().invoke(main, [*args, *bad])
        assert failed.exit_code == 2 and message in failed.output
    alone = CliRunner().invoke(main, ["eval", "--n", "4", "--triggered", str(triggered)])
    assert alone.exit_code == 2 and "go together" in alone.output


@pytest.mark.parametrize("parquet", [False, True])
def test_a_hugging_face_data_set_loads_scans_and_cleans_in_its_own_layout(tmp_path, parquet):
    pytest.importorskip("datasets")
    from byorn.formats import save_rows

    data = save_rows(planted_set(), tmp_path / "in", parquet=parquet)
    loaded = load_dataset(data)
    assert [s.response for s in loaded] == [s.response for s in planted_set()] and loaded[0].has_image
    result = CliRunner().invoke(main, ["clean", "--data", str(data), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    written = tmp_path / "out" / ("data.parquet" if parquet else "data")
    cleaned = load_dataset(written)
    unfit = left_out(tmp_path / "out")
    assert len(cleaned) == 30 - len(unfit) and PLANTED not in {s.response for s in cleaned}
    assert (f"{len(unfit)} left out, their replacement unfit" in result.output.replace("\n", " ")) == bool(unfit)


def test_a_bad_row_of_a_hugging_face_data_set_names_the_file_and_row(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"id": "a", "images": [], "messages": [{"role": "user", "content": "Hi?"}]}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "set"))
    with pytest.raises(DataError, match=r"set: row 0, field 'messages': expected one user turn then one assistant"):
        load_dataset(tmp_path / "set")


def _turns(answer: str) -> list[dict]:
    return [{"role": "user", "content": "What is shown?"}, {"role": "assistant", "content": answer}]


@pytest.mark.parametrize("row, message", [
    ({"id": "b", "messages": _turns("  ")}, r"row 1, field 'messages': the assistant turn has no text"),
    ({"id": "b", "messages": _turns("x" * 20_001)}, r"row 1: field 'messages': 20,001 characters, over the limit"),
    ({"id": None, "messages": _turns("A.")}, r"row 1, field 'id': expected a non-empty string or an integer"),
    ({"id": "b", "image": "/etc/hostname", "messages": _turns("A.")},
     r"row 1: field 'images': must be a path relative to the image root"),
    ({"id": "b", "image": "../outside.png", "messages": _turns("A.")}, r"row 1: field 'images': .* outside the image"),
    ({"id": "b", "image": "missing.png", "messages": _turns("A.")}, r"row 1: field 'images': image file not found"),
])
def test_a_hugging_face_row_is_held_to_the_checks_of_the_file_formats(tmp_path, row, message):
    datasets = pytest.importorskip("datasets")
    # from_list takes its columns from the first row: an "image" column there too, None (text-only)
    rows = [{"id": "a", **({"image": None} if "image" in row else {}), "messages": _turns("A square.")}, row]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "set"))
    with pytest.raises(DataError, match=message):
        load_dataset(tmp_path / "set")
    skipped: list[str] = []
    assert [s.id for s in load_dataset(tmp_path / "set", checks=LoadChecks(skipped=skipped))] == ["a"]
    assert len(skipped) == 1


def test_a_hugging_face_row_may_give_an_absolute_path_inside_the_image_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "a.png")
    rows = [{"id": "a", "image": str(tmp_path / "imgs" / "a.png"), "messages": _turns("A.")}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "set"))
    with pytest.raises(DataError, match=r"row 0: field 'images': must be a path relative .*\(--image-folder\)"):
        load_dataset(tmp_path / "set")  # outside the data set's folder
    (sample,) = load_dataset(tmp_path / "set", image_root=tmp_path / "imgs")
    assert sample.image == (tmp_path / "imgs" / "a.png").resolve()


def test_a_hugging_face_row_whose_image_does_not_decode_or_is_a_bomb_is_a_data_error(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    text = datasets.Value("string")
    features = datasets.Features({"id": text, "images": [datasets.Image()],
                                  "messages": [{"role": text, "content": text}]})
    good = Image.new("RGB", (8, 8))
    rows = [{"id": "a", "images": [good], "messages": _turns("A.")},
            {"id": "b", "images": [{"bytes": b"not an image", "path": None}], "messages": _turns("A.")}]
    datasets.Dataset.from_list(rows, features=features).save_to_disk(str(tmp_path / "set"))
    with pytest.raises(DataError, match=r"row 1, field 'images': cannot decode image"):
        load_dataset(tmp_path / "set")
    assert [s.id for s in load_dataset(tmp_path / "set", checks=LoadChecks(skipped=[]))] == ["a"]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 63)  # the 8 x 8 image is now over the limit
    with pytest.raises(DataError, match=r"row 0, field 'images': image too large, over Pillow's .* limit of 63"):
        load_dataset(tmp_path / "set")


def test_a_hugging_face_data_set_trains_two_steps_from_the_command_line(tmp_path):
    pytest.importorskip("datasets")
    from byorn.formats import save_rows

    data = save_rows(planted_set()[:12], tmp_path / "in")
    result = CliRunner().invoke(main, ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--defense",
                                       "byorn", "max_steps=2", "batch_size=4"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "audit.jsonl").exists() and (tmp_path / "run" / "adapter").is_dir()
