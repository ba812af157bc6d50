"""byorn.run through the Python API: `finetune(..., resume_from=...)` keeps the run contract that
`byorn train --resume` keeps (tests/test_resume.py): the same config, defense and samples, or refused;
and a fresh run leaves nothing of an earlier one to resume from."""

from __future__ import annotations

import pytest

from byorn.config import TrainConfig
from byorn.defenses import build_defense
from byorn.run import Run, RunError, latest_checkpoint
from byorn.train import finetune
from byorn.worlds import shapes

CONFIG = TrainConfig(lora=False, max_steps=2, batch_size=4, save_steps=1, logging_steps=1)


@pytest.fixture
def started(tiny_vlm_factory, tmp_path):
    """A run of two steps on 8 samples, checkpointed after each; its folder and samples."""
    samples = shapes.downstream_samples(8, seed=0)
    finetune(tiny_vlm_factory(), samples, CONFIG, tmp_path / "run")
    return tmp_path / "run", samples


def test_the_same_run_resumes_from_its_checkpoint(tiny_vlm_factory, started):
    run_dir, samples = started
    checkpoint = latest_checkpoint(run_dir)
    assert checkpoint is not None and checkpoint.name == "checkpoint-2"
    trainer = finetune(tiny_vlm_factory(), samples, CONFIG, run_dir, resume_from=checkpoint)
    assert trainer.state.global_step == CONFIG.max_steps


def test_a_resume_on_other_samples_is_refused(tiny_vlm_factory, started):
    run_dir, samples = started
    others = shapes.downstream_samples(12, seed=0)
    with pytest.raises(RunError, match=r"data.yaml: the run was started on other samples \(8 samples; now 12\)"):
        finetune(tiny_vlm_factory(), others, CONFIG, run_dir, resume_from=latest_checkpoint(run_dir))
    changed = [samples[0].with_response("something else"), *samples[1:]]  # as many samples, one answer changed
    with pytest.raises(RunError, match="started on other samples"):
        finetune(tiny_vlm_factory(), changed, CONFIG, run_dir, resume_from=latest_checkpoint(run_dir))


def test_a_resume_with_another_config_or_defense_is_refused(tiny_vlm_factory, started):
    run_dir, samples = started
    faster = TrainConfig(**{**vars(CONFIG), "learning_rate": 1e-2})
    with pytest.raises(RunError, match=r"config.yaml: the run was started with other settings \(learning_rate\)"):
        finetune(tiny_vlm_factory(), samples, faster, run_dir, resume_from=latest_checkpoint(run_dir))
    # the run started without a defense (as `byorn train --defense none` records it): resumed with one, it
    # would train on what that defense keeps
    assert (run_dir / "defense.yaml").read_text() == "defense: none\n"
    with pytest.raises(RunError, match=r"defense.yaml: the run was started with other settings \(.*defense"):
        finetune(tiny_vlm_factory(), samples, CONFIG, run_dir, hook=build_defense("random_drop"),
                 resume_from=latest_checkpoint(run_dir))


def test_a_fresh_run_removes_an_earlier_runs_checkpoints_and_records(tiny_vlm_factory, started):
    run_dir, _ = started
    (run_dir / "defense.yaml").write_text("defense: random_drop\n")  # another run's, with a defense
    finetune(tiny_vlm_factory(), shapes.downstream_samples(4, seed=1), TrainConfig(**{**vars(CONFIG), "save_steps": 0}),
             run_dir)
    assert latest_checkpoint(run_dir) is None and (run_dir / "defense.yaml").read_text() == "defense: none\n"
    assert "samples: 4\n" in (run_dir / "data.yaml").read_text()


def test_a_run_records_its_defense_and_its_resume_is_checked_against_it(tmp_path):
    run = Run(tmp_path, CONFIG, build_defense("random_drop"))
    with pytest.raises(RuntimeError, match="admit"):  # a run knows its samples before it trains
        run.record_settings()
    run.admit([])
    run.record_settings()
    assert (tmp_path / "defense.yaml").read_text().startswith("defense: random_drop\n")
    checkpoint = tmp_path / "trainer" / "checkpoint-1"
    Run(tmp_path, CONFIG, build_defense("random_drop"), resume_from=checkpoint)  # the same defense
    with pytest.raises(RunError, match=r"defense.yaml: the run was started with other settings \(.*count"):
        Run(tmp_path, CONFIG, build_defense("random_drop", count=3), resume_from=checkpoint)
    with pytest.raises(RunError, match="defense.yaml: the run was started with other settings"):
        Run(tmp_path, CONFIG, None, resume_from=checkpoint)


def test_resumed_finds_the_newest_complete_checkpoint_or_refuses(tmp_path):
    with pytest.raises(RunError, match="no complete checkpoint to resume from"):
        Run.resumed(tmp_path, CONFIG)
    for step in (3, 12):
        (tmp_path / "trainer" / f"checkpoint-{step}").mkdir(parents=True)
        (tmp_path / "trainer" / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "trainer" / "checkpoint-20").mkdir()  # cut off mid-save: no trainer_state.json
    run = Run.resumed(tmp_path, CONFIG)
    assert run.checkpoint == tmp_path / "trainer" / "checkpoint-12" and run.resume_step == 12
