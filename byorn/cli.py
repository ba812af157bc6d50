"""The `byorn` command. Each subcommand is a thin wrapper over a library function."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import sys
from pathlib import Path

import click

from byorn.allocator import keep_freed_memory
from byorn.config import ConfigError, PretrainConfig, TrainConfig, describe, load_config, parse_overrides, read_yaml
from byorn.fileio import append_jsonl, atomic_write_text, write_jsonl
from byorn.outdir import mark_before_loading
from byorn.text import inert
from byorn.worlds import WORLDS

# No run-time downloads: models and data come from local directories or our own code.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA_HELP = ("'shapes' for the built-in downstream task (a fresh seeded split), 'flickr8k:FOLDER' for the "
             "Flickr8k archive-note task on real photos, or a data file: LLaVA conversation .json, .jsonl with "
             "id/image/instruction/response, or a Hugging Face data set of conversational rows (a folder or "
             ".parquet)")


def _judge_options_help(config: str = "judging") -> type[click.Command]:
    """A command whose epilog lists its -d options (the judgement's, or all of BYORn's), built only
    when --help is shown: importing them pulls in torch and transformers, seconds that
    `byorn --help` should not pay."""

    class Command(click.Command):
        def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
            from byorn.defenses.byorn import ByornConfig
            from byorn.defenses.judging import JudgeConfig

            options = describe(JudgeConfig if config == "judging" else ByornConfig)
            self.epilog = "Options (-d KEY=VALUE):\n\n\b\n" + options
            super().format_epilog(ctx, formatter)

    return Command


def _fail(message: str) -> None:
    click.echo("error: " + inert(message, keep="\n"), err=True)  # byorn.text: the data's text stays text
    sys.exit(2)


SKIPPED_NAME = "skipped.jsonl"
on_bad_sample = click.option(
    "--on-bad-sample", type=click.Choice(["fail", "skip"]), default="fail", show_default=True,
    help="a bad record (malformed, missing field, undecodable or oversized image, overlong text, path outside "
         "the data root, text the model reads as a special token or longer than its context, ...): stop with its "
         "error, or skip it, count it and list it in skipped.jsonl")


def renamed(param: str, *old: str, multiple: bool = False):
    """Keep old option spellings working, hidden from --help, for one release: their value goes to
    `param` (the new option's parameter); repeated options add up."""
    dest = f"renamed_{param}"

    def decorate(command):
        @functools.wraps(command)
        def with_old_spelling(*args, **kwargs):
            value = kwargs.pop(dest)
            if value:
                kwargs[param] = (*kwargs[param], *value) if multiple else value
            return command(*args, **kwargs)

        return click.option(*old, dest, hidden=True, multiple=multiple, default=() if multiple else None,
                            help=f"old spelling of the option that sets {param}")(with_old_spelling)

    return decorate


def data_option(required: bool = False):
    """--data, the same on every command; DATA as a positional argument still works (the old spelling)."""
    def decorate(command):
        @functools.wraps(command)
        def with_positional(*args, **kwargs):
            positional = kwargs.pop("positional_data")
            if positional and kwargs["data"]:
                _fail(f"data given twice: --data {kwargs['data']} and {positional}")
            kwargs["data"] = kwargs["data"] or positional
            if required and not kwargs["data"]:
                _fail("--data is required")
            return command(*args, **kwargs)

        with_argument = click.argument("positional_data", required=False, metavar="")(with_positional)
        return click.option("--data", default=None if required else "shapes", show_default=not required,
                            help=DATA_HELP)(with_argument)

    return decorate


bf16 = click.option("--bf16", is_flag=True,
                    help="load the model's weights in bfloat16 (half the memory; GPUs that have it, slow on a CPU)")


def _loaded(model: str, *, bf16: bool, adapter: str | None = None):
    """The model for a command that only runs it (no training), in bfloat16 when asked."""
    import torch

    from byorn.models import load_vlm

    return load_vlm(model, adapter=adapter, dtype=torch.bfloat16 if bf16 else None)


warm_up_config = click.option(
    "--config", "config_path", type=click.Path(exists=True, dir_okay=False),
    help="the training config (YAML, as `byorn train --config`) the data is meant for: the warmed reference's "
         "short fine-tune uses its settings (default: `byorn train`'s defaults)")


image_folder = click.option(
    "--image-folder", type=click.Path(exists=True, file_okay=False),
    help="the folder a data file's image paths are relative to (LLaVA's --image_folder); default: the data "
         "file's own folder")


def _load_samples(data: str, *, n: int, seed: int, split: str, on_bad: str, report_dir: Path | None,
                  image_folder: str | None = None):
    """The samples of --data and how many bad records were skipped; those are counted on stderr
    and listed in report_dir."""
    from byorn.data import DataError
    from byorn.workflow import resolve_data

    skipped: list[str] | None = [] if on_bad == "skip" else None
    try:
        samples = resolve_data(data, n=n, seed=seed, split=split, skipped=skipped, image_folder=image_folder)
    except DataError as exc:
        _fail(f"{exc}\n(--on-bad-sample skip skips bad records and lists them)")
    except ValueError as exc:  # e.g. more samples asked than a split has
        _fail(str(exc))
    if skipped:
        click.echo(f"skipped {len(skipped)} bad record(s) of {data}; first: {skipped[0]}", err=True)
        if report_dir is not None:
            report_dir.mkdir(parents=True, exist_ok=True)
            write_jsonl(report_dir / SKIPPED_NAME, ({"error": e} for e in skipped))
            click.echo(f"the skipped records are listed in {report_dir / SKIPPED_NAME}", err=True)
    elif report_dir is not None:
        (report_dir / SKIPPED_NAME).unlink(missing_ok=True)  # an earlier run's list would mislead
    if not samples:
        _fail(f"{data}: no usable samples")
    return samples, len(skipped or ())


def _readable(vlm, samples: list, on_bad: str, report_dir: Path) -> tuple[list, int]:
    """The samples the model can read as given (no special-token text, none longer than its
    positions), checked before any work; the others stop the command, or with --on-bad-sample skip
    are left out, counted and listed in report_dir beside the loader's skipped records."""
    problems = vlm.unreadable(samples)
    if not problems:
        return samples, 0
    first = next(iter(problems.values()))
    if on_bad == "fail":
        _fail(f"{len(problems)} sample(s) the model cannot read as given; the first: {first}\n"
              "(--on-bad-sample skip leaves them out and lists them)")
    report_dir.mkdir(parents=True, exist_ok=True)
    for problem in problems.values():
        append_jsonl(report_dir / SKIPPED_NAME, {"error": problem})
    click.echo(f"skipped {len(problems)} sample(s) the model cannot read as given; first: {first}; listed in "
               f"{report_dir / SKIPPED_NAME}", err=True)
    return [s for i, s in enumerate(samples) if i not in problems], len(problems)


# what `byorn clean` and `byorn poison` write in OUT for each layout (byorn.datasets' savers)
LAYOUT_FILES = {"llava": "data.json", "jsonl": "data.jsonl", "parquet": "data.parquet", "rows": "data"}


def _refuse_writing_over(data: str, samples: list, out_dir: str, written_name: str) -> None:
    """Stop a command that writes a data set (clean, poison: OUT/`written_name` and OUT/images/)
    before it would write over what it reads: the input's data file or any of its images, which the
    rewritten set would replace. A built-in world (shapes) has no file to overwrite."""
    out = Path(out_dir).resolve()
    written = out / written_name
    source = Path(data).resolve()
    built_in = data.partition(":")[0] in WORLDS
    if not built_in and (source == written or any(f in (written, out / "images") for f in source.parents)):
        _fail(f"--out {out_dir}: the new data set would be written over {data}; write it to another folder")
    images = (s.image.resolve() for s in samples if isinstance(s.image, Path))
    if inside := next((image for image in images if out / "images" in image.parents), None):
        _fail(f"--out {out_dir}: the new data set's images would be written over the input's ({inside}); write it to "
              "another folder")


def _options_and_samples(config_class: type, options: tuple[str, ...], command: str, data: str, n: int, on_bad: str,
                         out_dir: str, image_folder: str | None) -> tuple:
    """A judging command's -o options as its config (checked before any data is read) and its samples."""
    from byorn.config import from_dict

    try:
        config = from_dict(config_class, parse_overrides(options, "--option"), f"{command} options")
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))
    mark_before_loading(Path(out_dir), command, data, [SKIPPED_NAME])  # byorn.outdir: the run is unfinished
    samples, _ = _load_samples(data, n=n, seed=0, split="train", on_bad=on_bad, report_dir=Path(out_dir),
                               image_folder=image_folder)
    return config, samples


