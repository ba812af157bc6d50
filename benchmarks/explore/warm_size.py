"""How big must the warm set be? The judgement of a large poisoned set with warm-ups of several sizes.

    OMP_NUM_THREADS=1 python benchmarks/explore/warm_size.py --shares 0.05 0.1 --out benchmarks/results/warm_size.jsonl
    OMP_NUM_THREADS=1 python benchmarks/explore/warm_size.py --shares 0.2 0.5 --out benchmarks/results/warm_size.jsonl
    OMP_NUM_THREADS=1 python benchmarks/explore/warm_size.py --shares 0.2 --warm-epochs 2.5 \
        --out benchmarks/results/warm_size.jsonl

The built-in shapes task, N samples (default 10,000), 5 % poisoned with a one-word swap on a rare
token (circle -> square: the poison the warmed reference is there to see), seed 0; the default
judgement with the judgement grids' training settings (full fine-tuning, lr 5e-4, batches of 16),
its warm set `warm_share` of the samples, fine-tuned on for `warm_epochs` (1, the default: a smaller
set is also fewer steps; 2.5 on a fifth of the samples: as many steps as the default's half). One row
per share (appended): the warm set's size, the judgement's wall time, the share of the poisons and of
the clean samples it flags, of the samples the warmed reference judged (not warmed on). For sizing
a warm-up that does not grow with the data (the scan-scale work).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from byorn.attacks import build_attack, poison
from byorn.config import TrainConfig
from byorn.defenses.byorn import judge
from byorn.defenses.byorn_config import JudgeConfig
from byorn.fileio import append_jsonl
from byorn.models import load_vlm
from byorn.scoring import checkpoint_label
from byorn.worlds import shapes

TRAIN = TrainConfig(lora=False, learning_rate=5e-4, batch_size=16, epochs=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shares", type=float, nargs="+", required=True, help="warm_share values to judge with")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--warm-epochs", type=float, default=1.0, help="the warm-up's epochs (warm_epochs)")
    parser.add_argument("--out", required=True, type=Path, help="JSON lines (appended)")
    args = parser.parse_args()
    attack = build_attack("rare_token", "substitution")
    samples, _ = poison(shapes.downstream_samples(args.n, 0), attack, 0.05, 0)
    truth = [bool(s.meta.get("is_poisoned")) for s in samples]
    for share in args.shares:
        vlm = load_vlm("byorn-tiny")
        with tempfile.TemporaryDirectory() as scratch:
            started = time.perf_counter()
            config = JudgeConfig(warm_share=share, warm_epochs=args.warm_epochs, canaries=0)
            judgement = judge(vlm, samples, config, scratch, TRAIN)
            seconds = time.perf_counter() - started
        flagged = judgement.flagging.flagged
        warmed = set(judgement.warmed_on)
        held = [i for i in range(len(samples)) if i not in warmed]
        held_clean = [i for i in held if not truth[i]]
        row = {"n": args.n, "attack": attack.name, "poison_rate": 0.05, "seed": 0, "warm_share": share,
               "warm_epochs": args.warm_epochs, "warm_set": len(judgement.warmed_on), "judge_s": round(seconds, 1),
               "poisons_flagged": round(sum(f and t for f, t in zip(flagged, truth)) / sum(truth), 4),
               "clean_flagged": round(sum(f and not t for f, t in zip(flagged, truth)) / (len(truth) - sum(truth)), 4),
               "held_clean_flagged": round(sum(flagged[i] for i in held_clean) / max(len(held_clean), 1), 4),
               "model": checkpoint_label("byorn-tiny", vlm)}
        append_jsonl(args.out, row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
