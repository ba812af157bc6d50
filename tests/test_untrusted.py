"""Hostile data, class by class, in every layout byorn reads (LLaVA JSON, JSONL, TRL rows in a
`save_to_disk` folder and in Parquet): what the author of a data set controls (text, images, file
names, ids, meta) must not make byorn read outside the data, steer what it writes, crash it, or
put live control text on a terminal or a page. docs/untrusted-data.md says what is guaranteed."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from byorn.cli import main
from byorn.data import DataError, Sample, Turn
from byorn.formats import LoadChecks, load_dataset, save_jsonl, save_llava_json
from byorn.worlds import shapes

LAYOUTS = ["llava", "jsonl", "rows", "parquet"]
FILE_LAYOUTS = ["llava", "jsonl"]  # the layouts that keep images as files and conversations as turns
CONTROLS = "\x1b]0;pwned\x07\x1b[2J\n\r\u202e"  # window title (OSC), clear screen, line breaks, RTL override


def png(path: Path, colour: tuple[int, int, int] = (200, 30, 90)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 6), colour).save(path)
    return path


def record(id: str, image: str | None = "img.png", **changes) -> dict:
    """A record as the data gives it: id, image path (relative to the data's folder), texts, meta."""
    return {"id": id, "image": image, "instruction": "What is shown?", "response": "A square.", **changes}


def _llava(r: dict) -> dict:
    turns = [*r.get("history", []), [r["instruction"], r["response"]]]
    conversation = [turn for k, (asked, answered) in enumerate(turns)
                    for turn in ({"from": "human", "value": ("<image>\n" if k == 0 and r["image"] else "") + asked},
                                 {"from": "gpt", "value": answered})]
    return {"id": r["id"], **({"image": r["image"]} if r["image"] else {}), "conversations": conversation,
            **({"meta": r["meta"]} if "meta" in r else {})}


def _row(r: dict) -> dict:
    """A TRL row whose image is given as a path and no bytes: `datasets` opens such a path itself."""
    return {"id": r["id"], "images": [{"bytes": None, "path": r["image"]}] if r["image"] else [],
            "messages": [{"role": "user", "content": r["instruction"]},
                         {"role": "assistant", "content": r["response"]}]}


def _llamafactory(r: dict) -> dict:
    """LLaMA-Factory's ShareGPT-style record: messages with an <image> tag, its images listed."""
    asked = ("<image>" if r["image"] else "") + r["instruction"]
    messages = [{"role": "user", "content": asked}, {"role": "assistant", "content": r["response"]}]
    return {"id": r["id"], "messages": messages, "images": [r["image"]] if r["image"] else []}


def write_set(folder: Path, layout: str, records: list[dict]) -> Path:
    """The records in `layout` under `folder` (made); returns what to pass as --data."""
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "llamafactory":
        path = folder / "data.json"
        path.write_text(json.dumps([_llamafactory(r) for r in records]))
        return path
    if layout == "jsonl":
        path = folder / "data.jsonl"
        path.write_text("".join(json.dumps({k: v for k, v in r.items() if v is not None}) + "\n" for r in records))
        return path
    if layout == "llava":
        path = folder / "data.json"
        path.write_text(json.dumps([_llava(r) for r in records]))
        return path
    return _write_rows(folder, layout, [_row(r) for r in records])


def _write_rows(folder: Path, layout: str, rows: list[dict]) -> Path:
    """Rows written as raw Arrow with the `datasets` schema (an Image feature): what a hostile file
    holds, not what `datasets` would make of the rows (it embeds the files it can read)."""
    datasets = pytest.importorskip("datasets")
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = datasets.Value("string")
    features = datasets.Features({"id": text, "images": [datasets.Image()],
                                  "messages": [{"role": text, "content": text}]})
    table = pa.Table.from_pylist(rows, schema=features.arrow_schema)
    if layout == "parquet":
        pq.write_table(table, folder / "data.parquet")
        return folder / "data.parquet"
    placeholder = pa.Table.from_pylist([{"id": "x", "images": [], "messages": []}], schema=table.schema)
    datasets.Dataset(placeholder).save_to_disk(str(folder / "data"))  # its files; our rows go in below
    (arrow,) = (folder / "data").glob("*.arrow")
    with pa.ipc.new_stream(arrow, table.schema) as writer:
        writer.write_table(table)
    return folder / "data"


# ---- nothing is read outside the data root ----------------------------------------------------

@pytest.mark.parametrize("layout", [*LAYOUTS, "llamafactory"])
@pytest.mark.parametrize("where", ["absolute", "relative"])
def test_no_image_outside_the_data_root_is_read_in_any_layout(tmp_path, layout, where, monkeypatch):
    secret = png(tmp_path / "private" / "secret.png")
    # a rows folder is its own image root (set/data/), a file's is its folder (set/)
    path = str(secret) if where == "absolute" else f"{'../' * (1 + layout.startswith('rows'))}private/secret.png"
    data = write_set(tmp_path / "set", layout, [record("a"), record("b", image=path)])
    png((data if data.is_dir() else data.parent) / "img.png")
    opened: list[str] = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda source, *a, **k: opened.append(str(source)) or real_open(source, *a, **k))
    with pytest.raises(DataError, match=r"field '(image|images)': .*(outside the image root|must be a path relative)"):
        load_dataset(data)
    skipped: list[str] = []
    assert [s.id for s in load_dataset(data, checks=LoadChecks(skipped=skipped))] == ["a"] and len(skipped) == 1
    assert not any("secret" in name for name in opened)  # refused before any library opened it


