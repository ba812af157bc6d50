"""`byorn clean` then plain fine-tuning, against in-training BYORn, on the same poisoned sets.

    OMP_NUM_THREADS=1 python benchmarks/clean_vs_train.py --out benchmarks/results/clean_vs_train.jsonl

byorn-tiny fully fine-tuned as in the demo (3 epochs, 1,000 shapes samples, 10 % poisoned, seed 0),
for the multimodal and the rare-token trigger with the fixed target. Path A: `byorn train --defense
byorn` (the shipped default: the fine-tuning goes on from the warm-up). Path A': the same with
`-d warm_start=false` (from the pretrained weights). Path B: `clean` (given the same training config,
as `byorn clean --config` does) writes the defended set to disk in LLaVA JSON, it is loaded back as a
user's trainer would, and fine-tuned with no defense. All are evaluated on the same triggered and
clean test inputs; one JSON line per attack and path, with times and a fingerprint of the trained
weights (A' and B train on the same data from the same weights: they must match).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from byorn.attacks import build_attack, poison, triggered_test_set
from byorn.clean import clean
from byorn.datasets import load_dataset
from byorn.defenses import build_defense
from byorn.defenses.byorn import ByornConfig
from byorn.evaluate import evaluate_clean
from byorn.fileio import write_jsonl
from byorn.metrics import attack_success_rate
from byorn.models import load_vlm
from byorn.scoring import checkpoint_label, model_fingerprint
from byorn.train import finetune
from byorn.workflow import DEMO_TRAINING
from byorn.worlds import shapes

TRIGGERS = ("multimodal", "rare_token")


def evaluated(vlm, attack, test) -> dict:
    triggered = triggered_test_set(test, attack)
    answers = vlm.generate(triggered, max_new_tokens=64, desc="triggered")
    asr, _ = attack_success_rate(answers, [s.meta["clean_response"] for s in triggered], attack.target.asr_rule())
    return {"asr": asr, "clean_score": evaluate_clean(vlm, test)["clean_score"]}


def trained(vlm) -> str:
    """A fingerprint of the fine-tuned weights: two paths that train alike end with the same one."""
    return model_fingerprint(vlm, reference=False).hex()[:12]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/clean_vs_train.jsonl")
    args = parser.parse_args()
    train, test = shapes.downstream_samples(1000, 0, split="train"), shapes.downstream_samples(200, 0, split="test")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for trigger in TRIGGERS:
            attack = build_attack(trigger, "fixed")
            poisoned, _ = poison(train, attack, 0.1, 0)
            for path, options in (("byorn train --defense byorn", {}),
                                  ("byorn train --defense byorn -d warm_start=false", {"warm_start": False})):
                vlm = load_vlm("byorn-tiny")
                model = checkpoint_label("byorn-tiny", vlm)  # the pretrained weights
                started, run_dir = time.perf_counter(), Path(scratch) / f"{trigger}-train-{len(rows)}"
                defense = build_defense("byorn", **options)
                defense.prepare(vlm, poisoned, run_dir, train=DEMO_TRAINING)
                finetune(vlm, defense.training_set(poisoned), DEMO_TRAINING, run_dir, hook=defense)
                rows.append({"attack": attack.name, "path": path, "model": model,
                             "seconds": round(time.perf_counter() - started, 1), "n_flagged": sum(defense.flagged),
                             "trained": trained(vlm), **evaluated(vlm, attack, test)})
            # B: clean to disk, load as a user would, fine-tune undefended
            vlm, started = load_vlm("byorn-tiny"), time.perf_counter()
            # the same training config for the warmed reference's warm-up: `byorn clean --config`
            cleaned = clean(vlm, poisoned, ByornConfig(), Path(scratch) / f"{trigger}-clean", train=DEMO_TRAINING)
            exported = load_dataset(cleaned.data)
            finetune(vlm, exported, DEMO_TRAINING, Path(scratch) / f"{trigger}-plain")
            rows.append({"attack": attack.name, "path": "byorn clean, then --defense none", "model": model,
                         "seconds": round(time.perf_counter() - started, 1), "n_flagged": len(cleaned.flagged),
                         "trained": trained(vlm), **evaluated(vlm, attack, test)})
            print(*rows[-3:], sep="\n", flush=True)
    write_jsonl(Path(args.out), rows)


if __name__ == "__main__":
    main()
