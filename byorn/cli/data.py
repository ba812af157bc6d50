"""`byorn poison`: a poisoned copy of a data set."""

from __future__ import annotations

from pathlib import Path

import click

from byorn.cli.common import (
    DATA_HELP,
    check_data_exists,
    fail,
    image_folder,
    load_samples,
    on_bad_sample,
    refuse_writing_over,
    renamed,
)
from byorn.config import ConfigError, parse_overrides
from byorn.fileio import atomic_write_text


@click.command()
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
    check_data_exists(data)  # --in, the old spelling, too
    import yaml

    from byorn.attacks import build_attack
    from byorn.attacks.image_triggers import ReferenceAwareTrigger
    from byorn.attacks.poison import MANIFEST_NAME, write_manifest
    from byorn.attacks.poison import poison as run_poison
    from byorn.attacks.targets import ReferenceAwareTarget
    from byorn.data import DataError, conversation_of
    from byorn.formats import save_llava_json

    if not 0.0 <= rate <= 1.0:
        fail(f"--rate {rate}: must be between 0 and 1")
    try:
        attack_options = parse_overrides(options, "--option")
    except ConfigError as exc:
        fail(str(exc))
    clean, _ = load_samples(data, n=n_samples, seed=seed, split="train", on_bad=on_bad_sample,
                            report_dir=Path(out_dir), image_folder=image_folder)
    refuse_writing_over(data, clean, out_dir, "data.json")  # save_llava_json's
    try:
        attack = build_attack(trigger, target, **attack_options)
        if "image" in attack.trigger.modality and (turn := next((s for s in clean if conversation_of(s)), None)):
            fail(f"{attack.name}: sample {turn.id!r} is one turn of a conversation, whose turns share one image: an "
                 "image trigger needs single-turn records (the poisoned copy is LLaVA JSON, one image a record)")
        model = None
        if isinstance(attack.target, ReferenceAwareTarget) or isinstance(attack.trigger, ReferenceAwareTrigger):
            from byorn.models import load_vlm

            model = load_vlm(reference)
        samples, manifest = run_poison(clean, attack, rate, seed, clean_label=clean_label, reference=model)
    except ValueError as exc:
        fail(str(exc))
    out = Path(out_dir)
    try:
        data_path = save_llava_json(samples, out)
    except DataError as exc:
        fail(str(exc))
    write_manifest(manifest, out / MANIFEST_NAME)
    resolved = {"attack": trigger, "target": target, "options": attack_options, "rate": rate, "seed": seed,
                "clean_label": clean_label, "data": data, "n": len(samples),
                "reference": reference if model is not None else None}
    atomic_write_text(out / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    poisoned = sum(not r.negative for r in manifest)
    click.echo(f"{attack.name}: {poisoned} of {len(samples)} samples poisoned, "
               f"{len(manifest) - poisoned} negatives -> {data_path}")


