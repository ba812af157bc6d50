"""What reusing the grey pass's shared prompt prefix (`-d reuse_prefix=true`) saves, and what it moves.

    OMP_NUM_THREADS=1 python benchmarks/prefix_reuse.py --out benchmarks/results/prefix_reuse.jsonl

The grey image is the same in every row of a batch, so with the image at the start of the prompt
the rows share a prefix at least as long as the image's positions: computed once, its keys and
values reused. byorn-tiny judges the judgement grid's training sets (1,000 shapes samples, each
attack of benchmarks/judgement.yaml at 10 %, seed 0) with the default's first verdict (its four
scores, in the precision the default picks here), with and without; one JSON line per attack: how
many flags differ, the poisons flagged each way, and the rank correlation of each grey-pass score.
Then the time of that verdict's scoring of 1,000 clean samples, with and without in turn
(--repeats pairs in this one process, after a warm-up); run it with nothing else on the machine.
Then the share of the grey pass's positions in the shared prefix: byorn-tiny's, measured, and
LLaVA-1.5's (576 image positions), estimated for instructions and answers of a few lengths.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from byorn.attacks import build_attack, poison
from byorn.bench import load_grid
from byorn.defenses.byorn import verdict
from byorn.defenses.byorn_config import JudgeConfig
from byorn.fileio import write_jsonl
from byorn.models import load_vlm
from byorn.models.hf import IGNORE_INDEX
from byorn.scoring import checkpoint_label, on_grey, score_variants
from byorn.worlds import shapes

GRID = Path(__file__).parent / "judgement.yaml"
GREY_SCORES = ("image_contradiction", "shared_answer")
LLAVA_IMAGE_POSITIONS = 576  # LLaVA-1.5's 336-px CLIP grid, 24 x 24
LLAVA_HEAD = 5  # an assumption: the template's tokens before the image ("USER: ")


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(values: list[float]) -> np.ndarray:  # ties share their mean rank
        _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        return (np.cumsum(counts) - counts + (counts - 1) / 2)[inverse]

    return round(float(np.corrcoef(ranks(a), ranks(b))[0, 1]), 5)


def agreement(vlm, model: str) -> list[dict]:
    rows = []
    clean = shapes.downstream_samples(1000, 0, split="train")
    for spec in load_grid(GRID).attacks:
        attack = build_attack(spec.trigger, spec.target, **spec.options)
        samples, _ = poison(clean, attack, 0.1, 0, reference=vlm)
        poisoned = [bool(s.meta.get("is_poisoned")) for s in samples]
        judged, scores = {}, {}
        for reuse in (False, True):
            config = JudgeConfig(rejudge=False, canaries=0, reuse_prefix=reuse)
            with tempfile.TemporaryDirectory() as scratch:
                judged[reuse] = verdict(vlm, samples, config, config.variant, scratch, reference=True).flagging.flagged
            scores[reuse] = score_variants(vlm, samples, GREY_SCORES, config.batch_size, precision=config.precision,
                                           reuse_prefix=reuse)
        rows.append({"what": "agreement", "attack": attack.name, "poison_rate": 0.1, "n": len(samples), "model": model,
                     "flags_differ": sum(a != b for a, b in zip(judged[False], judged[True])),
                     "flagged": {str(k): sum(v) for k, v in judged.items()},
                     "poisons_flagged": {str(k): sum(f and p for f, p in zip(v, poisoned)) for k, v in judged.items()},
                     "spearman": {s: spearman(scores[False][s], scores[True][s]) for s in GREY_SCORES}})
        print(rows[-1], flush=True)
    return rows


def timing(vlm, model: str, repeats: int) -> list[dict]:
    samples = shapes.downstream_samples(1000, 0, split="train")
    config = JudgeConfig()
    score_variants(vlm, samples[:64], config.variants, config.batch_size, precision=config.precision)  # warm-up
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for reuse in (False, True):
            started = time.perf_counter()
            score_variants(vlm, samples, config.variants, config.batch_size, precision=config.precision,
                           reuse_prefix=reuse)
            seconds[reuse].append(time.perf_counter() - started)
    return [{"what": "time", "scores": "first verdict (four scores: true and grey pass)", "n": len(samples),
             "model": model, "repeats": repeats, "seconds_whole": [round(s, 2) for s in seconds[False]],
             "seconds_reused": [round(s, 2) for s in seconds[True]],
             "ratio_median": round(float(np.median(np.divide(seconds[True], seconds[False]))), 3)}]


def positions(vlm, model: str) -> list[dict]:
    samples = shapes.downstream_samples(256, 0, split="train")
    shared, total = [], []
    for start in range(0, len(samples), 32):
        chunk = samples[start:start + 32]
        batch = vlm.encode(chunk)
        grey = vlm.encode([_grey(s) for s in chunk])
        answer = grey.pop("labels") != IGNORE_INDEX
        first = int(answer.float().argmax(dim=1).min())  # as response_logits: the prefix ends before it
        shared.append(vlm.shared_prefix(grey, first - 1) * len(chunk))
        total.append(int(batch["attention_mask"].sum()))
    rows = [{"what": "positions", "model": model, "prefix_share": round(sum(shared) / sum(total), 3)}]
    for rest in (30, 60, 120, 240):  # instruction + answer tokens
        prefix = LLAVA_HEAD + LLAVA_IMAGE_POSITIONS
        rows.append({"what": "positions", "model": model, "estimate_for": "LLaVA-1.5 (576 image positions)",
                     "instruction_and_answer_tokens": rest, "prefix_share": round(prefix / (prefix + rest), 3)})
    return rows


def _grey(sample):
    from dataclasses import replace

    return replace(sample, image=on_grey(sample.pil()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/prefix_reuse.jsonl"))
    parser.add_argument("--repeats", type=int, default=3, help="timing pairs (default 3)")
    args = parser.parse_args()
    vlm = load_vlm("byorn-tiny")
    model = checkpoint_label("byorn-tiny", vlm)
    rows = agreement(vlm, model) + timing(vlm, model, args.repeats) + positions(vlm, model)
    write_jsonl(args.out, rows)
    for row in rows[-6:]:
        print(row)


if __name__ == "__main__":
    main()
