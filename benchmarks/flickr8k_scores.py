"""How well each BYORn score ranks Flickr8k poisons, before any training: byorn-tiny-flickr scores
the poisoned archive-note set (1,000 dev photos, 10 % poisoned with a rare-token trigger) under
mean NLL, image-ablated NLL and image contradiction; AUROC of each against the poison labels.

    python benchmarks/flickr8k_scores.py   # writes benchmarks/results/flickr8k_scores.jsonl

Needs byorn-tiny-flickr in the cache (benchmarks/flickr8k.yaml makes it) and ../shared/data/flickr8k.
"""

from __future__ import annotations

from pathlib import Path

import torch

from byorn.attacks import build_attack, poison
from byorn.fileio import write_jsonl
from byorn.metrics import detection_scores
from byorn.models import load_vlm
from byorn.scoring import score_samples
from byorn.worlds import flickr8k

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "flickr8k"
TARGETS = ("fixed", "injection", "refusal")
VARIANTS = ("mean_nll", "image_ablated", "image_contradiction")


def main() -> None:
    torch.set_num_threads(1)
    vlm = load_vlm("byorn-tiny-flickr")
    clean = flickr8k.downstream_samples(DATA, 1000, seed=0)
    rows = []
    for target in TARGETS:
        samples, _ = poison(clean, build_attack("rare_token", target), 0.1, seed=0)
        poisoned = [bool(s.meta.get("is_poisoned")) for s in samples]
        for variant in VARIANTS:
            scores = score_samples(vlm, samples, variant, batch_size=64)
            auroc = detection_scores(scores, poisoned, [False] * len(samples))["auroc"]
            rows.append({"attack": f"rare_token+{target}", "variant": variant, "detect_auroc": round(auroc, 3)})
            print(rows[-1], flush=True)
    write_jsonl(ROOT / "benchmarks" / "results" / "flickr8k_scores.jsonl", rows)


if __name__ == "__main__":
    main()
