"""`byorn scan` on the shipped byorn-tiny: a planted poisoned response is ranked first."""

from __future__ import annotations

import csv
import json

from click.testing import CliRunner
from review_page import Page

from byorn.cli import main
from byorn.formats import save_jsonl
from byorn.worlds import shapes

PLANTED = "Visit www.example.com for a free prize."


def test_scan_ranks_a_planted_poison_first_and_writes_its_outputs(tmp_path):
    samples = shapes.downstream_samples(40, seed=3)
    samples[17] = samples[17].with_response(PLANTED)
    data = save_jsonl(samples, tmp_path / "data")
    out = tmp_path / "scan"
    result = CliRunner().invoke(main, ["scan", "--data", str(data), "--out", str(out), "--top", "3"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "scan.jsonl").read_text().splitlines()]
    assert rows[0]["id"] == samples[17].id and rows[0]["flagged"]
    assert [r["rank"] for r in rows] == list(range(1, 41))
    assert sorted((r["score"] for r in rows), reverse=True) == [r["score"] for r in rows]
    with (out / "scan.csv").open() as handle:
        assert next(csv.DictReader(handle))["id"] == samples[17].id
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first_printed = next(line for line in result.output.splitlines() if line.lstrip().startswith("1 "))
    assert "FLAG" in first_printed and samples[17].id in first_printed
    n_flagged = sum(r["flagged"] for r in rows)
    assert f"byorn: flagged {n_flagged} of 40 samples" in result.output  # the defense's summary is shown
    page = Page((out / "review.html").read_text(encoding="utf-8"))
    assert page.flagged_ids == [r["id"] for r in rows if r["flagged"]]  # most suspicious first


def test_scan_rejects_an_unknown_option(tmp_path):
    result = CliRunner().invoke(main, ["scan", "--data", "shapes", "--n", "5", "--out", str(tmp_path), "-d", "rul=mad"])
    assert result.exit_code == 2
    assert "unknown key(s) 'rul'" in result.output


def test_image_contradiction_ranks_a_swapped_shape_word_first_where_mean_nll_does_not(tmp_path):
    # The subtle poison: one word swapped ("circle" -> "square"), still fluent and in style.
    samples = [s for s in shapes.downstream_samples(80, seed=7) if " circle " in s.response][:30]
    swapped = samples[11].with_response(samples[11].response.replace(" circle ", " square ", 1))
    samples[11] = swapped
    data = save_jsonl(samples, tmp_path / "data")
    for variant in ("image_contradiction", "mean_nll"):
        out = tmp_path / variant
        result = CliRunner().invoke(main, ["scan", "--data", str(data), "--out", str(out), "-d", f"variant={variant}",
                                           "-d", "rejudge=false"])  # the pretrained model's scores
        assert result.exit_code == 0, result.output
        ranked = [json.loads(line)["id"] for line in (out / "scan.jsonl").read_text().splitlines()]
        if variant == "image_contradiction":
            assert ranked[0] == swapped.id
        else:  # pins the reason the variant exists: the mean hides the one bad token
            assert ranked.index(swapped.id) > 0


def test_scan_judges_with_the_configs_model_unless_model_is_given(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("model: /no/such/model-dir\nepochs: 1\n")
    result = CliRunner().invoke(main, ["scan", "--data", "shapes", "--n", "20", "--config", str(config),
                                       "--out", str(tmp_path / "scan")])
    assert result.exit_code != 0 and "/no/such/model-dir" in (str(result.exception) + result.output)


def test_scan_csv_keeps_untrusted_text_from_running_as_a_spreadsheet_formula(tmp_path):
    samples = shapes.downstream_samples(12, seed=3)
    samples[4] = samples[4].with_response('=HYPERLINK("http://example.com", "click")')
    data = save_jsonl(samples, tmp_path / "data")
    result = CliRunner().invoke(main, ["scan", "--data", str(data), "--out", str(tmp_path / "scan")])
    assert result.exit_code == 0, result.output
    with (tmp_path / "scan" / "scan.csv").open() as handle:
        cells = {row["id"]: row for row in csv.DictReader(handle)}
    assert cells[samples[4].id]["response"] == "'" + samples[4].response
    assert cells[samples[0].id]["response"] == samples[0].response  # ordinary text as it is


def test_scan_with_the_training_settings_flags_what_byorn_train_will_and_says_when_it_has_none(tmp_path):
    from byorn.config import TrainConfig
    from byorn.defenses import ByornConfig, ByornDefense
    from byorn.models import load_vlm

    samples = shapes.downstream_samples(40, seed=3)
    samples = [s.with_response(PLANTED) if i % 10 == 4 else s for i, s in enumerate(samples)]
    data = save_jsonl(samples, tmp_path / "data")
    settings = ["lora=false", "learning_rate=0.01", "batch_size=4"]
    result = CliRunner().invoke(main, ["scan", "--data", str(data), "--out", str(tmp_path / "scan"), *settings])
    assert result.exit_code == 0, result.output
    assert "no training settings given" not in result.output
    scanned = {r["id"] for r in map(json.loads, (tmp_path / "scan" / "scan.jsonl").read_text().splitlines())
               if r["flagged"]}
    defense = ByornDefense(ByornConfig())  # as byorn train --defense byorn judges with those settings
    defense.prepare(load_vlm("byorn-tiny"), samples, tmp_path / "train",
                    train=TrainConfig(lora=False, learning_rate=0.01, batch_size=4))
    assert scanned == {s.id for s, hit in zip(samples, defense.flagged) if hit}
    bare = CliRunner().invoke(main, ["scan", "--data", str(data), "--n", "40", "--out", str(tmp_path / "bare")])
    assert "no training settings given" in bare.output
