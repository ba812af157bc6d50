"""How well each score, and the shipped default's union of them, finds the poisons of a grid,
before any training: for every attack, poison rate and seed of a grid config, the poisoned set is
scored once under the grid's pretrained model; per score its AUROC, and for the union of the
default's scores (each cut at its own median + k MAD) the share of poisons and of clean samples
flagged at several k. This is what the default's score and cut were chosen from.

With --warmed, the same for the default's second verdict: the warmed reference (the pretrained
model fine-tuned on the half of the samples its verdict found least suspicious) scores the other
half; each score's AUROC there, and what mean NLL alone (the shipped rejudge_variant) and the
four joined flag. This is what rejudge_variant was chosen from.

    python benchmarks/judgement_scores.py benchmarks/judgement.yaml --results benchmarks/results/judgement_scores.jsonl
    python benchmarks/judgement_scores.py benchmarks/judgement_flickr8k.yaml \
        --results benchmarks/results/judgement_scores.jsonl
    python benchmarks/judgement_scores.py benchmarks/judgement.yaml --warmed \
        --results benchmarks/results/judgement_scores_warmed.jsonl

Rows are appended (one per attack, rate and seed, with the grid's world); rows already there for
the same world, attack, rate and seed are kept and not recomputed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from byorn.attacks import build_attack, poison
from byorn.bench import load_grid, read_results
from byorn.config import TrainConfig
from byorn.data import Sample
from byorn.defenses.byorn import combined_score, judge
from byorn.defenses.byorn_config import JudgeConfig
from byorn.defenses.thresholds import ALL
from byorn.defenses.warm_set import warm_set
from byorn.fileio import append_jsonl
from byorn.in_place import warm_up
from byorn.metrics import detection_scores
from byorn.models import load_vlm
from byorn.models.hf import VLM
from byorn.scoring import checkpoint_label, score_variants

EXTRA_SCORES = ("image_ablated", "max_token_nll")  # measured beside the default's own, for comparison
CUTS = (1.0, 1.5, 2.0, 3.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", help="a benchmark grid config (its attacks, rates, seeds, world and model)")
    parser.add_argument("--results", default="benchmarks/results/judgement_scores.jsonl")
    parser.add_argument("--warmed", action="store_true",
                        help="the second verdict's scores instead: the warmed reference's, on the samples it was "
                             "not fine-tuned on")
    args = parser.parse_args()
    torch.set_num_threads(1)
    grid = load_grid(args.grid)
    results = Path(args.results)
    done = {(r["world"], r["attack"], r["poison_rate"], r["seed"]) for r in read_results(results)}
    vlm = load_vlm(grid.train.model)
    model = checkpoint_label(grid.train.model, vlm)
    for spec in grid.attacks:
        for rate in grid.poison_rates:
            for seed in grid.seeds:
                if (grid.world, spec.name, rate, seed) in done:
                    continue
                clean = grid.task_samples(grid.n_train, seed, "train")
                attack = build_attack(spec.trigger, spec.target, **spec.options)
                samples, _ = poison(clean, attack, rate, seed, clean_label=spec.clean_label, reference=vlm)
                is_poisoned = np.array([bool(s.meta.get("is_poisoned")) for s in samples])
                row = {"world": grid.world, "attack": spec.name, "poison_rate": rate, "seed": seed, "model": model}
                if args.warmed:
                    row.update(warmed_row(vlm, samples, is_poisoned, dataclasses.replace(grid.train, seed=seed)))
                else:
                    row.update(pretrained_row(vlm, samples, is_poisoned))
                append_jsonl(results, row)
                print(json.dumps(row), flush=True)


def pretrained_row(vlm: VLM, samples: list[Sample], is_poisoned: np.ndarray) -> dict:
    """Each score's AUROC under the pretrained model; what the default's first verdict (the
    union of its scores) flags at several k."""
    default = JudgeConfig()
    scores = score_variants(vlm, samples, _measured(default.variants), batch_size=64)
    union = np.array(combined_score(default.variants, [scores[v] for v in default.variants], [ALL] * len(samples)))
    auroc = _aurocs(scores, is_poisoned)
    auroc["default"] = round(detection_scores(union.tolist(), is_poisoned.tolist())["auroc"], 4)
    return {"default": default.variant, "auroc": auroc,
            "cuts": {f"{k:g}": _flagged(union > k, is_poisoned) for k in CUTS}}


def warmed_row(vlm: VLM, samples: list[Sample], is_poisoned: np.ndarray, train: TrainConfig) -> dict:
    """The default's second verdict, as BYORn reaches it: the pretrained verdict picks the warm set,
    the warmed reference scores the other samples. Each score's AUROC on those; what the shipped
    second verdict (rejudge_variant) and the four joined flag at several k, as shares of all poisons
    and of all clean samples (a poison in the warm set counts as missed)."""
    default = JudgeConfig()
    candidates = {"default": default.rejudge_variant.split("+"), "joined": default.variants}
    with tempfile.TemporaryDirectory() as scratch:
        first = judge(vlm, samples, dataclasses.replace(default, rejudge=False), scratch)
        warm = warm_set(first, default)  # in this order, as BYORn warms on them
        held = np.array(sorted(set(range(len(samples))) - set(warm)))
        with warm_up(vlm, [samples[i] for i in warm], train, default.warm_epochs, Path(scratch) / "warmup"):
            needed = _measured([*candidates["default"], *candidates["joined"]])
            scores = score_variants(vlm, [samples[i] for i in held], needed, batch_size=64, reference=False)
    auroc = _aurocs(scores, is_poisoned[held])
    cuts = {}
    for name, parts in candidates.items():
        verdict = np.array(combined_score(parts, [scores[v] for v in parts], [ALL] * len(held)))
        auroc[name] = round(detection_scores(verdict.tolist(), is_poisoned[held].tolist())["auroc"], 4)
        for k in CUTS:
            flagged = np.zeros(len(samples), dtype=bool)
            flagged[held] = verdict > k
            cuts[f"{k:g} {name}"] = _flagged(flagged, is_poisoned)
    return {"default": default.rejudge_variant, "warmed_on": len(warm),
            "poisons_warmed_on": int(is_poisoned[warm].sum()), "auroc": auroc, "cuts": cuts}


def _measured(variants: list[str]) -> list[str]:
    """`variants` and, for comparison, EXTRA_SCORES, each once."""
    return list(dict.fromkeys([*variants, *EXTRA_SCORES]))


def _aurocs(scores: dict[str, list[float]], is_poisoned: np.ndarray) -> dict[str, float]:
    return {v: round(detection_scores(s, is_poisoned.tolist())["auroc"], 4) for v, s in scores.items()}


def _flagged(flagged: np.ndarray, is_poisoned: np.ndarray) -> dict[str, float]:
    return {"poison_flagged": round(float(flagged[is_poisoned].mean()), 4),
            "clean_flagged": round(float(flagged[~is_poisoned].mean()), 4)}


if __name__ == "__main__":
    main()
