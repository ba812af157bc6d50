"""`byorn pretrain` and `byorn pretrain-lm`: the tiny models from scratch."""

from __future__ import annotations

import click

from byorn.cli.common import fail
from byorn.config import ConfigError, PretrainConfig, describe, load_config
from byorn.worlds import WORLDS


@click.command(epilog="Config keys (YAML file or KEY=VALUE overrides):\n\n\b\n" + describe(PretrainConfig))
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
        fail(str(exc))
    click.echo(f"saved {path}")


@click.command(name="pretrain-lm")
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
        fail(str(exc))
    click.echo(f"saved {pretrain_text_lm(out_dir, config)}")


