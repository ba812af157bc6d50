"""`byorn demo`: the built-in poisoned task without defense, with BYORn and clean."""

from __future__ import annotations

import json
from pathlib import Path

import click

from byorn.fileio import atomic_write_text


@click.command()
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