def test_a_saved_data_set_whose_state_names_a_file_outside_its_folder_is_refused(tmp_path):
    png(tmp_path / "set" / "img.png")
    other = write_set(tmp_path / "elsewhere", "rows", [record("stolen", image=None)])
    data = write_set(tmp_path / "set", "rows", [record("a", image=None)])
    state = json.loads((data / "state.json").read_text())
    (arrow,) = other.glob("*.arrow")
    state["_data_files"] = [{"filename": f"../../elsewhere/data/{arrow.name}"}]
    (data / "state.json").write_text(json.dumps(state))
    with pytest.raises(DataError, match=r"state\.json: field '_data_files\[0\]\.filename': .* outside the data set"):
        load_dataset(data)


@pytest.mark.parametrize("layout", ["rows", "parquet"])
def test_a_hugging_face_data_set_is_read_without_writing_a_cache_anywhere(tmp_path, monkeypatch, layout):
    datasets = pytest.importorskip("datasets")
    data = write_set(tmp_path / "set", layout, [record("a")])
    png((data if data.is_dir() else data.parent) / "img.png")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "set").rglob("*"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    assert [s.id for s in load_dataset(data)] == ["a"]
    assert not (tmp_path / "cache").exists() and sorted(p.relative_to(tmp_path) for p in
                                                        (tmp_path / "set").rglob("*")) == before


# ---- conversations come from the layout, never from meta ---------------------------------------

FORGED = {"record": "r", "turn": 1, "turns": 2}


@pytest.mark.parametrize("layout", FILE_LAYOUTS)
@pytest.mark.parametrize("save", [save_llava_json, save_jsonl])
def test_meta_naming_a_conversation_neither_merges_nor_renames_records(tmp_path, layout, save):
    png(tmp_path / "set" / "img.png")
    records = [record("x", meta=FORGED, response="One."), record("y", meta={**FORGED, "turn": 2}, response="Two."),
               record("z", meta={"record": "x", "turn": 1, "turns": 1}, response="Three.")]
    again = load_dataset(save(load_dataset(write_set(tmp_path / "set", layout, records)), tmp_path / "out"))
    assert [(s.id, s.response, s.history) for s in again] == [("x", "One.", ()), ("y", "Two.", ()),
                                                              ("z", "Three.", ())]
    assert [s.meta["record"] for s in again] == ["r", "r", "x"]  # the user's own meta, kept as it was


@pytest.fixture(scope="module")
def shipped():
    from byorn.models import load_vlm

    return load_vlm("byorn-tiny")


@pytest.mark.parametrize("layout", FILE_LAYOUTS)
def test_meta_naming_a_flagged_record_does_not_make_clean_drop_a_clean_one(shipped, tmp_path, layout):
    from test_clean import planted_set

    from byorn.clean import clean
    from byorn.defenses.byorn import ByornConfig

    samples = planted_set()
    bystander = samples[5]
    samples[5] = Sample(bystander.id, bystander.image, bystander.instruction, bystander.response,
                        {"record": samples[4].id, "turn": 1, "turns": 1})  # poses as the planted record's turn
    data = (save_llava_json if layout == "llava" else save_jsonl)(samples, tmp_path / "in")
    cleaned = clean(shipped, load_dataset(data), ByornConfig(), tmp_path / "out", layout=layout, drop=True)
    kept = {s.id for s in load_dataset(cleaned.data, image_root=data.parent)}  # the input's images, not copied
    assert samples[4].id in cleaned.flagged and samples[4].id not in kept
    assert kept == {s.id for s in samples} - set(cleaned.flagged)  # bystander kept unless itself flagged


def test_a_flagged_answer_is_replaced_in_the_history_of_the_later_jsonl_lines(shipped, tmp_path):
    from test_clean import PLANTED, planted_set

    from byorn.clean import clean
    from byorn.defenses.byorn import ByornConfig

    samples = planted_set()
    # its answer is the planted poison; a second line goes on from it (one image: one file for both)
    first = samples[4] = dataclasses.replace(samples[4], turn=Turn("c", 1, 2))
    later = Sample(f"{first.id}-again", first.image, "Describe it once more.", samples[3].response,
                   history=((first.instruction, PLANTED),), turn=Turn("c", 2, 2, (first.id,)))
    data = save_jsonl([*samples, later], tmp_path / "in")
    loaded = load_dataset(data)
    assert loaded[-1].turn.earlier == (first.id,)  # the line is linked to the line that says that answer
    cleaned = clean(shipped, loaded, ByornConfig(fit_replacements=False), tmp_path / "out", layout="jsonl")
    assert first.id in cleaned.flagged
    lines = [json.loads(line) for line in cleaned.data.read_text().splitlines()]
    again = next(line for line in lines if line["id"] == later.id)
    assert PLANTED not in json.dumps(again) and again["history"][0][1] == \
        next(line for line in lines if line["id"] == first.id)["response"]


def test_an_answer_in_a_jsonl_history_that_no_line_gives_is_an_error_not_unjudged(tmp_path):
    png(tmp_path / "set" / "img.png")
    data = write_set(tmp_path / "set", "jsonl", [
        record("a"), record("b", instruction="And?", history=[["What is shown?", "Unjudged poison."]])])
    with pytest.raises(DataError, match=r"data\.jsonl:2: field 'history\[0\]': this earlier answer is not the "
                                        r"response of any line"):
        load_dataset(data)
    skipped: list[str] = []
    assert [s.id for s in load_dataset(data, checks=LoadChecks(skipped=skipped))] == ["a"] and len(skipped) == 1
    fixed = write_set(tmp_path / "set", "jsonl", [record("a"), record("b", instruction="And?",
                                                                      history=[["What is shown?", "A square."]])])
    assert [s.turn.earlier if s.turn else None for s in load_dataset(fixed)] == [(), ("a",)]


def test_jsonl_lines_that_continue_one_another_are_one_conversation_whatever_their_ids(tmp_path):
    png(tmp_path / "set" / "img.png")
    first = ["What is shown?", "A square."]
    data = write_set(tmp_path / "set", "jsonl", [
        record("q"), record("q-more", instruction="And?", response="Small.", history=[first]),
        record("c#1", instruction="Colour?", response="Red."),
        record("c#2", instruction="Sure?", response="Yes.", history=[["Colour?", "Red."]])])
    turns = {s.id: s.turn for s in load_dataset(data)}
    assert turns == {"q": Turn("q", 1, 2), "q-more": Turn("q", 2, 2, ("q",)), "c#1": Turn("c", 1, 2),
                     "c#2": Turn("c", 2, 2, ("c#1",))}
    records = json.loads(save_llava_json(load_dataset(data), tmp_path / "out").read_text())
    assert [(r["id"], len(r["conversations"])) for r in records] == [("q", 4), ("c", 4)]


# ---- what is written is what was judged: one file per image, whatever the ids ----------------------

@pytest.mark.parametrize("save", [save_llava_json, save_jsonl])
def test_an_id_crafted_like_another_records_image_file_name_does_not_share_its_file(tmp_path, save):
    import hashlib

    crafted = f"coco_0001-{hashlib.sha1(b'coco/0001').hexdigest()[:10]}"  # the name the old writer gave coco/0001
    samples = [Sample(crafted, Image.new("RGB", (4, 4), (255, 0, 0)), "What?", "Red."),
               Sample("coco/0001", Image.new("RGB", (4, 4), (0, 0, 255)), "What?", "Blue."),
               Sample("Coco/0001", Image.new("RGB", (4, 4), (0, 255, 0)), "What?", "Green.")]
    again = load_dataset(save(samples, tmp_path / "out"))
    assert [(s.id, s.pil().getpixel((0, 0))) for s in again] == [(s.id, s.image.getpixel((0, 0))) for s in samples]
    assert len(list((tmp_path / "out" / "images").iterdir())) == 3


# ---- a text part that is not text --------------------------------------------------------------

@pytest.mark.parametrize("layout", ["rows", "parquet"])
def test_a_content_part_whose_text_is_not_a_string_is_a_one_line_error(tmp_path, layout):
    datasets = pytest.importorskip("datasets")
    text = datasets.Value("string")
    features = datasets.Features({"id": text, "messages": [{"role": text, "content": [
        {"type": text, "text": datasets.Value("int64")}]}]})
    rows = [{"id": "a", "messages": [{"role": "user", "content": [{"type": "text", "text": 7}]},
                                     {"role": "assistant", "content": [{"type": "text", "text": 8}]}]}]
    table = datasets.Dataset.from_list(rows, features=features)
    data = tmp_path / ("data.parquet" if layout == "parquet" else "data")
    table.to_parquet(str(data)) if layout == "parquet" else table.save_to_disk(str(data))
    with pytest.raises(DataError, match=r"row 0, field 'messages\[0\]\.content\[0\]\.text': expected a string, got"):
        load_dataset(data)
    result = CliRunner().invoke(main, ["scan", "--data", str(data), "--out", str(tmp_path / "scan")])
    assert result.exit_code == 2, result.output
    assert "messages[0].content[0].text" in result.output and "Traceback" not in result.output


# ---- strict JSON out ----------------------------------------------------------------------------

@pytest.mark.parametrize("layout", FILE_LAYOUTS)
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_nan_or_infinity_in_meta_is_refused_with_its_field(tmp_path, layout, value):
    png(tmp_path / "set" / "img.png")
    data = write_set(tmp_path / "set", layout, [record("a", meta={"score": [1, "x"]})])
    data.write_text(data.read_text().replace('"x"', value))  # what pandas and Python's json write
    with pytest.raises(DataError, match=r"field 'meta': meta\['score'\]\[1\] is NaN or Infinity"):
        load_dataset(data)
    with pytest.raises(DataError, match=r"sample 'a', field 'meta': not JSON-serialisable"):
        save_llava_json([Sample("a", None, "Why?", "So.", {"score": math.nan})], tmp_path / "out")


# ---- text shown on a terminal or a page is inert ----------------------------------------------------

def test_inert_writes_control_characters_and_bidi_overrides_as_visible_escapes():
    from byorn.text import inert

    assert inert(CONTROLS) == "\\x1b]0;pwned\\x07\\x1b[2J\\n\\r\\u202e"
    assert inert("a\nb\tc\u2028", keep="\n\t") == "a\nb\tc\\u2028" and inert("Grüße ✓") == "Grüße ✓"


@pytest.mark.parametrize("layout", [*LAYOUTS, "llamafactory"])
def test_a_control_sequence_in_an_image_name_reaches_the_terminal_as_text(tmp_path, layout):
    data = write_set(tmp_path / "set", layout, [record("a"), record("b", image=f"x{CONTROLS}error: forged.png")])
    png((data if data.is_dir() else data.parent) / "img.png")
    result = CliRunner().invoke(main, ["scan", "--data", str(data), "--out", str(tmp_path / "scan")])
    assert result.exit_code == 2
    assert "\x1b" not in result.output and "\u202e" not in result.output and "\\x1b]0;pwned" in result.output
    assert [line for line in result.output.splitlines() if "error:" in line][0].startswith("error: ")
    assert sum(line.startswith("error:") for line in result.output.splitlines()) == 1


def test_scan_prints_an_id_holding_control_sequences_as_text(tmp_path):
    samples = shapes.downstream_samples(6, seed=1)
    samples[0] = Sample(f"title{CONTROLS}", samples[0].image, samples[0].instruction, samples[0].response)
    data = save_jsonl(samples, tmp_path / "set")
    result = CliRunner().invoke(main, ["scan", "--data", str(data), "--out", str(tmp_path / "scan")])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\u202e" not in result.output and "title\\x1b]0;pwned" in result.output