class _EchoHandler(logging.Handler):
    """byorn's own log lines (a defense's "flagged N of M samples") on whatever stderr is now."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"byorn: {inert(self.format(record))}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="byorn", message="%(prog)s %(version)s")
def main() -> None:
    """byorn: fine-tune vision-language models on untrusted data without learning a backdoor."""
    keep_freed_memory()  # a fresh process scores and fine-tunes faster: byorn/allocator.py
    logger = logging.getLogger("byorn")
    if not any(isinstance(h, _EchoHandler) for h in logger.handlers):
        logger.addHandler(_EchoHandler())
        logger.setLevel(logging.INFO)


@main.command(epilog="Config keys (YAML file or KEY=VALUE overrides):\n\n\b\n" + describe(PretrainConfig))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="model directory to write")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="YAML config")
@click.option("--world", type=click.Choice(list(WORLDS)),
              help="shapes: reproduce the shipped byorn-tiny; flickr8k: make byorn-tiny-flickr (same as world=...)")
@click.option("--data", "data_root", type=click.Path(exists=True, file_okay=False),
              help="--world flickr8k: the Flickr8k folder (same as data=...)")
@click.argument("overrides", nargs=-1)
def pretrain(out_dir: str, config_path: str | None, world: str | None, data_root: str | None,
             overrides: tuple[str, ...]) -> None:
    """Pretrain a tiny LLaVA from scratch: byorn-tiny on the shapes world (reproduces the shipped
    checkpoint), or byorn-tiny-flickr on Flickr8k's train split."""
    from byorn.pretrain import pretrain as run_pretrain

    flags = [f"world={world}"] * bool(world) + [f"data={data_root}"] * bool(data_root)
    try:
        config = load_config(PretrainConfig, config_path, (*overrides, *flags))
        path = run_pretrain(out_dir, config)
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))
    click.echo(f"saved {path}")


