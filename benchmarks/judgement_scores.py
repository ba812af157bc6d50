"""How well each score, and the shipped default's union of them, finds the poisons of a grid,
before any training: for every attack, poison rate and seed of a grid config, the poisoned set is
scored once under the grid's pretrained model; per score its AUROC, and for the union of the
default's scores (each cut at its own median + k MAD) the share of poisons and of clean samples
flagged at several k. This is what the default's score and cut were chosen from.

    python benchmarks/judgement_scores.py benchmarks/judgement.yaml --results benchmarks/results/judgement_scores.jsonl
    python benchmarks/judgement_scores.py benchmarks/judgement_flickr8k.yaml \
        --results benchmarks/results/judgement_scores.jsonl

Rows are appended (one per attack, rate and seed, with the grid's world); rows already there for
the same world, attack, rate and seed are kept and not recomputed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from byorn.attacks import build_attack, poison
from byorn.bench import load_grid, read_results
from byorn.defenses.judging import JudgeConfig, combined_score
from byorn.defenses.thresholds import ALL
from byorn.fileio import append_jsonl
from byorn.metrics import detection_scores
from byorn.models import load_vlm
from byorn.scoring import model_fingerprint, score_variants

EXTRA_SCORES = ("image_ablated", "max_token_nll")  # measured beside the default's own, for comparison
CUTS = (1.0, 1.5, 2.0, 3.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", help="a benchmark grid config (its attacks, rates, seeds, world and model)")
    parser.add_argument("--results", default="benchmarks/results/judgement_scores.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(1)
    grid = load_grid(args.grid)
    default = JudgeConfig()
    variants = [*default.variants, *(v for v in EXTRA_SCORES if v not in default.variants)]
    results = Path(args.results)
    done = {(r["world"], r["attack"], r["poison_rate"], r["seed"]) for r in read_results(results)}
    vlm = load_vlm(grid.train.model)
    for spec in grid.attacks:
        for rate in grid.poison_rates:
            for seed in grid.seeds:
                if (grid.world, spec.name, rate, seed) in done:
                    continue
                clean = grid.task_samples(grid.n_train, seed, "train")
                attack = build_attack(spec.trigger, spec.target, **spec.options)
                samples, _ = poison(clean, attack, rate, seed, clean_label=spec.clean_label, reference=vlm)
                is_poisoned = np.array([bool(s.meta.get("is_poisoned")) for s in samples])
                scores = score_variants(vlm, samples, variants, batch_size=64)
                row = {"world": grid.world, "attack": spec.name, "poison_rate": rate, "seed": seed,
                       "model": f"{grid.train.model}@{model_fingerprint(vlm, reference=False).hex()[:12]}",
                       "default": default.variant,
                       "auroc": {v: round(detection_scores(s, is_poisoned.tolist())["auroc"], 4)
                                 for v, s in scores.items()}}
                union = np.array(combined_score(default.variants, [scores[v] for v in default.variants],
                                                [ALL] * len(samples)))
                row["auroc"]["default"] = round(detection_scores(union.tolist(), is_poisoned.tolist())["auroc"], 4)
                row["cuts"] = {f"{k:g}": {"poison_flagged": round(float((union[is_poisoned] > k).mean()), 4),
                                          "clean_flagged": round(float((union[~is_poisoned] > k).mean()), 4)}
                               for k in CUTS}
                append_jsonl(results, row)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