def test_review_page_shows_a_bidi_override_as_an_escape(tmp_path):
    from byorn.review import write_review

    sample = Sample(f"id{CONTROLS}", None, "Who\u202eevil", "Line one\nline two")
    page = write_review(tmp_path / "review.html", [sample], [3.0], [True]).read_text(encoding="utf-8")
    assert "\u202e" not in page and "\x1b" not in page and "Who\\u202eevil" in page
    assert "Line one\nline two" in page  # a text cell keeps its line breaks


@pytest.mark.parametrize("text", ["=1+1", "\uff1dcmd|' /C calc'!A0", " =1+1", "\n=1+1", "\t@SUM(A1)", "\uff0b1",
                                  " \u3000-2"])
def test_scan_csv_quotes_every_formula_a_spreadsheet_would_run(text):
    from byorn.scan import _spreadsheet_text

    assert _spreadsheet_text(text) == "'" + text
    assert _spreadsheet_text("A square = 4 sides.") == "A square = 4 sides." and _spreadsheet_text(3.5) == 3.5


def test_the_histogram_draws_scores_that_differ_in_the_last_digit(tmp_path):
    from byorn.scan import plot_histogram

    plot_histogram([1.0, math.nextafter(1.0, 2.0), 1.0], {"all": 1.0}, "mean_nll", tmp_path / "scores.png")
    plot_histogram([2.5] * 4, {}, "mean_nll", tmp_path / "same.png")
    assert Image.open(tmp_path / "scores.png").size[0] > 0 and (tmp_path / "same.png").exists()


