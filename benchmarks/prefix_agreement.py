"""What computing the grey pass's image prefix once changes in the pretrained model's verdict, and
what it saves: per data set, the verdict with the prefix shared (as shipped) and with every row of
the grey pass computed in full (as before), in the precision the default picks.

    OMP_NUM_THREADS=1 python benchmarks/prefix_agreement.py --out benchmarks/results/prefix_agreement.jsonl

The data sets are the standard grid's (benchmarks/standard.yaml: its six attacks at 10 % and 5 %
poison, seed 0, 1,000 samples of the shapes task on byorn-tiny); the verdict is the default's first
(its four scores, each in MAD units, cut at k = 1.5), and the warm set the half of the samples it
finds least suspicious, which the warmed reference trains on. Both ways compute the same function
of the same inputs, the shared one with other matrix shapes (the prefix for one row, the rest
from it), which bfloat16 rounds otherwise: the scores move by rounding. One JSON line per data set, with each way's
seconds (the two passes and the scores built on them, one after the other on one thread, after
one verdict that warms the process up).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from byorn.attacks import build_attack, poison
from byorn.bench import load_grid
from byorn.data import Sample
from byorn.defenses.judging import JudgeConfig, Judgement, judge
from byorn.defenses.warmup import least_suspicious
from byorn.fileio import write_jsonl
from byorn.models import load_vlm
from byorn.models.hf import VLM
from byorn.scoring import checkpoint_label, scoring_dtype

GRID = "benchmarks/standard.yaml"


def verdict(vlm: VLM, samples: list[Sample], shared: bool) -> tuple[Judgement, float]:
    """The first verdict, its grey pass going on from a shared prefix or not, and its seconds."""
    shipped = VLM.shared_prefix
    if not shared:
        VLM.shared_prefix = lambda self, batch: 0
    try:
        with tempfile.TemporaryDirectory() as scratch:  # cold: nothing cached
            started = time.perf_counter()
            judgement = judge(vlm, samples, dataclasses.replace(JudgeConfig(), rejudge=False), scratch)
            return judgement, time.perf_counter() - started
    finally:
        VLM.shared_prefix = shipped


def warm_set(judgement: Judgement) -> set[int]:
    """The samples the warmed reference would train on."""
    return set(least_suspicious(judgement.scores, judgement.flagging.flagged, JudgeConfig().warm_share))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/prefix_agreement.jsonl")
    args = parser.parse_args()
    grid = load_grid(GRID)
    vlm = load_vlm(grid.train.model)
    clean = grid.task_samples(grid.n_train, 0, "train")
    rows = []
    for spec in grid.attacks:
        for rate in grid.poison_rates:
            attack = build_attack(spec.trigger, spec.target, **spec.options)
            samples, _ = poison(clean, attack, rate, 0, clean_label=spec.clean_label, reference=vlm)
            poisoned = np.array([s.meta.get("is_poisoned", False) for s in samples])
            if not rows:  # a first verdict to warm the process up, so that neither way pays for it
                verdict(vlm, samples, True)
            (full, full_s), (shared, shared_s) = verdict(vlm, samples, False), verdict(vlm, samples, True)
            flags = {way: np.array(j.flagging.flagged) for way, j in (("full", full), ("shared", shared))}
            rows.append({"attack": spec.name, "poison_rate": rate, "seed": 0, "n": len(samples),
                         "model": checkpoint_label(grid.train.model, vlm),
                         "dtype": str(scoring_dtype(vlm, JudgeConfig().precision)).removeprefix("torch."),
                         "max_score_difference": round(float(np.max(np.abs(np.subtract(full.scores,
                                                                                       shared.scores)))), 4),
                         "flagged": {way: int(f.sum()) for way, f in flags.items()},
                         "poisons_flagged": {way: int((f & poisoned).sum()) for way, f in flags.items()},
                         "flagged_by_one_only": int((flags["full"] != flags["shared"]).sum()),
                         "warm_set_differences": len(warm_set(full) ^ warm_set(shared)),
                         "seconds": {"full": round(full_s, 2), "shared": round(shared_s, 2)}})
            print(rows[-1], flush=True)
    write_jsonl(Path(args.out), rows)


if __name__ == "__main__":
    main()
