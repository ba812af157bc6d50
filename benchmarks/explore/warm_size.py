"""How big must the warm set be? The judgement of a large set with warm sets of several sizes.

    OMP_NUM_THREADS=1 python benchmarks/explore/warm_size.py --seed 0 --warm-max 500 512 1000 2000 0 \
        --out benchmarks/results/warm_size.jsonl
    OMP_NUM_THREADS=1 python benchmarks/explore/warm_size.py --clean --seed 0 --warm-max 512 0 \
        --out benchmarks/results/warm_size.jsonl
    OMP_NUM_THREADS=1 python benchmarks/explore/warm_size.py --shares 0.05 0.1 0.2 \
        --out benchmarks/results/warm_size.jsonl
    OMP_NUM_THREADS=1 python benchmarks/explore/warm_size.py --shares 0.2 --warm-epochs 2.5 \
        --out benchmarks/results/warm_size.jsonl

The built-in shapes task, N samples (default 10,000), 5 % poisoned with a one-word swap on a rare
token (circle -> square: the poison the warmed reference is there to see), judged by the default
with the judgement grids' training settings (full fine-tuning, lr 5e-4, batches of 16); --clean: no
poisons and the warm-up at byorn train's defaults (LoRA), as `byorn scan --data shapes` judges.
--seed: the poisons' draw and the judgement's (the warm set's draw, the warm-up's order). Each
warm_max (0: no bound) and warm_share, fine-tuned on for `warm_epochs` (1, the default; 2.5 on a
fifth of the samples: as many steps as the half): one row (appended) with the warm set's size, the
judgement's wall time (other work may have run beside it), and the share of the poisons and of the
clean samples it flags, in all and among the samples the warmed reference judged (not warmed on).
For sizing a warm-up that does not grow with the data (the scan-scale work).
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from dataclasses import replace
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
    parser.add_argument("--shares", type=float, nargs="+", default=[0.5], help="warm_share values to judge with")
    parser.add_argument("--warm-max", type=int, nargs="+", default=[0], help="warm_max values (0: no bound)")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0, help="the poisons' draw and the judgement's")
    parser.add_argument("--warm-epochs", type=float, default=1.0, help="the warm-up's epochs (warm_epochs)")
    parser.add_argument("--clean", action="store_true",
                        help="no poisons, and the warm-up at byorn train's defaults (LoRA): `byorn scan --data shapes`")
    parser.add_argument("--out", required=True, type=Path, help="JSON lines (appended)")
    args = parser.parse_args()
    attack = build_attack("rare_token", "substitution")
    samples = shapes.downstream_samples(args.n, 0)
    if not args.clean:
        samples, _ = poison(samples, attack, 0.05, args.seed)
    train = replace(TrainConfig() if args.clean else TRAIN, seed=args.seed)
    truth = [bool(s.meta.get("is_poisoned")) for s in samples]
    for share, warm_max in itertools.product(args.shares, args.warm_max):
        vlm = load_vlm("byorn-tiny")
        with tempfile.TemporaryDirectory() as scratch:
            started = time.perf_counter()
            config = JudgeConfig(warm_share=share, warm_epochs=args.warm_epochs, warm_max=warm_max, canaries=0)
            judgement = judge(vlm, samples, config, scratch, train)
            seconds = time.perf_counter() - started
        flagged = judgement.flagging.flagged
        warmed = set(judgement.warmed_on)
        held = [i for i in range(len(samples)) if i not in warmed]
        held_clean = [i for i in held if not truth[i]]
        row = {"n": args.n, "attack": "none" if args.clean else attack.name, "poison_rate": 0.0 if args.clean else 0.05,
               "seed": args.seed, "warm_share": share, "warm_epochs": args.warm_epochs, "warm_max": warm_max,
               "warm_set": len(judgement.warmed_on), "judge_s": round(seconds, 1),
               "training": "LoRA, byorn train's defaults" if args.clean else "full, lr 5e-4, batches of 16",
               "poisons_flagged": round(sum(f and t for f, t in zip(flagged, truth)) / sum(truth), 4) if any(truth)
               else None,
               "clean_flagged": round(sum(f and not t for f, t in zip(flagged, truth)) / (len(truth) - sum(truth)), 4),
               "held_clean_flagged": round(sum(flagged[i] for i in held_clean) / max(len(held_clean), 1), 4),
               "model": checkpoint_label("byorn-tiny", vlm)}
        append_jsonl(args.out, row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