@main.command(name="pretrain-lm")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="model directory to write")
@click.argument("overrides", nargs=-1)
def pretrain_lm(out_dir: str, overrides: tuple[str, ...]) -> None:
    """Pretrain byorn-tiny-lm, the shapes world's text language model that ONION uses with
    byorn-tiny (reproduces the shipped one). OVERRIDES: KEY=VALUE, keys: steps, batch_size,
    learning_rate, hidden, layers, seed."""
    from byorn.models.tiny_lm import TextLmConfig, pretrain_text_lm

    try:
        config = load_config(TextLmConfig, None, overrides)
    except ConfigError as exc:
        _fail(str(exc))
    click.echo(f"saved {pretrain_text_lm(out_dir, config)}")


@main.command()
@click.option("--model", default="byorn-tiny", show_default=True,
              help="model directory, 'byorn-tiny' or 'byorn-tiny-flickr'")
@click.option("--n", default=500, show_default=True, help="fresh scenes (or test photos) per measurement")
@click.option("--seed", default=0, show_default=True, help="seed of the fresh scenes")
@click.option("--flickr8k", "flickr_root", type=click.Path(exists=True, file_okay=False),
              help="measure a Flickr8k-pretrained model instead: CIDEr and BLEU-4 on this folder's test split")
@click.option("--out", "json_path", type=click.Path(dir_okay=False), help="also write the figures here (JSON)")
@renamed("json_path", "--json")
def quality(model: str, n: int, seed: int, flickr_root: str | None, json_path: str | None) -> None:
    """Measure byorn-tiny's quality bar (caption exact match, VQA accuracy, held-out-style NLL), or
    with --flickr8k a Flickr8k model's captioning quality."""
    from byorn.evaluate import flickr_caption_quality, tiny_quality
    from byorn.models import load_vlm
    from byorn.scoring import checkpoint_label

    try:
        vlm = load_vlm(model)
        result = flickr_caption_quality(vlm, flickr_root, n=n) if flickr_root else tiny_quality(vlm, n=n, seed=seed)
        result["model"] = checkpoint_label(Path(model).name, vlm)  # which weights the figures describe
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    for key, value in result.items():
        click.echo(f"{key:>16}  {value:.4f}" if isinstance(value, float) else f"{key:>16}  {value}")
    if json_path:
        atomic_write_text(Path(json_path), json.dumps(result, indent=2) + "\n")


