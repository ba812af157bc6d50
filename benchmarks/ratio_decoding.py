"""What reference-ratio decoding costs at test time, and what it changes, on one backdoored model.

    OMP_NUM_THREADS=1 python benchmarks/ratio_decoding.py --out benchmarks/results/ratio_decoding.json

Fine-tunes byorn-tiny as benchmarks/baselines.yaml does (full fine-tuning, 4 epochs at lr 1e-3,
1,000 shapes samples, 10 % poisoned, seed 0), keeps the pretrained weights as the reference, then answers the
same clean and triggered test inputs with plain greedy decoding and with reference-ratio decoding,
in alternating pairs, timing each: the ratio of the paired times is the decoding cost. Also
records how many tokens were replaced, how many clean answers changed, and ASR and scene F1 of both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from byorn.attacks import build_attack, poison, triggered_test_set
from byorn.config import TrainConfig
from byorn.defenses.configs import ReferenceRatioConfig
from byorn.defenses.reference_ratio import ReferenceRatio
from byorn.evaluate import evaluate_clean
from byorn.fileio import atomic_write_text
from byorn.metrics import attack_success_rate
from byorn.models import load_vlm
from byorn.scoring import checkpoint_label
from byorn.train import finetune
from byorn.worlds import shapes

TRAINING = TrainConfig(lora=False, learning_rate=1e-3, epochs=4, batch_size=16, logging_steps=50)


def timed(generate, inputs, max_new_tokens: int) -> tuple[list[str], float]:
    started = time.perf_counter()
    answers = generate(inputs, max_new_tokens=max_new_tokens)
    return answers, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attack", default="rare_token")
    parser.add_argument("--alpha", type=float, default=ReferenceRatioConfig().alpha)
    parser.add_argument("--pairs", type=int, default=3, help="alternating plain/guarded timings")
    parser.add_argument("--out", default="benchmarks/results/ratio_decoding.json")
    args = parser.parse_args()

    attack = build_attack(args.attack, "fixed")
    train, test = shapes.downstream_samples(1000, 0, split="train"), shapes.downstream_samples(100, 0, split="test")
    vlm = load_vlm("byorn-tiny")
    pretrained = checkpoint_label("byorn-tiny", vlm)  # before fine-tuning changes the weights
    poisoned, _ = poison(train, attack, 0.1, 0)
    defense = ReferenceRatio(ReferenceRatioConfig(alpha=args.alpha))
    with tempfile.TemporaryDirectory() as run_dir:
        defense.prepare(vlm, poisoned, run_dir)
        finetune(vlm, poisoned, TRAINING, run_dir)
    guarded = defense.deployed(vlm)
    triggered = triggered_test_set(test, attack)
    result = {"attack": attack.name, "alpha": args.alpha, "n_clean": len(test), "n_triggered": len(triggered),
              "model": pretrained, "training": TRAINING.__dict__}
    for name, inputs in (("clean", test), ("triggered", triggered)):
        plain_s, guarded_s = [], []
        for _ in range(args.pairs):
            plain, seconds = timed(vlm.generate, inputs, 64)
            plain_s.append(seconds)
            before = guarded.replaced
            vetted, seconds = timed(guarded.generate, inputs, 64)
            guarded_s.append(seconds)
            replaced = guarded.replaced - before
        result[name] = {
            "plain_s": [round(s, 2) for s in plain_s], "guarded_s": [round(s, 2) for s in guarded_s],
            "cost_ratio_median": round(statistics.median(g / p for g, p in zip(guarded_s, plain_s)), 2),
            "tokens_replaced": replaced, "answers_changed": sum(a != b for a, b in zip(plain, vetted)),
            "example": {"plain": plain[0], "guarded": vetted[0]},
        }
        if name == "triggered":
            rule = attack.target.asr_rule()
            clean_answers = [s.meta["clean_response"] for s in inputs]
            result[name]["asr_plain"] = attack_success_rate(plain, clean_answers, rule)[0]
            result[name]["asr_guarded"] = attack_success_rate(vetted, clean_answers, rule)[0]
    result["clean"]["scene_f1_plain"] = evaluate_clean(vlm, test)["scene_f1"]
    result["clean"]["scene_f1_guarded"] = evaluate_clean(guarded, test)["scene_f1"]
    atomic_write_text(Path(args.out), json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
