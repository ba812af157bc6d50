"""Do the canaries predict the judgement's recall of a real attack? And what do they cost?

    OMP_NUM_THREADS=1 python benchmarks/canaries.py benchmarks/judgement.yaml benchmarks/lessons_yesno.yaml \
        --out benchmarks/results/canaries.jsonl --runs runs/canaries
    python benchmarks/canaries.py --report benchmarks/results/canaries.jsonl --plot benchmarks/plots/canaries.png

For each data set a grid trains on (every attack, rate and seed, the clean one once; the grid's own
data, poisoning and training settings), the default judgement runs twice on the poisoned training
set, as `byorn train --defense byorn` judges it: with canaries (the default) and without. One row
per cell: the real poisons' recall (the share of them flagged in the end), each canary kind's,
the kind nearest the attack (by its target: a fixed target in words the clean answers do not all
use -> patch, one written in their words -> lookalike, injection -> token, substitution -> swap,
refusal -> refusal), how many real samples' flags differ between the two runs, and both
judgements' wall times. Resumable: cells already in --out are skipped. --runs keeps each cell's
judgement with canaries (verdict.json, canaries.json) in a run folder named as `byorn bench` names
the default's, for benchmarks/canary_cut.py to cut again.

--report reads the rows: per row the canary recall of the nearest kind against the real recall,
over the rows whose attack implants (the grid's undefended ASR in its results file at least
IMPLANTS), the rows of benchmarks/unlike_shapes.py (results/unlike_shapes.jsonl) and of
benchmarks/explore/canary_sentence.py (results/canary_sentence.jsonl; these two judge without
training, so whether their attacks implant is not measured), the mean and largest gap, and a plot
of one against the other.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

from byorn.attacks import build_attack, poison
from byorn.bench import cell_dir, cell_key, grid_cells, load_grid, read_results
from byorn.defenses.byorn import judge
from byorn.defenses.byorn_config import JudgeConfig
from byorn.defenses.byorn_records import save_verdict
from byorn.defenses.canaries import KINDS, in_own_words
from byorn.fileio import append_jsonl
from byorn.models import load_vlm
from byorn.scoring import checkpoint_label

NEAREST = {"injection": "token", "whitebox_injection": "token", "substitution": "swap", "refusal": "refusal"}
# benchmarks/unlike_shapes.py's targets: a URL sentence in none of the shapes' words, a circle -> square swap
UNLIKE_NEAREST = {"fixed": "patch", "substitution": "swap"}
IMPLANTS = 0.25  # an attack implants where the undefended model's ASR reaches this
RESULTS = Path(__file__).parent / "results"
WRITES_TO = {"judgement_flickr8k": "judgement", "judgement_flickr8k_seeds": "judgement", "judgement_seeds": "judgement",
             "judgement_seeds_low": "judgement"}  # a grid whose header sends its rows to another's results file


def cells(grid_path: Path):
    """Each data set the grid judges: every attack, rate and seed, a rate of 0 once (`grid_cells`)."""
    grid, seen = load_grid(grid_path), set()
    for spec, _, rate, seed in grid_cells(grid):
        if (spec.name, rate, seed) not in seen:
            seen.add((spec.name, rate, seed))
            yield grid, spec, rate, seed


def nearest_kind(target: str, attack, clean: list) -> str | None:
    """The canary kind nearest `attack`, whose target is named `target`: a fixed one by whose words it
    is written in (those of the `clean` samples' answers or not)."""
    if target == "fixed":
        return "lookalike" if in_own_words(attack.target.response, [s.response for s in clean]) else "patch"
    return NEAREST.get(target)


def row(grid_path: Path, grid, spec, rate: float, seed: int, runs: Path | None) -> dict:
    attack = build_attack(spec.trigger, spec.target, **spec.options)
    vlm = load_vlm(grid.train.model)
    clean = grid.task_samples(grid.n_train, seed, "train")
    poisoned, _ = poison(clean, attack, rate, seed, reference=vlm)
    train = dataclasses.replace(grid.train, seed=seed)
    truth = [bool(s.meta.get("is_poisoned")) for s in poisoned]
    runs_dir = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, config in (("with", JudgeConfig()), ("without", JudgeConfig(canaries=0))):
            kept = runs is not None and name == "with"
            folder = cell_dir(runs / grid_path.stem, cell_key(spec.name, "byorn", rate, seed)) if kept else \
                Path(scratch) / name
            started = time.perf_counter()
            judgement = judge(load_vlm(grid.train.model), poisoned, config, folder, train)
            if kept:
                save_verdict(folder, judgement, poisoned, steps_trained=0)
            runs_dir[name] = (judgement, round(time.perf_counter() - started, 1))
    hosting, alone = runs_dir["with"][0], runs_dir["without"][0]
    flagged = hosting.flagging.flagged
    report = hosting.canaries
    return {"grid": grid_path.name, "world": grid.world, "task": grid.task, "attack": spec.name,
            "target": spec.target, "poison_rate": rate, "seed": seed, "model": checkpoint_label(grid.train.model, vlm),
            "n": len(poisoned), "n_poisoned": sum(truth),
            "real_recall": round(sum(f and t for f, t in zip(flagged, truth)) / sum(truth), 4) if any(truth) else None,
            "nearest_kind": nearest_kind(spec.target, attack, clean) if any(truth) else None,
            "canary_recall": {kind: round(r.recall, 4) for kind, r in report.kinds.items()},
            "canaries_planted": {kind: r.planted for kind, r in report.kinds.items()},
            "canary_answers": {kind: r.answers for kind, r in report.kinds.items()},
            "canaries_left_out": report.left_out,
            "flags_differ": sum(a != b for a, b in zip(flagged, alone.flagging.flagged)),
            "judge_s_with": runs_dir["with"][1], "judge_s_without": runs_dir["without"][1]}


def undefended_asr(cell: dict) -> float | None:
    """The grid's undefended ASR for this cell, from its results file (None if not there)."""
    name = Path(cell["grid"]).stem
    lesson = name.startswith("lessons_")
    path = RESULTS / f"{'lessons' if lesson else WRITES_TO.get(name, name)}.jsonl"
    if not path.exists():
        return None
    for found in read_results(path):
        same = (found["attack"], found["poison_rate"], found["seed"], found.get("world", "shapes")) == \
            (cell["attack"], cell["poison_rate"], cell["seed"], cell["world"])
        if same and found["defense"] == "none" and (not lesson or found.get("lesson") == cell["task"]):
            return found["asr"]
    return None


def _rows(path: Path) -> list[dict]:
    """The JSON lines of `path`; none if it is not there."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if path.exists() else []


def report(path: Path, plot: Path | None) -> dict:
    rows = _rows(path)
    pairs = []
    for r in rows:
        asr = undefended_asr(r)
        kind = r["nearest_kind"]
        if asr is None or asr < IMPLANTS or r["real_recall"] is None or kind not in r["canary_recall"]:
            continue
        pairs.append({"cell": f"{r['grid']} {r['attack']} {r['poison_rate']} seed {r['seed']}", "kind": kind,
                      "canary": r["canary_recall"][kind], "real": r["real_recall"],
                      "gap": round(abs(r["canary_recall"][kind] - r["real_recall"]), 4)})
    for r in _rows(RESULTS / "unlike_shapes.jsonl"):  # benchmarks/unlike_shapes.py: a patch and a word, two targets
        kind = UNLIKE_NEAREST[r["target"]]
        real, canary = r["default_poisons"] / r["n_poisoned"], r["default_canary_recall"][kind]
        pairs.append({"cell": f"unlike_shapes {r['target']} seed {r['seed']}", "kind": kind, "canary": canary,
                      "real": real, "gap": round(abs(canary - real), 4)})
    for r in _rows(RESULTS / "canary_sentence.jsonl"):  # benchmarks/explore/canary_sentence.py: Flickr8k's targets
        canary = r["canary_recall"][r["nearest_kind"]]
        pairs.append({"cell": f"canary_sentence {r['target']!r} {r['poison_rate']}", "kind": r["nearest_kind"],
                      "canary": canary, "real": r["real_recall"], "gap": round(abs(canary - r["real_recall"]), 4)})
    summary = {"cells": len(pairs), "mean_gap": round(sum(p["gap"] for p in pairs) / max(len(pairs), 1), 4),
               "largest_gap": max((p["gap"] for p in pairs), default=None),
               "flags_differ_max_share": max((r["flags_differ"] / r["n"] for r in rows), default=None),
               "time_ratio_median": round(statistics.median(r["judge_s_with"] / r["judge_s_without"] for r in rows), 3)
               if rows else None,
               "pairs": pairs}
    if plot is not None and pairs:
        _plot(pairs, plot)
    return summary


def _plot(pairs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    for kind, colour in zip(KINDS, ("#4477aa", "#66ccee", "#228833", "#cc3311", "#aa3377")):
        chosen = [p for p in pairs if p["kind"] == kind]
        axes.scatter([p["real"] for p in chosen], [p["canary"] for p in chosen], label=kind, color=colour, alpha=0.7)
    axes.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1)
    axes.set_xlabel("real poisons flagged (recall)")
    axes.set_ylabel("canaries of the nearest kind flagged")
    axes.set_xlim(-0.05, 1.05)
    axes.set_ylim(-0.05, 1.05)
    axes.legend(fontsize=8, title="kind", title_fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grids", nargs="*", type=Path, help="grid YAML files whose poisoned cells to judge")
    parser.add_argument("--out", type=Path, help="JSON lines, one per cell (appended; cells already there skipped)")
    parser.add_argument("--runs", type=Path, help="keep each cell's judgement with canaries under RUNS/<grid name>/ "
                        "(for benchmarks/canary_cut.py)")
    parser.add_argument("--report", type=Path, help="summarise a results file instead")
    parser.add_argument("--plot", type=Path, help="with --report: the plot of canary against real recall")
    args = parser.parse_args()
    if args.report:
        print(json.dumps(report(args.report, args.plot), indent=1))
        return
    done = set()
    if args.out and args.out.exists():
        done = {(r["grid"], r["attack"], r["poison_rate"], r["seed"])
                for r in map(json.loads, args.out.read_text(encoding="utf-8").splitlines())}
    for grid_path in args.grids:
        for grid, spec, rate, seed in cells(grid_path):
            if (grid_path.name, spec.name, rate, seed) in done:
                continue
            result = row(grid_path, grid, spec, rate, seed, args.runs)
            append_jsonl(args.out, result)
            print(json.dumps({k: v for k, v in result.items() if k != "canaries_left_out"}), flush=True)


if __name__ == "__main__":
    main()