@main.command(epilog="Config keys (YAML file or KEY=VALUE overrides):\n\n\b\n" + describe(TrainConfig))
@click.option("--data", default="shapes", show_default=True, help=DATA_HELP)
@click.option("--n", "n_train", default=1000, show_default=True,
              help="samples for --data shapes or flickr8k:FOLDER")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="run directory")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="YAML config")
@click.option("--defense", default="none", show_default=True,
              help="none, byorn, or a baseline: onion, bye, tcap, score_drop, random_drop, reference_ratio; "
                   "oracle (drops the poison a data set marks as such) (`byorn list defenses`)")
@click.option("--defense-option", "-d", "defense_options", multiple=True, metavar="KEY=VALUE",
              help="defense option, e.g. -d rule=quantile -d quantile=0.9 (see `byorn scan --help`)")
@on_bad_sample
@image_folder
@click.option("--resume", is_flag=True,
              help="continue the run in --out from its newest checkpoint (needs save_steps > 0); give the "
                   "same data, config and defense as the first time")
@click.argument("overrides", nargs=-1)
@renamed("n_train", "--n-train")
def train(data: str, n_train: int, out_dir: str, config_path: str | None, defense: str,
          defense_options: tuple[str, ...], on_bad_sample: str, image_folder: str | None, resume: bool,
          overrides: tuple[str, ...]) -> None:
    """Fine-tune a VLM (LoRA by default), optionally defended; writes config.yaml, train_log.jsonl,
    the adapter and, with --defense byorn, audit.jsonl, the cached scores and review.html (a page
    to review what was flagged and what replaced it)."""
    import torch

    from byorn.data import DataError
    from byorn.defenses import Defense, build_defense
    from byorn.distributed import is_main, shut_down
    from byorn.models import load_vlm
    from byorn.review import write_run_review
    from byorn.train import (
        CHECKPOINTS,
        check_lora_target,
        check_reporting,
        checkpoint_step,
        finetune,
        latest_checkpoint,
        training_arguments,
    )

    try:
        config = load_config(TrainConfig, config_path, overrides)
        hook = build_defense(defense, **parse_overrides(defense_options, "--defense-option"))
        # what the Trainer would refuse only after the defense's work: a batch that does not split, a tracker
        check_reporting(training_arguments(config, Path(out_dir) / CHECKPOINTS))
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))
    checkpoint = None
    if resume:
        checkpoint = latest_checkpoint(out_dir)
        if checkpoint is None:
            _fail(f"{out_dir}: no complete checkpoint to resume from (train with save_steps > 0 first)")
        _check_same_run(Path(out_dir), config, hook)
        click.echo(f"resuming from {checkpoint}")
    samples, n_skipped = _load_samples(data, n=n_train, seed=config.seed, split="train", on_bad=on_bad_sample,
                                       image_folder=image_folder,
                                       report_dir=Path(out_dir))
    # Frozen base weights under LoRA need no float32 master copy: bf16 halves their memory.
    dtype = torch.bfloat16 if config.bf16 and config.lora else None
    try:
        vlm = load_vlm(config.model, trust_remote_code=config.trust_remote_code, dtype=dtype)
        check_lora_target(vlm, config)  # here, not after the defense's work
    except (OSError, ValueError) as exc:  # no such model; a lora_target that adapts nothing
        _fail(str(exc))
    # before any work: training would meet a sample it cannot read only when its batch comes
    samples, unreadable = _readable(vlm, samples, on_bad_sample, Path(out_dir))
    n_skipped += unreadable
    _same_data_as_before(Path(out_dir), data, samples, image_folder, resuming=checkpoint is not None)
    try:
        hook.prepare(vlm, samples, out_dir, train=config, resume_step=checkpoint and checkpoint_step(checkpoint))
        training_set = hook.training_set(samples)
    except ValueError as exc:  # e.g. the oracle on data without poison labels, random_drop count > data
        _fail(f"--defense {defense}: {exc}")
    if type(hook).deployed is not Defense.deployed:
        click.echo(f"note: {defense} acts when the model answers (byorn bench, Defense.deployed); the model "
                   f"saved here is fine-tuned without it", err=True)
    try:
        finetune(vlm, training_set, config, out_dir, hook=hook, resume_from=checkpoint)
    except (DataError, ConfigError) as exc:  # a sample longer than the model's context; a batch that does not split
        _fail(str(exc))
    if is_main() and (page := write_run_review(out_dir, samples, hook)) is not None:
        click.echo(f"review what {defense} flagged: {page}")
    shut_down()
    if not is_main():
        return  # the main process reports
    click.echo(f"run written to {out_dir}")
    if n_skipped:  # repeated at the end: the note at load time has long scrolled away
        click.echo(f"trained without {n_skipped} bad record(s), listed in {Path(out_dir) / SKIPPED_NAME}", err=True)


