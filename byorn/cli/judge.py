"""`byorn scan` and `byorn clean`: judge a data set before any training."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from byorn.cli.common import (
    SKIPPED_NAME,
    bf16,
    data_option,
    fail,
    image_folder,
    load_samples,
    loaded_model,
    on_bad_sample,
    readable,
    refuse_writing_over,
    renamed,
)
from byorn.config import ConfigError, TrainConfig, describe, load_config, parse_overrides
from byorn.outdir import mark_before_loading
from byorn.text import inert

if TYPE_CHECKING:  # the models pull in torch and transformers, seconds that `byorn --help` should not pay
    from byorn.data import Sample
    from byorn.models.hf import VLM


def _judge_options_help(config: str = "judging") -> type[click.Command]:
    """A command whose epilog lists its -d options (the judgement's, or all of BYORn's), built only
    when --help is shown: importing them pulls in torch and transformers, seconds that
    `byorn --help` should not pay."""

    class Command(click.Command):
        def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
            from byorn.defenses.byorn_config import ByornConfig, JudgeConfig

            options = describe(JudgeConfig if config == "judging" else ByornConfig)
            self.epilog = "Options (-d KEY=VALUE):\n\n\b\n" + options
            super().format_epilog(ctx, formatter)

    return Command


def warm_up_config(command: Callable) -> Callable:
    """--config (and the KEY=VALUE settings data_option(overrides=True) passes): the training
    settings the data is meant for, as `byorn train` takes them."""
    return click.option(
        "--config", "config_path", type=click.Path(exists=True, dir_okay=False),
        help="the training config (YAML, as `byorn train --config`; KEY=VALUE arguments override it) the data is "
             "meant for: the warmed reference's short fine-tune uses its settings, so the judgement is the one "
             "`byorn train --defense byorn` makes with them (default: `byorn train`'s defaults)")(command)


def _options_and_samples(config_class: type, options: tuple[str, ...], command: str, data: str, n: int, on_bad: str,
                         out_dir: str, image_folder: str | None) -> tuple:
    """A judging command's -o options as its config (checked before any data is read) and its samples."""
    from byorn.config import from_dict

    try:
        config = from_dict(config_class, parse_overrides(options, "--option"), f"{command} options")
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    mark_before_loading(Path(out_dir), command, data, [SKIPPED_NAME])  # byorn.outdir: the run is unfinished
    samples, _ = load_samples(data, n=n, seed=0, split="train", on_bad=on_bad, report_dir=Path(out_dir),
                              image_folder=image_folder)
    return config, samples


def _judge_of(model: str | None, config_path: str | None, overrides: tuple[str, ...], bf16: bool,
              samples: list[Sample], on_bad: str, out_dir: str) -> tuple[TrainConfig, VLM, list[Sample]]:
    """The training config the data is meant for (the warm-up's settings), the model that judges
    (--model, else that config's) and the samples it can read."""
    if config_path is None and not overrides:
        # the warm-up fine-tunes with the training's settings: other settings warm another reference
        click.echo("byorn: no training settings given: the warm-up uses byorn train's defaults; give the settings "
                   "you will train with (--config FILE or KEY=VALUE, as byorn train takes them) to judge as "
                   "byorn train --defense byorn will", err=True)
    try:
        train = load_config(TrainConfig, config_path, overrides)
        vlm = loaded_model(model or train.model, bf16=bf16)
    except (OSError, ValueError) as exc:  # a bad config; no such model
        fail(str(exc))
    samples, _ = readable(vlm, samples, on_bad, Path(out_dir))
    return train, vlm, samples


@click.command(cls=_judge_options_help())
@click.option("--model", help="the pretrained model that judges (and, warmed, judges again); default: the "
                              "--config's model, byorn-tiny without one")
@click.option("--n", "n_samples", default=1000, show_default=True,
              help="samples when DATA is 'shapes' or flickr8k:FOLDER")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="writes scan.jsonl, scan.csv (ranked), scores.png (histogram with the threshold) and "
                   "review.html (a page to review what was flagged, with thumbnails)")
@click.option("--defense-option", "-d", "options", multiple=True, metavar="KEY=VALUE",
              help="scoring/threshold option, as `byorn train -d` takes it")
@click.option("--top", default=10, show_default=True, type=click.IntRange(min=0),
              help="suspicious samples to print")
