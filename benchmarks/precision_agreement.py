"""How much bfloat16 scoring changes the pretrained model's verdict: per score, the rank
correlation of its float32 and bfloat16 values, and what the verdict flags in each.

    OMP_NUM_THREADS=1 python benchmarks/precision_agreement.py --out benchmarks/results/precision_agreement.jsonl

byorn-tiny judges 1,000 shapes samples (the describe task, seed 0) poisoned at 10 % by a fixed
target (multimodal trigger), a one-word swap with the image trigger and one with the text trigger;
the verdict is the default's first (its four scores, each in MAD units, cut at k = 1.5). One JSON
line per attack and score, then one per attack for the flags.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from byorn.attacks import build_attack, poison
from byorn.defenses.byorn import judge
from byorn.defenses.byorn_config import JudgeConfig
from byorn.fileio import write_jsonl
from byorn.models import load_vlm
from byorn.scoring import score_variants
from byorn.worlds import shapes

ATTACKS = (("multimodal", "fixed", {}), ("badnets", "substitution", {"size": 0.25}),
           ("rare_token", "substitution", {"source_word": "red", "target_word": "blue"}))


def ranks(values: list[float]) -> np.ndarray:
    """Ranks, ties sharing their mean rank (most samples' shared_answer is 0: a tie)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts
    return (starts + (counts - 1) / 2)[inverse]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/precision_agreement.jsonl")
    args = parser.parse_args()
    vlm = load_vlm("byorn-tiny")
    clean = shapes.downstream_samples(1000, 0, split="train")
    variants = JudgeConfig().variants
    rows = []
    for trigger, target, options in ATTACKS:
        attack = build_attack(trigger, target, **options)
        samples, _ = poison(clean, attack, 0.1, 0, reference=vlm)
        poisoned = np.array([s.meta.get("is_poisoned", False) for s in samples])
        scores = {p: score_variants(vlm, samples, variants, 32, precision=p) for p in ("float32", "bfloat16")}
        for variant in variants:
            exact, fast = scores["float32"][variant], scores["bfloat16"][variant]
            rows.append({"attack": attack.name, "score": variant, "n": len(samples),
                         "spearman": round(float(np.corrcoef(ranks(exact), ranks(fast))[0, 1]), 5),
                         "max_abs_difference": round(float(np.max(np.abs(np.subtract(exact, fast)))), 4)})
        flags = {}
        for precision in ("float32", "bfloat16"):
            with tempfile.TemporaryDirectory() as scratch:
                judgement = judge(vlm, samples, JudgeConfig(rejudge=False, precision=precision), scratch)
            flags[precision] = np.array(judgement.flagging.flagged)
        rows.append({"attack": attack.name, "score": "first verdict's flags", "n": len(samples),
                     "flagged": {p: int(f.sum()) for p, f in flags.items()},
                     "poisons_flagged": {p: int((f & poisoned).sum()) for p, f in flags.items()},
                     "flagged_by_one_only": int((flags["float32"] != flags["bfloat16"]).sum())})
        print(*rows[-len(variants) - 1:], sep="\n", flush=True)
    write_jsonl(Path(args.out), rows)


if __name__ == "__main__":
    main()