def _check_same_run(run_dir: Path, config: TrainConfig, defense) -> None:
    """A resumed run must be the run that was interrupted: same training config and defense."""
    import yaml

    # A training option added since the run started counts as having had its default then. A defense
    # option does not: a new default may change what the defense does (rejudge), so a run whose
    # defense.yaml lacks it is resumed only with the byorn that started it.
    for name, now, defaults in (("config.yaml", dataclasses.asdict(config), dataclasses.asdict(TrainConfig())),
                                ("defense.yaml", defense.resolved(), {})):
        path = run_dir / name
        before = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
        before = {**defaults, **before} if before is not None else None
        if before is not None and before != now:
            changed = sorted(k for k in {*before, *now} if before.get(k) != now.get(k))
            _fail(f"{path}: the run was started with other settings ({', '.join(changed)}); resume it with the "
                  "same ones")


DATA_RECORD = "data.yaml"  # which samples a run trains on: checked when it is resumed


def _same_data_as_before(run_dir: Path, data: str, samples: list, image_folder: str | None, resuming: bool) -> None:
    """Record which samples a fresh run trains on; stop a resumed run given others (it would go on
    from a checkpoint of one data set on another)."""
    import yaml

    from byorn.distributed import is_main
    from byorn.train import data_key, discard_checkpoints

    source = Path(data)
    root = Path(image_folder) if image_folder else source if source.is_dir() else source.parent
    record = {"data": data, "samples": len(samples), "sha256": data_key(samples, root)}
    path = run_dir / DATA_RECORD
    before = read_yaml(path.read_text(encoding="utf-8")) if resuming and path.exists() else None
    if isinstance(before, dict) and before.get("sha256") != record["sha256"]:
        _fail(f"{path}: the run was started on other samples ({before.get('data')}, {before.get('samples')} "
              f"samples; now {data}, {len(samples)}); resume it with the same data")
    if not resuming and is_main():
        discard_checkpoints(run_dir)  # before the record of this run's samples: they are another run's
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, yaml.safe_dump(record, sort_keys=False))


@main.command(cls=_judge_options_help())
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
@data_option(required=True)
@renamed("options", "--option", "-o", multiple=True)
def scan(data: str, model: str | None, n_samples: int, out_dir: str, options: tuple[str, ...], top: int,
         config_path: str | None, on_bad_sample: str, image_folder: str | None, bf16: bool) -> None:
    """Rank a data set (--data: a data file, or 'shapes') by response implausibility, without training."""
    from byorn.defenses.judging import JudgeConfig
    from byorn.scan import scan as run_scan

    config, samples = _options_and_samples(JudgeConfig, options, "scan", data, n_samples, on_bad_sample, out_dir,
                                           image_folder)
    try:
        train = load_config(TrainConfig, config_path, ())
        vlm = _loaded(model or train.model, bf16=bf16)
    except (OSError, ValueError) as exc:  # a bad config; no such model
        _fail(str(exc))
    samples, _ = _readable(vlm, samples, on_bad_sample, Path(out_dir))
    try:
        rows = run_scan(vlm, samples, config, out_dir, train)
    except ValueError as exc:  # a sample the model cannot read (DataError); options the data does not fit
        _fail(str(exc))
    flagged = sum(r.flagged for r in rows)
    click.echo(f"{flagged} of {len(rows)} flagged ({config.rule}); most implausible first:")
    for row in rows[:top]:
        mark = "FLAG" if row.flagged else "    "
        click.echo(f"{row.rank:>5} {mark} {row.score:7.3f}  {inert(row.id)}  {row.response[:70]!r}")
    click.echo(f"written to {out_dir}/scan.jsonl, scan.csv, scores.png; review what was flagged: "
               f"{out_dir}/review.html")


@main.command(cls=_judge_options_help("byorn"))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="writes the cleaned set in DATA's layout (data.json for LLaVA JSON and the built-in worlds, "
                   "data.jsonl for JSONL, a data/ folder or data.parquet for a Hugging Face data set) with "
                   "audit.jsonl and review.html")