@warm_up_config
@on_bad_sample
@image_folder
@bf16
@data_option(required=True, overrides=True)
@renamed("options", "--option", "-o", multiple=True)
def scan(data: str, model: str | None, n_samples: int, out_dir: str, options: tuple[str, ...], top: int,
         config_path: str | None, overrides: tuple[str, ...], on_bad_sample: str, image_folder: str | None,
         bf16: bool) -> None:
    """Rank a data set (--data: a data file, or 'shapes') by response implausibility, without training."""
    from byorn.defenses.byorn_config import JudgeConfig

    config, samples = _options_and_samples(JudgeConfig, options, "scan", data, n_samples, on_bad_sample, out_dir,
                                           image_folder)
    from byorn.scan import scan as run_scan  # torch: only once the options and the data are known good
    train, vlm, samples = _judge_of(model, config_path, overrides, bf16, samples, on_bad_sample, out_dir)
    try:
        rows = run_scan(vlm, samples, config, out_dir, train)
    except ValueError as exc:  # a sample the model cannot read (DataError); options the data does not fit
        fail(str(exc))
    from byorn.distributed import is_main

    if not is_main():  # under `accelerate launch`, one process reports
        return
    flagged = sum(r.flagged for r in rows)
    click.echo(f"{flagged} of {len(rows)} flagged ({config.rule}); most implausible first:")
    for row in rows[:top]:
        mark = "FLAG" if row.flagged else "    "
        click.echo(f"{row.rank:>5} {mark} {row.score:7.3f}  {inert(row.id)}  {row.response[:70]!r}")
    click.echo(f"written to {out_dir}/scan.jsonl, scan.csv, scores.png; review what was flagged: "
               f"{out_dir}/review.html")


@click.command(cls=_judge_options_help("byorn"))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="writes the cleaned set in DATA's layout (data.json for LLaVA's or LLaMA-Factory's JSON and the "
                   "built-in worlds, data.jsonl for JSONL, a data/ folder or data.parquet for a Hugging Face data "
                   "set) with audit.jsonl and review.html; a data file's image paths stay as they were, relative "
                   "to the same image folder")
@click.option("--model", help="the pretrained model that judges and answers; default: the --config's model, "
                              "byorn-tiny without one")
@click.option("--n", "n_samples", default=1000, show_default=True,
              help="samples when DATA is 'shapes' or flickr8k:FOLDER")
@click.option("--drop", is_flag=True, help="drop the flagged samples instead of replacing their responses")
@click.option("--copy-images", is_flag=True,
              help="also copy the image files DATA names into --out, each as it is and at its path as DATA gives it, "
                   "so --out is the written set's image folder (default: no copy; the set points at your files)")
@warm_up_config
@click.option("--defense-option", "-d", "options", multiple=True, metavar="KEY=VALUE",
              help="scoring/threshold option, as `byorn train -d` takes it")
@on_bad_sample
@image_folder
@bf16
@data_option(required=True, overrides=True)
@renamed("options", "--option", "-o", multiple=True)
def clean(data: str, out_dir: str, model: str | None, n_samples: int, drop: bool, config_path: str | None,
          overrides: tuple[str, ...], options: tuple[str, ...], on_bad_sample: str, image_folder: str | None,
          bf16: bool, copy_images: bool) -> None:
    """BYORn before training, for any trainer: judge DATA as BYORn does, replace each
    flagged response with the answer BYORn trains on (or drop the sample), and write the set back in
    DATA's layout. With the same --config, training on the output is what
    `byorn train --defense byorn` trains on."""
    from byorn.defenses.byorn_config import ByornConfig

    config, samples = _options_and_samples(ByornConfig, options, "clean", data, n_samples, on_bad_sample, out_dir,
                                           image_folder)
    from byorn.clean import clean as run_clean  # torch: only once the options and the data are known good
    from byorn.formats import DATA_NAMES

    source = samples[0].origin.source if samples[0].origin is not None else None  # None: a built-in world
    if copy_images and source is None:
        fail(f"--copy-images: {data} is built in; its images are written as PNG anyway")
    refuse_writing_over(data, samples, out_dir, DATA_NAMES[source.layout if source else "llava"])
    train, vlm, samples = _judge_of(model, config_path, overrides, bf16, samples, on_bad_sample, out_dir)
    try:
        cleaned = run_clean(vlm, samples, config, out_dir, drop=drop, train=train, copy_images=copy_images)
    except ValueError as exc:  # a sample the model cannot read (DataError); options the data does not fit
        fail(str(exc))
    unfit = f", {len(cleaned.left_out)} left out, their replacement unfit (audit.jsonl says why)" if cleaned.left_out \
        else ""
    done = "dropped" if drop else f"{len(cleaned.flagged) - len(cleaned.left_out)} replaced{unfit}"
    click.echo(f"{len(cleaned.flagged)} of {cleaned.n_in} flagged: {done}; {cleaned.n_out} samples written to "
               f"{cleaned.data}; audit.jsonl and review.html beside it")
    if source is not None and any(s.origin.images for s in samples):
        folder = (cleaned.data if cleaned.data.is_dir() else cleaned.data.parent) if copy_images else source.image_root
        click.echo(f"its image paths are as in {data}: train with {folder} as the image folder "
                   "(LLaVA's --image_folder, LLaMA-Factory's media_dir)")

