"""The `byorn` command: one module per command group, each command a thin front end over a
library function; what they share is in `common`."""

from __future__ import annotations

import logging
import os

import click

from byorn.allocator import keep_freed_memory
from byorn.cli import bench, data, demo, evaluate, info, judge, pretrain, train
from byorn.text import inert

# No run-time downloads: models and data come from local directories or our own code.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class _EchoHandler(logging.Handler):
    """byorn's own log lines (a defense's "flagged N of M samples") on whatever stderr is now."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"byorn: {inert(self.format(record))}", err=True)


COMMANDS = [pretrain.pretrain, pretrain.pretrain_lm, info.quality, info.list_group, train.train, judge.scan,
            judge.clean, evaluate.evaluate, data.poison, bench.bench, bench.report, demo.demo]


@click.group(commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="byorn", message="%(prog)s %(version)s")
def main() -> None:
    """byorn: fine-tune vision-language models on untrusted data without learning a backdoor."""
    keep_freed_memory()  # a fresh process scores and fine-tunes faster: byorn/allocator.py
    logger = logging.getLogger("byorn")
    if not any(isinstance(h, _EchoHandler) for h in logger.handlers):
        logger.addHandler(_EchoHandler())
        logger.setLevel(logging.INFO)

