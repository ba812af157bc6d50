"""`byorn quality` and `byorn list`: what a model measures, what byorn has."""

from __future__ import annotations

import json
from pathlib import Path

import click

from byorn.cli.common import fail, renamed
from byorn.config import describe
from byorn.fileio import atomic_write_text


@click.command()
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
        fail(str(exc))
    for key, value in result.items():
        click.echo(f"{key:>16}  {value:.4f}" if isinstance(value, float) else f"{key:>16}  {value}")
    if json_path:
        atomic_write_text(Path(json_path), json.dumps(result, indent=2) + "\n")


@click.group(name="list")
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


