"""The cut the canaries choose (`-d canary_cut=S`) against the default's, on the grids' own judgements.

    python benchmarks/canary_cut.py --grid benchmarks/lessons_count.yaml runs/lessons_count/runs \
        --grid benchmarks/judgement.yaml runs/judgement/runs ... --out benchmarks/results/canary_cut.jsonl
    python benchmarks/canary_cut.py --report benchmarks/results/canary_cut.jsonl

For every cell of the shipped default (`byorn`) a grid ran, whose run folder keeps its judgement
(verdict.json, canaries.json: a `byorn bench` run's, or the one `benchmarks/canaries.py --runs`
keeps), the final verdict is cut again as `canary_cut` cuts it in `judge`: byorn/defenses/
canaries.py's `canary_cut` over the canaries' final scores, `Flagging.at` over the samples the
final verdict judged (not those warmed on), then `final`'s copies and lesson rules (at the rule's
own cut this gives back every flag the run recorded, checked for every cell). One row per cell and
cut (the default's and each share asked): the share of the real poisons flagged
and of the clean samples flagged. No model runs: the scores are those the grid's run recorded (the
canaries' to four decimals); detection only, what training on either cut would do is not measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

from byorn.attacks import build_attack, poison
from byorn.bench import GridConfig, cell_dir, cell_key, grid_cells, load_grid, read_results
from byorn.data import Sample
from byorn.defenses.byorn import final
from byorn.defenses.byorn_config import ByornConfig
from byorn.defenses.byorn_records import VERDICT_NAME, Judgement, judgement_from_record
from byorn.defenses.canaries import CANARIES_NAME, canary_cut
from byorn.defenses.warm_set import lessons
from byorn.fileio import append_jsonl
from byorn.models import load_vlm

DEFAULT = "byorn"


def cells(grid: GridConfig, runs: Path):
    """(attack spec, rate, seed, run folder) of each default cell the grid ran, as `run_grid` names them."""
    for spec, defense, rate, seed in grid_cells(grid):
        folder = cell_dir(runs, cell_key(spec.name, defense.label, rate, seed))
        if defense.label == DEFAULT and (folder / VERDICT_NAME).exists() and (folder / CANARIES_NAME).exists():
            yield spec, rate, seed, folder


def detection(flagged: list[bool], truth: list[bool]) -> dict[str, float]:
    poisons = sum(truth)
    return {"recall": round(sum(f and t for f, t in zip(flagged, truth)) / poisons, 4) if poisons else None,
            "clean_flagged": round(sum(f and not t for f, t in zip(flagged, truth)) / (len(truth) - poisons), 4),
            "n_flagged": sum(flagged)}


def flags_at(verdict: Judgement, samples: list[Sample], taught: dict, cut: float) -> list[bool]:
    """The samples' flags with the final verdict cut at `cut`, as `judge` settles them."""
    return final(verdict.cut_at(cut), verdict, samples, taught, set(verdict.vouched), ByornConfig()).flagging.flagged


def cut_by_canaries(canaries: dict, share: float) -> float:
    """The cut `canary_cut=share` takes, from canaries.json's final scores."""
    kinds = [kind for kind, result in canaries["kinds"].items() for _ in result["scores"]]
    return canary_cut(kinds, [score for result in canaries["kinds"].values() for score in result["scores"]], share)


def measure(grid_path: Path, runs: Path, shares: list[float], out: Path) -> None:
    grid = load_grid(grid_path)
    vlm = load_vlm(grid.train.model)  # the white-box attacks poison against the pretrained model
    clean_by_seed: dict[int, list[Sample]] = {}
    for spec, rate, seed, folder in cells(grid, runs):
        clean = clean_by_seed.setdefault(seed, grid.task_samples(grid.n_train, seed, "train"))
        samples, _ = poison(clean, build_attack(spec.trigger, spec.target, **spec.options), rate, seed,
                            clean_label=spec.clean_label, reference=vlm)
        record = json.loads((folder / VERDICT_NAME).read_text(encoding="utf-8"))
        verdict = judgement_from_record(record, samples, folder / VERDICT_NAME)
        canaries = json.loads((folder / CANARIES_NAME).read_text(encoding="utf-8"))
        truth = [bool(s.meta.get("is_poisoned")) for s in samples]
        # the re-cut is the judgement's own: at the rule's cut it gives back the flags the run recorded
        # (the rule flags scores over the cut, Flagging.at those at it or over)
        (rule,) = set(verdict.flagging.thresholds.values())
        taught = lessons(samples, ByornConfig().lesson_share)
        if flags_at(verdict, samples, taught, rule + 1e-9) != verdict.flagging.flagged:
            raise SystemExit(f"{folder}: re-cut at the rule's own cut, the flags differ from the recorded ones")
        base = {"grid": grid_path.name, "world": grid.world, "task": grid.task, "attack": spec.name,
                "poison_rate": rate, "seed": seed, "run_dir": str(folder)}
        append_jsonl(out, {**base, "cut": "default", **detection(verdict.flagging.flagged, truth)})
        for share in shares:
            at = cut_by_canaries(canaries, share)
            append_jsonl(out, {**base, "cut": f"canary_cut={share:g}", "cut_value": round(at, 4),
                               **detection(flags_at(verdict, samples, taught, at), truth)})
        print(f"{grid_path.name} {spec.name} {rate:g} seed {seed}: done", flush=True)


def report(path: Path) -> str:
    """Per grid and cut: the mean recall of the poisons (poisoned cells), the mean share of the clean
    samples flagged, and in how many cells each is better or worse than the default's."""
    rows = read_results(path)
    default = {(r["grid"], r["attack"], r["poison_rate"], r["seed"]): r for r in rows if r["cut"] == "default"}
    by: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        by[(r["grid"], r["cut"])].append(r)
    lines = ["| grid | cut | cells | poisons flagged (mean) | clean flagged (mean) | cells with recall below the "
             "default's | cells flagging fewer clean samples |", "|---|---|---|---|---|---|---|"]
    for (grid, cut), mine in sorted(by.items()):
        recalls = [r["recall"] for r in mine if r["recall"] is not None]
        paired = [(r, default[(r["grid"], r["attack"], r["poison_rate"], r["seed"])]) for r in mine]
        below = sum(r["recall"] is not None and r["recall"] < d["recall"] for r, d in paired)
        fewer = sum(r["clean_flagged"] < d["clean_flagged"] for r, d in paired)
        lines.append(f"| {grid} | {cut} | {len(mine)} | {statistics.mean(recalls):.3f} | "
                     f"{statistics.mean(r['clean_flagged'] for r in mine):.3f} | "
                     f"{'' if cut == 'default' else below} | {'' if cut == 'default' else fewer} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", nargs=2, action="append", metavar=("YAML", "RUNS"), default=[],
                        help="a grid config and the folder of its run folders (repeat for more grids)")
    parser.add_argument("--shares", type=float, nargs="+", default=[0.9, 0.8, 0.5],
                        help="canary_cut values to cut at")
    parser.add_argument("--out", type=Path, help="JSON lines (appended)")
    parser.add_argument("--report", type=Path, help="print the table of a results file instead")
    args = parser.parse_args()
    if args.report:
        print(report(args.report))
        return
    if not args.out or not args.grid:
        parser.error("--grid and --out, or --report")
    for grid_path, runs in args.grid:
        measure(Path(grid_path), Path(runs), args.shares, args.out)


if __name__ == "__main__":
    main()
