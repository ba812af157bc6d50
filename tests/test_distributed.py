"""Two CPU processes (DDP over gloo, launched by `accelerate launch`) train exactly what one
process trains: scoring split between them, the audit log merged without duplicates; and scan
what one process scans."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

# Scored in float32: the DDP warm-up's weights differ from one process's by float noise, which a
# bfloat16 pass can round into a whole bfloat16 step of a score.
TRAIN = ["train", "--data", "shapes", "--n", "64", "--defense", "byorn", "-d", "rule=quantile", "-d", "quantile=0.8",
         "-d", "fit_replacements=false", "-d", "max_new_tokens=12", "-d", "precision=float32", "max_steps=8",
         "batch_size=8", "logging_steps=1"]
# `accelerate launch --cpu` starts one process (several only through MPI); --multi_gpu starts one
# per --num_processes, and on a machine without GPUs byorn's Trainer arguments pick CPU and gloo.
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517"]


def _run(launcher: list[str], out: Path, command: list[str] = TRAIN) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launcher, "-m", "byorn.cli", *command, "--out", str(out)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _records(run: Path, event: str) -> list[dict]:
    lines = (run / "audit.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def _scores(run: Path) -> tuple[list[list[str]], list[list[float]]]:
    """Each score cache file's ids and scores, in an order that does not depend on its name (a
    fingerprint of weights that two processes reproduce only to float noise)."""
    cached = [[json.loads(line) for line in p.read_text().splitlines()] for p in run.glob("scores-*.jsonl")]
    files = sorted(([r["id"] for r in rows], [r["score"] for r in rows]) for rows in cached)
    return [ids for ids, _ in files], [scores for _, scores in files]


def _without_scores(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("score", "threshold")} for r in records]


def test_two_processes_train_what_one_process_trains(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _run([sys.executable], one)
    _run(LAUNCH, two)

    # the scores (each process scored half; the warmed reference's warm-up ran as DDP, so its
    # weights, and what it scores, agree to float noise) and the flags are the same
    (ids_one, scores_one), (ids_two, scores_two) = _scores(one), _scores(two)
    assert ids_one == ids_two and len(ids_one) == 5  # 4 scores under the pretrained model, mean NLL under the warmed
    assert all(a == pytest.approx(b, rel=1e-4, abs=1e-5) for a, b in zip(scores_one, scores_two))
    flagged_one, flagged_two = _records(one, "flagged"), _records(two, "flagged")
    assert [r["score"] for r in flagged_one] == pytest.approx([r["score"] for r in flagged_two], rel=1e-4, abs=1e-5)
    assert _without_scores(flagged_one) == _without_scores(flagged_two) != []
    # every replacement logged once, by the main process, as the single process logged them
    replaced = _records(two, "replaced")
    assert len({(r["id"], r["step"]) for r in replaced}) == len(replaced) > 0
    key = lambda r: (r["step"], r["id"])  # noqa: E731
    assert sorted(replaced, key=key) == sorted(_records(one, "replaced"), key=key)

    losses = [[e["loss"] for e in map(json.loads, (run / "train_log.jsonl").read_text().splitlines()) if "loss" in e]
              for run in (one, two)]
    warm_up = json.loads((one / "verdict.json").read_text())["steps_trained"]  # warm_start: the first steps
    assert warm_up > 0 and len(losses[0]) == 8 - warm_up and losses[1] == pytest.approx(losses[0], rel=1e-5)
    single, double = (load_file(run / "adapter" / "adapter_model.safetensors") for run in (one, two))
    assert single.keys() == double.keys()
    assert max(float((single[k] - double[k]).abs().max()) for k in single) < 1e-4


def test_two_processes_scan_what_one_process_scans(tmp_path):
    """`accelerate launch byorn scan`: each process scores its share, the warm-up runs as DDP, one
    process writes the folder and reports; a bounded warm set (warm_max) is the same draw in each."""
    scan = ["scan", "--data", "shapes", "--n", "96", "-d", "precision=float32", "-d", "canaries=3", "-d", "warm_max=16"]
    one, two = tmp_path / "one", tmp_path / "two"
    _run([sys.executable], one, scan)
    printed = _run(LAUNCH, two, scan)
    assert printed.count("most implausible first") == 1
    rows = [{r["id"]: r for r in map(json.loads, (run / "scan.jsonl").read_text().splitlines())} for run in (one, two)]
    assert {i: r["flagged"] for i, r in rows[0].items()} == {i: r["flagged"] for i, r in rows[1].items()}
    assert all(rows[0][i]["score"] == pytest.approx(rows[1][i]["score"], abs=0.05) for i in rows[0])
    canaries = [json.loads((run / "canaries.json").read_text())["kinds"] for run in (one, two)]
    assert {k: v["caught"] for k, v in canaries[0].items()} == {k: v["caught"] for k, v in canaries[1].items()}
    assert not (two / "UNFINISHED").exists()


def test_example_launcher_configs_are_valid_accelerate_configs():
    from accelerate.commands.config.config_args import load_config_from_file

    examples = Path(__file__).parent.parent / "examples" / "accelerate"
    kinds = {p.stem: load_config_from_file(str(p)).distributed_type.value for p in sorted(examples.glob("*.yaml"))}
    assert kinds == {"ddp": "MULTI_GPU", "deepspeed_zero2": "DEEPSPEED", "deepspeed_zero3": "DEEPSPEED",
                     "fsdp": "FSDP"}