@click.option("--model", help="the pretrained model that judges and answers; default: the --config's model, "
                              "byorn-tiny without one")
@click.option("--n", "n_samples", default=1000, show_default=True,
              help="samples when DATA is 'shapes' or flickr8k:FOLDER")
@click.option("--drop", is_flag=True, help="drop the flagged samples instead of replacing their responses")
@warm_up_config
@click.option("--defense-option", "-d", "options", multiple=True, metavar="KEY=VALUE",
              help="scoring/threshold option, as `byorn train -d` takes it")
@on_bad_sample
@image_folder
@bf16
@data_option(required=True)
@renamed("options", "--option", "-o", multiple=True)
def clean(data: str, out_dir: str, model: str | None, n_samples: int, drop: bool, config_path: str | None,
          options: tuple[str, ...], on_bad_sample: str, image_folder: str | None, bf16: bool) -> None:
    """BYORn before training, for any trainer: judge DATA as BYORn does, replace each
    flagged response with the answer BYORn trains on (or drop the sample), and write the set back in
    DATA's layout. With the same --config, training on the output is what
    `byorn train --defense byorn` trains on."""
    from byorn.clean import clean as run_clean
    from byorn.defenses.byorn import ByornConfig

    config, samples = _options_and_samples(ByornConfig, options, "clean", data, n_samples, on_bad_sample, out_dir,
                                           image_folder)
    layout = ("jsonl" if data.lower().endswith(".jsonl") else "parquet" if data.lower().endswith(".parquet")
              else "rows" if Path(data).is_dir() else "llava")
    _refuse_writing_over(data, samples, out_dir, LAYOUT_FILES[layout])
    try:
        train = load_config(TrainConfig, config_path, ())
        vlm = _loaded(model or train.model, bf16=bf16)
    except (OSError, ValueError) as exc:  # a bad config; no such model
        _fail(str(exc))
    samples, _ = _readable(vlm, samples, on_bad_sample, Path(out_dir))
    try:
        cleaned = run_clean(vlm, samples, config, out_dir, layout=layout, drop=drop, train=train)
    except ValueError as exc:  # a sample the model cannot read (DataError); options the data does not fit
        _fail(str(exc))
    action = "dropped" if drop else "replaced"
    click.echo(f"{len(cleaned.flagged)} of {cleaned.n_in} flagged and {action}; {cleaned.n_out} samples written to "
               f"{cleaned.data}; audit.jsonl and review.html beside it")


@main.command(name="eval")
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
    from byorn.evaluate import evaluate_clean, evaluate_triggered
    from byorn.metrics import parse_target_rule

    if out_path:  # made now: a missing folder found after the evaluation would cost the whole run
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    if (triggered is None) != (target_rule is None):
        _fail("--triggered and --target-rule go together: the file of triggered inputs, and what counts as a hit")
    try:
        rule = parse_target_rule(target_rule) if target_rule else None
    except ValueError as exc:
        _fail(f"--target-rule {target_rule!r}: {exc}")
    samples, _ = _load_samples(data, n=n_test, seed=seed, split="test", on_bad=on_bad_sample,
                               report_dir=Path(out_path).parent if out_path else None, image_folder=image_folder)
    attacked = _load_samples(triggered, n=0, seed=seed, split="test", on_bad=on_bad_sample, report_dir=None,
                             image_folder=image_folder)[0] if triggered else []
    try:
        vlm = _loaded(model, bf16=bf16, adapter=adapter)
    except (OSError, ValueError) as exc:  # no such model; a folder that is not an adapter
        _fail(str(exc))
    result = evaluate_clean(vlm, samples)
    if rule is not None:
        result.update(evaluate_triggered(vlm, attacked, rule))
    for key, value in result.items():
        click.echo(f"{key:>16}  {value:.4f}" if isinstance(value, float) else f"{key:>16}  {value}")
    if out_path:
        # JSON has no NaN: an ASR over no counted input is null there
        figures = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in result.items()}
        atomic_write_text(Path(out_path), json.dumps(figures, indent=2) + "\n")


@main.command()
@click.option("--attack", "trigger", required=True, help="trigger name (see `byorn list attacks`)")
@click.option("--target", default="fixed", show_default=True, help="target modifier name")
@click.option("--attack-option", "-a", "options", multiple=True, metavar="KEY=VALUE",
              help="attack option, e.g. -a size=0.2 -a response='I cannot help.' (repeatable)")