# ---- an output folder is finished and consistent, or visibly unfinished -----------------------------

class Killed(BaseException):
    """What a kill (Ctrl-C, the OOM killer's signal) does to the run: it stops between two files."""


def _killed_at(name: str):
    def stop(*args, **kwargs):
        raise Killed(name)

    return stop


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_killed_clean_leaves_a_folder_every_command_can_tell_is_unfinished(shipped, tmp_path, monkeypatch, layout):
    from test_clean import planted_set

    import byorn.clean
    from byorn.clean import DATA_NAMES, clean
    from byorn.defenses.byorn import ByornConfig
    from byorn.outdir import UNFINISHED

    out, written = tmp_path / "out", tmp_path / "out" / DATA_NAMES[layout]
    first = clean(shipped, planted_set(), ByornConfig(fit_replacements=False), out, layout=layout)  # set A, finished
    assert not (out / UNFINISHED).exists() and load_dataset(first.data)
    other = planted_set(20)[::-1]  # set B (in memory, so written in `layout`), killed before its review page
    monkeypatch.setattr(byorn.clean, "write_review", _killed_at("review.html"))
    with pytest.raises(Killed):
        clean(shipped, other, ByornConfig(fit_replacements=False), out, layout=layout)
    assert (out / UNFINISHED).is_file() and "byorn clean" in json.loads((out / UNFINISHED).read_text())["unfinished"]
    assert not (out / "review.html").exists()  # A's page is gone, not shown beside B's data
    with pytest.raises(DataError, match=f"{written.name}: written by a byorn run that did not finish"):
        load_dataset(written)
    result = CliRunner().invoke(main, ["scan", "--data", str(written), "--out", str(tmp_path / "scan")])
    assert result.exit_code == 2 and "written by a byorn run that did not finish" in result.output
    monkeypatch.undo()
    again = clean(shipped, other, ByornConfig(fit_replacements=False), out, layout=layout)  # a rerun: cleared, finished
    assert not (out / UNFINISHED).exists() and len(load_dataset(again.data)) == 20
    if layout in FILE_LAYOUTS:
        assert len(list((out / "images").iterdir())) == 20  # none of A's 30 images left beside B's


