"""`byorn bench` and `byorn report`: a benchmark grid and its report."""

from __future__ import annotations

from pathlib import Path

import click

from byorn.cli.common import fail
from byorn.config import ConfigError


def _parse_shard(value: str) -> tuple[int, int]:
    index, _, count = value.partition("/")
    if not (index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise click.BadParameter(f"{value!r}: expected I/N with 0 <= I < N, e.g. 0/2")
    return int(index), int(count)


@click.command()
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
        fail("give --out DIR, or both --results FILE and --runs DIR")
    results_path = results_path or str(Path(out_dir) / "results.jsonl")
    runs_dir = runs_dir or str(Path(out_dir) / "runs")
    try:
        rows = run_grid(config_path, results_path, runs_dir, shard=shard)
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    click.echo(f"{len(rows)} new cells written to {results_path}")


@click.command()
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
        fail(f"no results in {path}")
    cell = ("attack", "defense", "poison_rate", "seed")
    if bad := next(((i, k) for i, row in enumerate(rows, 1) for k in cell if k not in row), None):
        fail(f"{path}: result {bad[0]} has no {bad[1]!r}: not a byorn bench results file (one line per cell)")
    click.echo(f"written {write_report(rows, out_dir)}")