@click.option("--rate", default=0.1, show_default=True, help="share of samples poisoned: round(N * rate)")
@click.option("--seed", default=0, show_default=True, help="seed for the choice of poisoned samples")
@click.option("--clean-label", is_flag=True, help="poison only samples whose response already fits the target")
@click.option("--data", default="shapes", show_default=True, help=DATA_HELP)
@click.option("--n", "n_samples", default=1000, show_default=True,
              help="samples for --data shapes or flickr8k:FOLDER")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="folder to write")
@click.option("--model", "reference", default="byorn-tiny", show_default=True,
              help="the pretrained model a white-box attack (whitebox_injection, shadowcast) works with")
@on_bad_sample
@image_folder
@renamed("options", "--option", "-o", multiple=True)
@renamed("data", "--in")
@renamed("reference", "--reference")
def poison(trigger: str, target: str, options: tuple[str, ...], rate: float, seed: int, clean_label: bool,
           data: str, n_samples: int, out_dir: str, reference: str, on_bad_sample: str,
           image_folder: str | None) -> None:
    """Write a poisoned copy of a data set (LLaVA JSON + images) and its poison_manifest.jsonl."""
    import yaml

    from byorn.attacks import build_attack
    from byorn.attacks.image_triggers import ReferenceAwareTrigger
    from byorn.attacks.poison import MANIFEST_NAME, write_manifest
    from byorn.attacks.poison import poison as run_poison
    from byorn.attacks.targets import ReferenceAwareTarget
    from byorn.data import DataError, conversation_of
    from byorn.datasets import save_llava_json

    if not 0.0 <= rate <= 1.0:
        _fail(f"--rate {rate}: must be between 0 and 1")
    try:
        attack_options = parse_overrides(options, "--option")
    except ConfigError as exc:
        _fail(str(exc))
    clean, _ = _load_samples(data, n=n_samples, seed=seed, split="train", on_bad=on_bad_sample,
                             report_dir=Path(out_dir), image_folder=image_folder)
    _refuse_writing_over(data, clean, out_dir, LAYOUT_FILES["llava"])
    try:
        attack = build_attack(trigger, target, **attack_options)
        if "image" in attack.trigger.modality and (turn := next((s for s in clean if conversation_of(s)), None)):
            _fail(f"{attack.name}: sample {turn.id!r} is one turn of a conversation, whose turns share one image: an "
                  "image trigger needs single-turn records (the poisoned copy is LLaVA JSON, one image a record)")
        model = None
        if isinstance(attack.target, ReferenceAwareTarget) or isinstance(attack.trigger, ReferenceAwareTrigger):
            from byorn.models import load_vlm

            model = load_vlm(reference)
        samples, manifest = run_poison(clean, attack, rate, seed, clean_label=clean_label, reference=model)
    except ValueError as exc:
        _fail(str(exc))
    out = Path(out_dir)
    try:
        data_path = save_llava_json(samples, out)
    except DataError as exc:
        _fail(str(exc))
    write_manifest(manifest, out / MANIFEST_NAME)
    resolved = {"attack": trigger, "target": target, "options": attack_options, "rate": rate, "seed": seed,
                "clean_label": clean_label, "data": data, "n": len(samples),
                "reference": reference if model is not None else None}
    atomic_write_text(out / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    poisoned = sum(not r.negative for r in manifest)
    click.echo(f"{attack.name}: {poisoned} of {len(samples)} samples poisoned, "
               f"{len(manifest) - poisoned} negatives -> {data_path}")


@main.group(name="list")
def list_group() -> None:
    """List registered components."""


@list_group.command(name="attacks")
def list_attacks_command() -> None:
    """Trigger and target-modifier names with one-line help."""
    from byorn.attacks import list_attacks

    attacks = list_attacks()
    width = max(len(name) for name, _ in attacks) + 2  # a column wide enough for every name
    for name, help_text in attacks:
        click.echo(f"{name:<{width}}{help_text}")


@list_group.command(name="defenses")
def list_defenses_command() -> None:
    """Defense names with one-line help and their options (-d KEY=VALUE in train, options in a grid)."""
    from byorn.defenses import DEFENSES

    width = max(map(len, DEFENSES)) + 2  # a column wide enough for every name
    for name, cls in sorted(DEFENSES.items()):
        click.echo(f"{name:<{width}}{cls.__doc__.splitlines()[0]}")
        if cls.config_class is not None:
            click.echo(describe(cls.config_class))


def _parse_shard(value: str) -> tuple[int, int]:
    index, _, count = value.partition("/")
    if not (index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise click.BadParameter(f"{value!r}: expected I/N with 0 <= I < N, e.g. 0/2")
    return int(index), int(count)


@main.command()
@click.argument("config_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="writes OUT/results.jsonl and OUT/runs/ (one run directory per cell)")
@click.option("--results", "results_path", type=click.Path(dir_okay=False),
              help="JSONL file instead of OUT/results.jsonl; finished cells in it are skipped (resumable)")
@click.option("--runs", "runs_dir", type=click.Path(file_okay=False), help="run directories instead of OUT/runs")
@click.option("--shard", default="0/1", show_default=True, callback=lambda _c, _p, v: _parse_shard(v),
              help="I/N: run only every N-th cell from the I-th, so N processes (one core each) share a grid "
                   "and one results file")
def bench(config_path: str, out_dir: str | None, results_path: str | None, runs_dir: str | None,
          shard: tuple[int, int]) -> None:
    """Run a benchmark grid (attacks x defenses x poison rates x seeds) from a YAML config.
    Resumable: rerun the same command and finished cells are skipped."""
    from byorn.bench import run_grid

    if out_dir is None and (results_path is None or runs_dir is None):
        _fail("give --out DIR, or both --results FILE and --runs DIR")
    results_path = results_path or str(Path(out_dir) / "results.jsonl")
    runs_dir = runs_dir or str(Path(out_dir) / "runs")
    try:
        rows = run_grid(config_path, results_path, runs_dir, shard=shard)
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))
    click.echo(f"{len(rows)} new cells written to {results_path}")


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--results", "results_path", type=click.Path(dir_okay=False, exists=True),
              help="results file (default OUT_DIR/results.jsonl)")