def test_a_killed_scan_is_marked_and_a_rerun_clears_the_earlier_runs_files(tmp_path, monkeypatch):
    import byorn.scan
    from byorn.outdir import UNFINISHED

    data = save_jsonl(shapes.downstream_samples(8, seed=1), tmp_path / "set")
    scan = ["scan", "--data", str(data), "--out", str(tmp_path / "scan")]
    assert CliRunner().invoke(main, scan).exit_code == 0
    assert not (tmp_path / "scan" / UNFINISHED).exists() and (tmp_path / "scan" / "review.html").exists()
    monkeypatch.setattr(byorn.scan, "plot_histogram", _killed_at("scores.png"))
    with pytest.raises(Killed):
        CliRunner().invoke(main, scan, catch_exceptions=False)
    assert (tmp_path / "scan" / UNFINISHED).is_file() and (tmp_path / "scan" / "scan.csv").exists()
    assert not (tmp_path / "scan" / "review.html").exists() and not (tmp_path / "scan" / "scores.png").exists()
    beside = ["scan", "--data", str(data), "--out", str(data.parent)]  # a scan written into its input's folder
    with pytest.raises(Killed):
        CliRunner().invoke(main, beside, catch_exceptions=False)
    assert (data.parent / UNFINISHED).is_file() and load_dataset(data)  # the input is no output of the run
    monkeypatch.undo()
    assert CliRunner().invoke(main, beside).exit_code == 0 and not (data.parent / UNFINISHED).exists()


