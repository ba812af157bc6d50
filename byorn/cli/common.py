"""What the commands share: the data options, failing with a message, loading and checking samples."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from byorn.fileio import append_jsonl, write_jsonl
from byorn.text import inert
from byorn.worlds import WORLDS

if TYPE_CHECKING:  # the models pull in torch and transformers, seconds that `byorn --help` should not pay
    from byorn.data import Sample
    from byorn.models.hf import VLM

Decorator = Callable[[Callable], Callable]

DATA_HELP = ("'shapes' for the built-in downstream task (a fresh seeded split), 'flickr8k:FOLDER' for the "
             "Flickr8k archive-note task on real photos, or a data file: LLaVA conversation .json, .jsonl with "
             "id/image/instruction/response, or a Hugging Face data set of conversational rows (a folder or "
             ".parquet)")


def fail(message: str) -> NoReturn:
    """Stop the command with `message` on stderr and exit status 2 (a usage error, as click's own)."""
    click.echo("error: " + inert(message, keep="\n"), err=True)  # byorn.text: the data's text stays text
    sys.exit(2)


SKIPPED_NAME = "skipped.jsonl"
on_bad_sample = click.option(
    "--on-bad-sample", type=click.Choice(["fail", "skip"]), default="fail", show_default=True,
    help="a bad record (malformed, missing field, undecodable or oversized image, overlong text, path outside "
         "the data root, text the model reads as a special token or longer than its context, ...): stop with its "
         "error, or skip it, count it and list it in skipped.jsonl")


def renamed(param: str, *old: str, multiple: bool = False) -> Decorator:
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


def check_data_exists(data: str | None) -> None:
    """Stop on a --data file or folder that does not exist (a built-in world needs none): a
    command checks it first, before any slow import."""
    if data and data.partition(":")[0] not in WORLDS and not Path(data).exists():
        fail(f"--data {data}: no such file or folder")


def data_option(required: bool = False, overrides: bool = False) -> Decorator:
    """--data, the same on every command; DATA as a positional argument still works (the old spelling).
    overrides: the command also takes KEY=VALUE training settings as arguments (`overrides`)."""
    def decorate(command):
        @functools.wraps(command)
        def with_positional(*args, **kwargs):
            given = kwargs.pop("positional")
            settings = tuple(a for a in given if "=" in a)
            positional = [a for a in given if "=" not in a]
            if settings and not overrides:
                fail(f"unexpected argument {settings[0]!r}: this command takes no KEY=VALUE settings")
            named = [f"--data {kwargs['data']}"] if kwargs["data"] else []
            if len(named + positional) > 1:
                fail(f"data given twice: {' and '.join(named + positional)}")
            kwargs["data"] = kwargs["data"] or (positional[0] if positional else None)
            if required and not kwargs["data"]:
                fail("--data is required: a data file or data set folder, or a built-in task (shapes, "
                     "flickr8k:FOLDER)")
            check_data_exists(kwargs["data"])
            if overrides:
                kwargs["overrides"] = settings
            return command(*args, **kwargs)

        metavar = "[KEY=VALUE]..." if overrides else ""
        with_argument = click.argument("positional", nargs=-1, metavar=metavar)(with_positional)
        return click.option("--data", default=None if required else "shapes", show_default=not required,
                            help=DATA_HELP)(with_argument)

    return decorate


bf16 = click.option("--bf16", is_flag=True,
                    help="load the model's weights in bfloat16 (half the memory; GPUs that have it, slow on a CPU)")


def loaded_model(model: str, *, bf16: bool, adapter: str | None = None) -> VLM:
    """The model for a command that only runs it (no training), in bfloat16 when asked."""
    import torch

    from byorn.models import load_vlm

    return load_vlm(model, adapter=adapter, dtype=torch.bfloat16 if bf16 else None)


image_folder = click.option(
    "--image-folder", type=click.Path(exists=True, file_okay=False),
    help="the folder a data file's image paths are relative to (LLaVA's --image_folder); default: the data "
         "file's own folder")


def load_samples(data: str, *, n: int, seed: int, split: str, on_bad: str, report_dir: Path | None,
                 image_folder: str | None = None) -> tuple[list[Sample], int]:
    """The samples of --data and how many bad records were skipped; those are counted on stderr
    and listed in report_dir."""
    from byorn.data import DataError
    from byorn.workflow import resolve_data

    skipped: list[str] | None = [] if on_bad == "skip" else None
    try:
        samples = resolve_data(data, n=n, seed=seed, split=split, skipped=skipped, image_folder=image_folder)
    except DataError as exc:  # the hint only where skipping would help: a bad record, not a bad file
        fail(f"{exc}\n(--on-bad-sample skip skips bad records and lists them)" if exc.in_record else str(exc))
    except ValueError as exc:  # e.g. more samples asked than a split has
        fail(str(exc))
    if skipped:
        click.echo(f"skipped {len(skipped)} bad record(s) of {data}; first: {skipped[0]}", err=True)
        if report_dir is not None:
            report_dir.mkdir(parents=True, exist_ok=True)
            write_jsonl(report_dir / SKIPPED_NAME, ({"error": e} for e in skipped))
            click.echo(f"the skipped records are listed in {report_dir / SKIPPED_NAME}", err=True)
    elif report_dir is not None:
        (report_dir / SKIPPED_NAME).unlink(missing_ok=True)  # an earlier run's list would mislead
    if not samples:
        fail(f"{data}: no usable samples")
    return samples, len(skipped or ())


def readable(vlm: VLM, samples: list[Sample], on_bad: str, report_dir: Path) -> tuple[list[Sample], int]:
    """The samples the model can read as given (no special-token text, none longer than its
    positions), checked before any work; the others stop the command, or with --on-bad-sample skip
    are left out, counted and listed in report_dir beside the loader's skipped records."""
    problems = vlm.unreadable(samples)
    if not problems:
        return samples, 0
    first = next(iter(problems.values()))
    if on_bad == "fail":
        fail(f"{len(problems)} sample(s) the model cannot read as given; the first: {first}\n"
             "(--on-bad-sample skip leaves them out and lists them)")
    report_dir.mkdir(parents=True, exist_ok=True)
    for problem in problems.values():
        append_jsonl(report_dir / SKIPPED_NAME, {"error": problem})
    click.echo(f"skipped {len(problems)} sample(s) the model cannot read as given; first: {first}; listed in "
               f"{report_dir / SKIPPED_NAME}", err=True)
    return [s for i, s in enumerate(samples) if i not in problems], len(problems)


def refuse_writing_over(data: str, samples: list[Sample], out_dir: str, written_name: str) -> None:
    """Stop a command that writes a data set (clean, poison: OUT/`written_name` and OUT/images/)
    before it would write over what it reads: the input's data file or any of its images, which the
    rewritten set would replace. A built-in world (shapes) has no file to overwrite."""
    out = Path(out_dir).resolve()
    written = out / written_name
    source = Path(data).resolve()
    built_in = data.partition(":")[0] in WORLDS
    if not built_in and (source == written or any(f in (written, out / "images") for f in source.parents)):
        fail(f"--out {out_dir}: the new data set would be written over {data}; write it to another folder")
    images = (s.image.resolve() for s in samples if isinstance(s.image, Path))
    if inside := next((image for image in images if out / "images" in image.parents), None):
        fail(f"--out {out_dir}: the new data set's images would be written over the input's ({inside}); write it to "
             "another folder")

