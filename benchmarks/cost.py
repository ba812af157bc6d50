"""What BYORn costs, measured in one run: undefended vs defended fine-tuning at 1, 5 and 10 %
poison (and at 1 epoch), our default and the paper's own recipe (byorn_paper), and how fast the
reference scores a data set (float32, and the precision the judgement picks on this machine).

    OMP_NUM_THREADS=1 python benchmarks/cost.py --out benchmarks/results/cost.jsonl

The demo's setting (byorn-tiny fully fine-tuned on 1,000 samples of the shapes task, multimodal
trigger, fixed target, seed 0). For each rate the undefended cell and the two BYORn cells run back
to back, so a drift in the machine's speed touches all three; each cell runs in a fresh process, as a
`byorn train` does (a long-lived process has its memory allocator warmed up by earlier work), and
each BYORn cell scores cold (a fresh folder, no shared score cache). The rates take turns,
--repeats times (a ratio of two ~30 s runs moves by a few hundredths from run to run; quote the
median). One JSON line per pair, then one per throughput measurement (in a fresh process too).
Run it with nothing else on the machine: its figures are times.

--canaries times the judgement alone (`byorn scan`'s, on the same poisoned samples, 1,000 by
default, with the training settings) with its canaries and without them, back to back in fresh
processes, cold; --lesson-rules the same with the lesson rules (lesson_share, flag_copies, warm_max)
and without them, the canaries off in both. The canaries are a fixed number (8 of each kind), so
their share of the time falls as the data grows: --n takes several sizes, which take turns:

    OMP_NUM_THREADS=1 python benchmarks/cost.py --canaries --n 1000 3000 --out benchmarks/results/cost_canaries.jsonl
    OMP_NUM_THREADS=1 python benchmarks/cost.py --lesson-rules --n 3000 --out benchmarks/results/cost_lesson_rules.jsonl

Each process keeps the memory it frees, as the `byorn` command does (byorn/allocator.py);
--default-allocator measures with glibc's defaults instead, for the difference:

    OMP_NUM_THREADS=1 python benchmarks/cost.py --default-allocator --repeats 1 \
        --out benchmarks/results/cost_default_allocator.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TypeVar

import torch

from byorn.allocator import keep_freed_memory
from byorn.bench import DefenseSpec, GridConfig, run_cell
from byorn.defenses.byorn_config import JudgeConfig
from byorn.defenses.canaries import KINDS
from byorn.fileio import write_jsonl
from byorn.models import load_vlm
from byorn.scoring import checkpoint_label, score_variants, scoring_dtype
from byorn.workflow import DEMO_ATTACK, DEMO_TRAINING
from byorn.worlds import shapes

RATES = (0.1, 0.05, 0.01)
T = TypeVar("T")


def fresh(kept: bool, fn: Callable[..., T], *args) -> T:
    """fn(*args) in a new process (spawned: nothing inherited but the environment), which keeps
    the memory it frees where `kept`, as the byorn command does."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_in_child, kept, fn, *args).result()


def _in_child(kept: bool, fn: Callable[..., T], *args) -> T:
    if kept:
        keep_freed_memory()
    return fn(*args)


def pair(rate: float, epochs: float, repeat: int, scratch: Path, kept: bool) -> dict:
    """The undefended cell of one rate, then BYORn's default and the paper's recipe, back to back;
    their times and each one's ratios to the undefended."""
    grid = GridConfig([DEMO_ATTACK], [DefenseSpec("none"), DefenseSpec("byorn"), DefenseSpec("byorn_paper")], [rate],
                      [0], 1000, 200, dataclasses.replace(DEMO_TRAINING, epochs=epochs))
    cells = {spec.name: fresh(kept, run_cell, DEMO_ATTACK, spec, rate, 0, grid,
                              scratch / f"{spec.name}-{rate}-{epochs}-{repeat}") for spec in grid.defenses}
    none, byorn, paper = cells["none"], cells["byorn"], cells["byorn_paper"]
    return {"what": "fine-tuning", "attack": DEMO_ATTACK.name, "poison_rate": rate, "epochs": epochs, "repeat": repeat,
            "model": byorn["model"], "undefended_train_s": none["train_s"], "byorn_prepare_s": byorn["prepare_s"],
            "byorn_train_s": byorn["train_s"], "n_flagged": byorn["n_flagged"],
            "training_ratio": round((byorn["prepare_s"] + byorn["train_s"]) / none["train_s"], 3),
            "defense_options": byorn["defense_options"], "scoring_dtype": byorn["scoring_dtype"],
            "wall_ratio": round(byorn["wall_s"] / none["wall_s"], 3),
            "paper_prepare_s": paper["prepare_s"], "paper_train_s": paper["train_s"],
            "paper_n_flagged": paper["n_flagged"], "paper_defense_options": paper["defense_options"],
            "paper_training_ratio": round((paper["prepare_s"] + paper["train_s"]) / none["train_s"], 3),
            "asr": {"none": none["asr"], "byorn": byorn["asr"], "byorn_paper": paper["asr"]},
            "clean_score": {"none": none["clean_score"], "byorn": byorn["clean_score"],
                            "byorn_paper": paper["clean_score"]}}


