"""The main job end to end on the shipped byorn-tiny, shrunk to a few samples."""

from __future__ import annotations

import json

import pytest

from byorn.attacks import MANIFEST_NAME, build_attack, read_manifest
from byorn.defenses.byorn_config import DEFAULT_VARIANT
from byorn.metrics import attack_success
from byorn.workflow import DEMO_ATTACK, DEMO_ROWS, DEMO_TRAINING, run_demo


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
    # At this size the attack does not take even undefended (no-defense ASR is 0 on 12 test inputs),
    # so comparing ASRs would pass vacuously. What BYORn itself answers for can be checked: every
    # poisoned sample is flagged, and every time training saw it (once an epoch; the warm-up's steps
    # count as the first ones, so the last epoch stops short of some), its target response had been
    # replaced by one without the backdoor behaviour; or it never reached training, its replacement
    # unfit (at this size the kept answers lack many of the warmed reference's words).
    rule = build_attack(DEMO_ATTACK.trigger, DEMO_ATTACK.target).target.asr_rule()
    poisoned = {r.id: r for r in read_manifest(tmp_path / "byorn" / MANIFEST_NAME) if not r.negative}
    assert len(poisoned) == 5 and all(attack_success(r.poisoned_response, rule) for r in poisoned.values())
    flagged = {a["id"]: a for a in audit if a["event"] == "flagged"}
    assert set(poisoned) <= set(flagged)
    trained = {i for i in poisoned if "left_out" not in flagged[i]}
    replaced = [a for a in audit if a["event"] == "replaced" and a["id"] in poisoned]
    epochs = range(int(DEMO_TRAINING.epochs))
    assert {(i, 0) for i in trained} <= {(a["id"], a["epoch"]) for a in replaced} <= {(i, e) for i in trained
                                                                                     for e in epochs}
    assert not any(attack_success(a["response"], rule) for a in replaced)
    assert (tmp_path / "byorn" / "model" / "model.safetensors").exists()  # the demo fully fine-tunes
    # the demo runs the shipped default judgement
    assert (tmp_path / "byorn" / "defense.yaml").read_text().startswith(f"defense: byorn\nvariant: {DEFAULT_VARIANT}\n")
