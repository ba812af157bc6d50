"""The main job end to end on the shipped byorn-tiny, shrunk to a few samples."""

from __future__ import annotations

import json

import pytest

from byorn.defenses.judging import DEFAULT_VARIANT
from byorn.workflow import DEMO_ROWS, run_demo


@pytest.mark.slow
def test_demo_rows_cover_no_defense_byorn_and_oracle(tmp_path):
    rows = run_demo(tmp_path, n_train=48, n_test=12)
    assert [r["defense"] for r in rows] == [d for _, d in DEMO_ROWS]
    for row in rows:
        assert 0.0 <= row["clean_score"] <= 1.0 and row["wall_s"] > 0
        assert row["n_poisoned"] == 5  # round(48 * 0.1)
    byorn = rows[1]
    assert {"detect_precision", "detect_recall", "detect_auroc"} <= set(byorn)
    audit = [json.loads(line) for line in (tmp_path / "byorn" / "audit.jsonl").read_text().splitlines()]
    assert sum(a["event"] == "flagged" for a in audit) == byorn["n_flagged"]
    assert (tmp_path / "byorn" / "model" / "model.safetensors").exists()  # the demo fully fine-tunes
    # the demo runs the shipped default judgement
    assert (tmp_path / "byorn" / "defense.yaml").read_text().startswith(f"defense: byorn\nvariant: {DEFAULT_VARIANT}\n")
