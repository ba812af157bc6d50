"""Interruption: a `byorn train` process killed with SIGKILL mid-run and resumed with --resume ends
with the same weights and the same BYORn audit log as a run that was never interrupted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

from byorn.cli import main
from byorn.formats import save_jsonl
from byorn.worlds import shapes

pytestmark = [pytest.mark.resume, pytest.mark.slow]

# Full fine-tuning of the shipped byorn-tiny, 12 steps, a checkpoint every 3; BYORn flags a
# share of the data so that replacements happen before and after the kill. Its warm-up (one epoch
# on 24 samples, 3 steps) counts as the first steps (warm_start), so the fine-tuning runs 9.
ARGS = ["--data", "shapes", "--n", "48", "--defense", "byorn", "-d", "rule=quantile", "-d", "quantile=0.8",
        "-d", "regenerate=epoch", "-d", "max_new_tokens=8", "-d", "fit_replacements=false", "lora=false",
        "max_steps=12", "batch_size=8", "save_steps=3", "learning_rate=0.0005", "logging_steps=1"]
LORA = [a.replace("lora=false", "lora=true").replace("learning_rate=0.0005", "learning_rate=0.002") for a in ARGS]
WEIGHTS = {"full": ("model", "model.safetensors"), "lora": ("adapter", "adapter_model.safetensors")}


def train_command(out: Path, args: list[str], *extra: str) -> list[str]:
    return [sys.executable, "-m", "byorn.cli", "train", "--out", str(out), *args, *extra]


def run_to_end(out: Path, args: list[str], *extra: str) -> None:
    done = subprocess.run(train_command(out, args, *extra), capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]


def replacements(out: Path) -> list[dict]:
    records = [json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines()]
    return [r for r in records if r["event"] == "replaced"]


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path, mode):
    args = ARGS if mode == "full" else LORA
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    run_to_end(whole, args)

    # Killed after the fine-tuning's checkpoint-6: the resumed run must take the saved verdict, answers
    # and warm-up steps (verdict.json), or it would judge again or run more steps.
    process = subprocess.Popen(train_command(cut, args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 300
    while not (cut / "trainer" / "checkpoint-6" / "trainer_state.json").exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint-6 within 5 minutes"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    folder, name = WEIGHTS[mode]
    assert not (cut / folder).exists()  # really interrupted before the end

    run_to_end(cut, args, "--resume")
    final_whole, final_cut = load_file(whole / folder / name), load_file(cut / folder / name)
    assert final_whole.keys() == final_cut.keys()
    assert all(bool((final_whole[k] == final_cut[k]).all()) for k in final_whole)  # bit-identical on CPU
    assert replacements(cut) == replacements(whole)
    assert {r["step"] for r in replacements(cut)} & {1, 2, 3} and {r["step"] for r in replacements(cut)} & {7, 8, 9}


def test_resume_without_a_checkpoint_or_with_other_settings_is_refused(tmp_path):
    result = CliRunner().invoke(main, ["train", "--data", "shapes", "--out", str(tmp_path), "--resume", "max_steps=1"])
    assert result.exit_code == 2 and "no complete checkpoint to resume from" in result.output
    checkpoint = tmp_path / "trainer" / "checkpoint-3"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    (tmp_path / "config.yaml").write_text("model: byorn-tiny\nmax_steps: 5\n")
    result = CliRunner().invoke(main, ["train", "--data", "shapes", "--out", str(tmp_path), "--resume", "max_steps=1"])
    assert result.exit_code == 2 and "started with other settings" in result.output and "max_steps" in result.output


def test_a_run_resumed_on_other_samples_is_refused(tmp_path):
    common = ["train", "--out", str(tmp_path), "--data", "shapes", "lora=false", "max_steps=2", "batch_size=4",
              "save_steps=1"]
    assert CliRunner().invoke(main, [*common, "--n", "8"]).exit_code == 0
    assert CliRunner().invoke(main, [*common, "--n", "8", "--resume"]).exit_code == 0  # the same samples
    result = CliRunner().invoke(main, [*common, "--n", "12", "--resume"])
    assert result.exit_code == 2 and "data.yaml: the run was started on other samples (shapes, 8 samples; now " \
        "shapes, 12)" in result.output


def test_a_fresh_run_in_an_old_run_folder_leaves_nothing_of_it_to_resume_from(tmp_path):
    common = ["train", "--out", str(tmp_path), "--data", "shapes", "lora=false", "max_steps=2", "batch_size=4",
              "save_steps=1"]
    assert CliRunner().invoke(main, [*common, "--n", "8"]).exit_code == 0
    assert (tmp_path / "trainer").is_dir()
    (tmp_path / "trainer" / "notes.txt").write_text("mine")  # a user's file there is not the run's to remove
    # another run into the same folder that saves no checkpoint of its own (as one stopped before its first)
    assert CliRunner().invoke(main, [*common, "--n", "12", "save_steps=0"]).exit_code == 0
    assert (tmp_path / "trainer" / "notes.txt").read_text() == "mine"
    result = CliRunner().invoke(main, [*common, "--n", "12", "save_steps=0", "--resume"])
    assert result.exit_code == 2 and "no complete checkpoint to resume from" in result.output


def test_a_run_on_a_data_set_moved_elsewhere_whole_resumes(tmp_path):
    data = save_jsonl(shapes.downstream_samples(8, seed=0), tmp_path / "here")
    common = ["train", "--out", str(tmp_path / "run"), "lora=false", "max_steps=2", "batch_size=4", "save_steps=1"]
    assert CliRunner().invoke(main, [*common, "--data", str(data)]).exit_code == 0
    shutil.move(tmp_path / "here", tmp_path / "there")  # staged to another disk, say
    result = CliRunner().invoke(main, [*common, "--data", str(tmp_path / "there" / data.name), "--resume"])
    assert result.exit_code == 0, result.output


def test_a_run_whose_defense_yaml_lacks_an_option_is_not_resumed_with_its_new_default(tmp_path):
    import yaml

    from byorn.config import TrainConfig
    from byorn.defenses import build_defense
    from byorn.run import Run, RunError

    defense = build_defense("byorn")
    checkpoint = tmp_path / "trainer" / "checkpoint-3"
    (tmp_path / "defense.yaml").write_text(yaml.safe_dump(defense.resolved()))
    Run(tmp_path, TrainConfig(), defense, resume_from=checkpoint)  # the same settings: resumed
    older = {k: v for k, v in defense.resolved().items() if k != "rejudge"}  # written before rejudge existed
    (tmp_path / "defense.yaml").write_text(yaml.safe_dump(older))
    with pytest.raises(RunError):
        Run(tmp_path, TrainConfig(), defense, resume_from=checkpoint)


def test_a_run_resumed_with_the_papers_recipe_goes_on_from_the_checkpoints_average(tmp_path):
    """generator=ema: the average of the weights is in each checkpoint; resumed from checkpoint-3, the
    run ends as the uninterrupted one, where an average started again from the checkpoint's weights
    writes other answers."""
    args = ["train", "--data", "shapes", "--n", "48", "--defense", "byorn_paper", "-d", "max_new_tokens=8",
            "lora=false", "max_steps=6", "batch_size=8", "save_steps=3"]
    whole = tmp_path / "whole"
    assert CliRunner().invoke(main, [*args, "--out", str(whole)]).exit_code == 0
    assert (whole / "trainer" / "checkpoint-3" / "byorn_ema.safetensors").is_file()
    outcomes = {}
    for kept in (True, False):
        cut = tmp_path / f"cut-{kept}"
        shutil.copytree(whole, cut)  # as if killed after checkpoint-3
        shutil.rmtree(cut / "model")
        shutil.rmtree(cut / "trainer" / "checkpoint-6")
        if not kept:
            (cut / "trainer" / "checkpoint-3" / "byorn_ema.safetensors").unlink()
        result = CliRunner().invoke(main, [*args, "--out", str(cut), "--resume"])
        assert result.exit_code == 0, result.output
        outcomes[kept] = replacements(cut)
    assert outcomes[True] == replacements(whole)
    assert outcomes[False] != replacements(whole)
