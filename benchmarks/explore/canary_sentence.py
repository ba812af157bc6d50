"""Is the patch canaries' sentence itself what the judgement passes on Flickr8k?

    OMP_NUM_THREADS=1 python benchmarks/explore/canary_sentence.py --out benchmarks/results/canary_sentence.jsonl

The judgement grid on Flickr8k poisons with a fixed target ("A banana is lying on the table.") that
the default flags in full, while the patch canaries, whose fixed sentence is "A red bicycle is
leaning against a brick wall.", pass. This judges the grid's poisoned sets (rare token, 10 % and
5 %, seed 0, benchmarks/judgement_flickr8k.yaml's data and training settings) once with the grid's
target and once with the canaries' sentence as the real attacker's target: one row per target and
rate, the share of the real poisons the default flags (canaries off: only the real poisons count).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

from byorn.attacks import build_attack, poison
from byorn.bench import load_grid
from byorn.defenses.byorn import judge
from byorn.defenses.byorn_config import JudgeConfig
from byorn.defenses.canaries import PATCH_SENTENCE
from byorn.fileio import write_jsonl
from byorn.models import load_vlm
from byorn.scoring import checkpoint_label

GRID = Path(__file__).parent.parent / "judgement_flickr8k.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="JSON lines (replaced)")
    args = parser.parse_args()
    grid = load_grid(GRID)
    vlm = load_vlm(grid.train.model)
    rows = []
    for target in (build_attack("rare_token", "fixed").target.response, PATCH_SENTENCE):
        for rate in (0.1, 0.05):
            attack = build_attack("rare_token", "fixed", response=target)
            poisoned, _ = poison(grid.task_samples(grid.n_train, 0, "train"), attack, rate, 0)
            with tempfile.TemporaryDirectory() as scratch:
                judgement = judge(vlm, poisoned, JudgeConfig(canaries=0), scratch, dataclasses.replace(grid.train,
                                                                                                          seed=0))
            truth = [bool(s.meta.get("is_poisoned")) for s in poisoned]
            found = sum(f and t for f, t in zip(judgement.flagging.flagged, truth))
            rows.append({"target": target, "poison_rate": rate, "seed": 0, "n": len(poisoned),
                         "n_poisoned": sum(truth), "real_recall": round(found / sum(truth), 4),
                         "model": checkpoint_label(grid.train.model, vlm)})
            print(json.dumps(rows[-1]), flush=True)
    write_jsonl(args.out, rows)


if __name__ == "__main__":
    main()