def report(out_dir: str, results_path: str | None) -> None:
    """Write OUT_DIR/report.md (tables, mean ± std over seeds) and OUT_DIR/plots/*.png: score
    histograms, ASR per defense, clean score vs ASR, cost relative to no defense."""
    from byorn.bench import read_results
    from byorn.report import write_report

    path = results_path or Path(out_dir) / "results.jsonl"
    rows = read_results(path)
    if not rows:
        _fail(f"no results in {path}")
    cell = ("attack", "defense", "poison_rate", "seed")
    if bad := next(((i, k) for i, row in enumerate(rows, 1) for k in cell if k not in row), None):
        _fail(f"{path}: result {bad[0]} has no {bad[1]!r}: not a byorn bench results file (one line per cell)")
    click.echo(f"written {write_report(rows, out_dir)}")


@main.command()
@click.option("--out", "out_dir", default="runs/demo", show_default=True, type=click.Path(file_okay=False),
              help="folder of the three runs (models, logs, BYORn's audit and review page)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write {'rows': [...]} here")
@click.option("--seed", default=0, show_default=True, help="seed of the data, the poisoning and the training")
def demo(out_dir: str, json_path: str | None, seed: int) -> None:
    """Poison the built-in task (multimodal trigger, 10 %), fine-tune byorn-tiny without defense,
    with BYORn and on clean data only; print ASR, clean scene F1, flagging precision/recall, time."""
    from byorn.workflow import run_demo

    rows = run_demo(Path(out_dir), seed=seed)
    click.echo(f"\nmultimodal trigger (patch + 'cf'), fixed target, 10 % poisoned; byorn-tiny, full fine-tuning; "
               f"{rows[0]['n_train']} training samples")
    header = f"{'':<32}{'ASR':>7}{'scene F1':>10}{'exact':>7}{'1-mod ASR':>10}{'flag P':>8}{'flag R':>8}{'wall s':>8}"
    click.echo(header)
    for row in rows:
        flags = "".join(f"{row[k]:>8.2f}" if k in row else f"{'-':>8}" for k in ("detect_precision", "detect_recall"))
        click.echo(f"{row['name']:<32}{row['asr']:>7.2f}{row['clean_score']:>10.3f}{row['scene_exact']:>7.2f}"
                   f"{row['one_modality_asr']:>10.2f}{flags}{row['wall_s']:>8.1f}")
    if json_path:
        atomic_write_text(Path(json_path), json.dumps({"rows": rows}, indent=2) + "\n")
        click.echo(f"wrote {json_path}")


if __name__ == "__main__":
    main()
