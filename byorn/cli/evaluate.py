"""`byorn eval`: a fine-tuned model's clean quality and, on triggered inputs, attack success."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from byorn.cli.common import (
    DATA_HELP,
    bf16,
    check_data_exists,
    fail,
    image_folder,
    load_samples,
    loaded_model,
    on_bad_sample,
    renamed,
)
from byorn.fileio import atomic_write_text


@click.command(name="eval")
@click.option("--model", default="byorn-tiny", show_default=True, help="base model directory or 'byorn-tiny'")
@click.option("--adapter", type=click.Path(exists=True, file_okay=False), help="LoRA adapter directory from train")
@click.option("--data", default="shapes", show_default=True, help=DATA_HELP)
@click.option("--n", "n_test", default=200, show_default=True,
              help="samples for --data shapes or flickr8k:FOLDER")
@click.option("--seed", default=0, show_default=True, help="seed of the built-in test samples (--data shapes)")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), help="results JSON to write")
@click.option("--triggered", type=click.Path(exists=True, dir_okay=False),
              help="a data file of triggered test inputs whose responses are the clean answers: its ASR is "
                   "reported too (needs --target-rule)")
@click.option("--target-rule", metavar="KIND:TEXT",
              help="when a triggered answer counts as the attack's: contains:TEXT, exact:TEXT, regex:PATTERN "
                   "or refusal (case-insensitive); an input whose clean answer already matches is not counted")
@on_bad_sample
@image_folder
@bf16
@renamed("n_test", "--n-test")
def evaluate(model: str, adapter: str | None, data: str, n_test: int, seed: int, out_path: str | None,
             triggered: str | None, target_rule: str | None, on_bad_sample: str, image_folder: str | None,
             bf16: bool) -> None:
    """Generate on a test split and report the scene metric, CIDEr and BLEU-4; with --triggered,
    also the attack success rate on your own triggered inputs."""
    check_data_exists(data)
    from byorn.evaluate import evaluate_clean, evaluate_triggered
    from byorn.metrics import parse_target_rule

    if out_path:  # made now: a missing folder found after the evaluation would cost the whole run
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    if (triggered is None) != (target_rule is None):
        fail("--triggered and --target-rule go together: the file of triggered inputs, and what counts as a hit")
    try:
        rule = parse_target_rule(target_rule) if target_rule else None
    except ValueError as exc:
        fail(f"--target-rule {target_rule!r}: {exc}")
    samples, _ = load_samples(data, n=n_test, seed=seed, split="test", on_bad=on_bad_sample,
                              report_dir=Path(out_path).parent if out_path else None, image_folder=image_folder)
    attacked = load_samples(triggered, n=0, seed=seed, split="test", on_bad=on_bad_sample, report_dir=None,
                            image_folder=image_folder)[0] if triggered else []
    try:
        vlm = loaded_model(model, bf16=bf16, adapter=adapter)
    except (OSError, ValueError) as exc:  # no such model; a folder that is not an adapter
        fail(str(exc))
    result = evaluate_clean(vlm, samples)
    if rule is not None:
        result.update(evaluate_triggered(vlm, attacked, rule))
    for key, value in result.items():
        click.echo(f"{key:>16}  {value:.4f}" if isinstance(value, float) else f"{key:>16}  {value}")
    if out_path:
        # JSON has no NaN: an ASR over no counted input is null there
        figures = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in result.items()}
        atomic_write_text(Path(out_path), json.dumps(figures, indent=2) + "\n")


