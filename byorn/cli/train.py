"""`byorn train`: fine-tune, optionally defended; the run's start and resume are `byorn.run.Run`'s."""

from __future__ import annotations

from pathlib import Path

import click

from byorn.cli.common import (
    SKIPPED_NAME,
    data_option,
    fail,
    image_folder,
    load_samples,
    on_bad_sample,
    readable,
    renamed,
)
from byorn.config import ConfigError, TrainConfig, describe, load_config, parse_overrides
from byorn.defenses.configs import DEFENSE_NAMES, defense_config


@click.command(epilog="Config keys (YAML file or KEY=VALUE overrides):\n\n\b\n" + describe(TrainConfig))
@click.option("--model", help="the model to fine-tune: a model directory, a hub name already downloaded, or "
                              "byorn-tiny (the config key model; default: the --config's, else byorn-tiny)")
@click.option("--n", "n_train", default=1000, show_default=True,
              help="samples for --data shapes or flickr8k:FOLDER")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="run directory")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="YAML config")
@click.option("--defense", default="none", show_default=True, type=click.Choice(DEFENSE_NAMES),
              help="none, byorn, byorn_paper (BYORn with the paper's own recipe), or a baseline: onion, bye, tcap, "
                   "score_drop, random_drop, reference_ratio; oracle (drops the poison a data set marks as such) "
                   "(`byorn list defenses`)")
@click.option("--defense-option", "-d", "defense_options", multiple=True, metavar="KEY=VALUE",
              help="defense option, e.g. -d rule=quantile -d quantile=0.9 (see `byorn scan --help`)")
@on_bad_sample
@image_folder
@click.option("--resume", is_flag=True,
              help="continue the run in --out from its newest checkpoint (needs save_steps > 0); give the "
                   "same data, config and defense as the first time")
@data_option(required=True, overrides=True)
@renamed("n_train", "--n-train")
def train(data: str, model: str | None, n_train: int, out_dir: str, config_path: str | None, defense: str,
          defense_options: tuple[str, ...], on_bad_sample: str, image_folder: str | None, resume: bool,
          overrides: tuple[str, ...]) -> None:
    """Fine-tune a VLM (LoRA by default), optionally defended; writes config.yaml, train_log.jsonl,
    the adapter and, with --defense byorn, audit.jsonl, the cached scores and review.html (a page
    to review what was flagged and what replaced it)."""
    if model is not None:
        if given := next((o for o in overrides if o.partition("=")[0].strip() == "model"), None):
            fail(f"the model given twice: --model {model} and {given}")
        overrides = (*overrides, f"model={model}")
    try:  # the command line is checked before torch and the model load, seconds that a typo should not cost
        config = load_config(TrainConfig, config_path, overrides)
        defense_config(defense, parse_overrides(defense_options, "--defense-option"))
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    import torch

    from byorn.data import DataError
    from byorn.defenses import Defense, build_defense
    from byorn.distributed import is_main, shut_down
    from byorn.models import load_vlm
    from byorn.review import write_run_review
    from byorn.run import CHECKPOINTS, Run, RunError
    from byorn.train import check_lora_target, check_reporting, finetune_in, training_arguments

    try:
        hook = build_defense(defense, **parse_overrides(defense_options, "--defense-option"))
        # what the Trainer would refuse only after the defense's work: a batch that does not split, a tracker
        check_reporting(training_arguments(config, Path(out_dir) / CHECKPOINTS))
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    try:  # a resume of another run stops here, before the data and the model are loaded
        run = Run.resumed(out_dir, config, hook) if resume else Run(out_dir, config, hook)
    except RunError as exc:
        fail(str(exc))
    if run.checkpoint is not None:
        click.echo(f"resuming from {run.checkpoint}")
    samples, n_skipped = load_samples(data, n=n_train, seed=config.seed, split="train", on_bad=on_bad_sample,
                                      image_folder=image_folder, report_dir=Path(out_dir))
    # Frozen base weights under LoRA need no float32 master copy: bf16 halves their memory.
    dtype = torch.bfloat16 if config.bf16 and config.lora else None
    try:
        vlm = load_vlm(config.model, trust_remote_code=config.trust_remote_code, dtype=dtype)
        check_lora_target(vlm, config)  # here, not after the defense's work
    except (OSError, ValueError) as exc:  # no such model; a lora_target that adapts nothing
        fail(str(exc))
    # before any work: training would meet a sample it cannot read only when its batch comes
    samples, unreadable = readable(vlm, samples, on_bad_sample, Path(out_dir))
    n_skipped += unreadable
    try:  # the samples the defense judges: a resumed run's must be those it started with
        run.admit(samples, source=data, image_root=_image_root(data, image_folder))
    except RunError as exc:
        fail(str(exc))
    try:
        hook.prepare(vlm, samples, out_dir, train=config, resume_step=run.resume_step)
        training_set = hook.training_set(samples)
    except ValueError as exc:  # e.g. the oracle on data without poison labels, random_drop count > data
        fail(f"--defense {defense}: {exc}")
    if type(hook).deployed is not Defense.deployed:
        click.echo(f"note: {defense} acts when the model answers (byorn bench, Defense.deployed); the model "
                   f"saved here is fine-tuned without it", err=True)
    try:
        finetune_in(run, vlm, training_set)
    except (DataError, ConfigError) as exc:  # a sample longer than the model's context; a batch that does not split
        fail(str(exc))
    if is_main() and (page := write_run_review(out_dir, samples, hook)) is not None:
        click.echo(f"review what {defense} flagged: {page}")
    shut_down()
    if not is_main():
        return  # the main process reports
    click.echo(f"run written to {out_dir}")
    if n_skipped:  # repeated at the end: the note at load time has long scrolled away
        click.echo(f"trained without {n_skipped} bad record(s), listed in {Path(out_dir) / SKIPPED_NAME}", err=True)


def _image_root(data: str, image_folder: str | None) -> Path:
    """The folder the data's image paths are relative to, as the loader takes them: a data set moved
    elsewhere whole keeps its fingerprint."""
    source = Path(data)
    return Path(image_folder) if image_folder else source if source.is_dir() else source.parent
