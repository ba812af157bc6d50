"""Is a fixed target written in Flickr8k's own words what the judgement passes there?

    OMP_NUM_THREADS=1 python benchmarks/explore/canary_sentence.py --out benchmarks/results/canary_sentence.jsonl

The judgement grid on Flickr8k poisons with a fixed target ("A banana is lying on the table.") that
the default flags in full, while the patch canaries once passed with their fixed sentence "A red
bicycle is leaning against a brick wall." (bicycles, brick walls and leaning are all in Flickr8k's
captions; bananas are not). This judges the grid's poisoned sets (rare token, 10 % and 5 %, seed 0,
benchmarks/judgement_flickr8k.yaml's data and training settings) with the grid's target, with that
sentence, and with a sentence in the notes' own style ("In this photo, ...") as the real attacker's
target: one row per target and rate, the share of the real poisons the default flags, the canary
kind nearest the target (patch for a target in words the notes do not all use, lookalike for one in
their words) and each kind's canary recall (the canaries move no real sample's flag). What it found
made the canaries plant both: the patch kind a sentence foreign to the data, the lookalike kind one
of its own answers.
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
from byorn.defenses.canaries import in_own_words
from byorn.fileio import write_jsonl
from byorn.models import load_vlm
from byorn.scoring import checkpoint_label

GRID = Path(__file__).parent.parent / "judgement_flickr8k.yaml"
IN_ITS_WORDS = ("A red bicycle is leaning against a brick wall.",
                "In this photo, a man is riding a bicycle down the street.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="JSON lines (replaced)")
    args = parser.parse_args()
    grid = load_grid(GRID)
    vlm = load_vlm(grid.train.model)
    rows = []
    clean = grid.task_samples(grid.n_train, 0, "train")
    for target in (build_attack("rare_token", "fixed").target.response, *IN_ITS_WORDS):
        for rate in (0.1, 0.05):
            attack = build_attack("rare_token", "fixed", response=target)
            poisoned, _ = poison(clean, attack, rate, 0)
            with tempfile.TemporaryDirectory() as scratch:
                judgement = judge(vlm, poisoned, JudgeConfig(), scratch, dataclasses.replace(grid.train, seed=0))
            truth = [bool(s.meta.get("is_poisoned")) for s in poisoned]
            found = sum(f and t for f, t in zip(judgement.flagging.flagged, truth))
            rows.append({"target": target, "poison_rate": rate, "seed": 0, "n": len(poisoned),
                         "n_poisoned": sum(truth), "real_recall": round(found / sum(truth), 4),
                         "nearest_kind": "lookalike" if in_own_words(target, [s.response for s in clean]) else "patch",
                         "canary_recall": {kind: round(r.recall, 4) for kind, r in judgement.canaries.kinds.items()},
                         "model": checkpoint_label(grid.train.model, vlm)})
            print(json.dumps(rows[-1]), flush=True)
    write_jsonl(args.out, rows)


if __name__ == "__main__":
    main()