def test_clean_refuses_to_clear_files_it_still_reads_or_another_layouts_data_set(shipped, tmp_path):
    from byorn.clean import clean
    from byorn.defenses.byorn import ByornConfig

    data = save_jsonl(shapes.downstream_samples(4, seed=2), tmp_path / "out")  # its images are OUT/images/*
    with pytest.raises(ValueError, match=r"would clear '.*images.*', which it reads"):
        clean(shipped, load_dataset(data), ByornConfig(), tmp_path / "out", layout="jsonl")
    assert len(load_dataset(data)) == 4  # nothing cleared
    with pytest.raises(ValueError, match=r"holds data\.jsonl, a data set this clean \(layout llava"):
        clean(shipped, shapes.downstream_samples(4, seed=2), ByornConfig(), tmp_path / "out")


def test_a_scan_killed_while_it_loads_marks_the_folder_before_its_list_of_skipped_records(tmp_path, monkeypatch):
    import byorn.cli.judge
    from byorn.outdir import UNFINISHED

    data = save_jsonl(shapes.downstream_samples(6, seed=1), tmp_path / "set")
    scan = ["scan", "--data", str(data), "--out", str(tmp_path / "scan"), "--on-bad-sample", "skip"]
    assert CliRunner().invoke(main, scan).exit_code == 0  # a finished run
    with data.open("a") as file:
        file.write('{"id": "bad"}\n')  # a record to skip: the next run lists it before it judges
    monkeypatch.setattr(byorn.cli.judge, "loaded_model", _killed_at("the model"))
    with pytest.raises(Killed):
        CliRunner().invoke(main, scan, catch_exceptions=False)
    assert (tmp_path / "scan" / "skipped.jsonl").exists() and (tmp_path / "scan" / UNFINISHED).is_file()