# what a judgement pair compares: the judgement without (first) and with (second) what it measures
WITHOUT_AND_WITH = {
    "canaries": (JudgeConfig(canaries=0), JudgeConfig()),
    "lesson_rules": (JudgeConfig(canaries=0, lesson_share=1.0, flag_copies=False, warm_max=0),
                     JudgeConfig(canaries=0)),
}


def judged(config: JudgeConfig, n: int, scratch: Path) -> float:
    """Seconds of the judgement under `config` of the demo's poisoned set of `n` samples."""
    from byorn.attacks import build_attack, poison
    from byorn.defenses.byorn import judge

    attack = build_attack(DEMO_ATTACK.trigger, DEMO_ATTACK.target, **DEMO_ATTACK.options)
    samples, _ = poison(shapes.downstream_samples(n, 0), attack, 0.1, 0)
    vlm = load_vlm("byorn-tiny")
    started = time.perf_counter()
    judge(vlm, samples, config, scratch, DEMO_TRAINING)
    return time.perf_counter() - started


def judgement_pair(what: str, n: int, repeat: int, scratch: Path, kept: bool) -> dict:
    """The judgement without and with `what` (WITHOUT_AND_WITH), back to back, each in a fresh
    process and folder."""
    without_config, with_config = WITHOUT_AND_WITH[what]
    without = fresh(kept, judged, without_config, n, scratch / f"without-{repeat}")
    with_ = fresh(kept, judged, with_config, n, scratch / f"with-{repeat}")
    row = {"what": what.replace("_", " "), "repeat": repeat, "n": n}
    if what == "canaries":
        row["canaries_per_kind"], row["canary_kinds"] = with_config.canaries, len(KINDS)
    return {**row, "judge_s_without": round(without, 2), "judge_s_with": round(with_, 2),
            "ratio": round(with_ / without, 3)}


def throughput(n: int = 1000) -> list[dict]:
    """Samples a second: one teacher-forced pass (mean NLL) and the pretrained model's verdict's
    scores (two passes, true and grey image), at the judgement's batch size, on one thread and on
    two, in float32 and in the precision the judgement's default picks here."""
    vlm = load_vlm("byorn-tiny")
    model = checkpoint_label("byorn-tiny", vlm)
    samples = shapes.downstream_samples(n, 0)
    default = JudgeConfig()
    precisions = dict.fromkeys(["float32", default.precision])
    score_variants(vlm, samples[:default.batch_size], ["mean_nll"], default.batch_size)  # warm-up
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for precision in precisions:
            for name, variants in (("one pass (mean_nll)", ["mean_nll"]),
                                   ("first verdict (its four scores, two passes)", default.variants)):
                started = time.perf_counter()
                score_variants(vlm, samples, variants, default.batch_size, precision=precision)
                seconds = time.perf_counter() - started
                rows.append({"what": "scoring", "scores": name, "n": n, "batch_size": default.batch_size,
                             "threads": threads, "precision": precision,
                             "dtype": str(scoring_dtype(vlm, precision)).removeprefix("torch."), "model": model,
                             "seconds": round(seconds, 2), "samples_per_s": round(n / seconds, 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/cost.jsonl")
    parser.add_argument("--repeats", type=int, default=3, help="pairs per setting (default 3)")
    parser.add_argument("--default-allocator", action="store_true",
                        help="leave glibc's malloc thresholds as they are (freed memory handed back)")
    parser.add_argument("--canaries", action="store_true", help="time the judgement with and without canaries only")
    parser.add_argument("--lesson-rules", action="store_true",
                        help="time the judgement with and without the lesson rules only")
    parser.add_argument("--n", type=int, nargs="+", default=[1000],
                        help="samples judged by --canaries or --lesson-rules (several: they take turns)")
    args = parser.parse_args()
    kept = not args.default_allocator
    if args.canaries or args.lesson_rules:
        what = "canaries" if args.canaries else "lesson_rules"
        with tempfile.TemporaryDirectory() as scratch:
            rows = [judgement_pair(what, n, repeat, Path(scratch), kept) for repeat in range(args.repeats)
                    for n in args.n]
        write_jsonl(Path(args.out), rows)
        for row in rows:
            print(row)
        return
    # one epoch: the work before training weighs three times as much
    settings = [(rate, DEMO_TRAINING.epochs) for rate in RATES] + [(0.1, 1.0)]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for rate, epochs in settings:
                rows.append(pair(rate, epochs, repeat, Path(scratch), kept))
                print(rows[-1], flush=True)
    rows += fresh(kept, throughput)
    rows = [{**row, "freed_memory_kept": kept} for row in rows]
    write_jsonl(Path(args.out), rows)
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
