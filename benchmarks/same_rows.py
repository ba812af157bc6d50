"""Compare two benchmark results files cell by cell, apart from timings and run folders.

    python benchmarks/same_rows.py BEFORE.jsonl AFTER.jsonl

Exit status 0 when every cell of either file is in the other with the same values; otherwise
each difference is printed. For checking that a refactoring changed no result
(benchmarks/explore/refactor_check.yaml says how).
"""

from __future__ import annotations

import json
import sys

from byorn.bench import cell_key, read_results

# What a rerun changes by itself: wall-clock times, memory, where the cell's files went (or the model it
# loaded came from); and the grid's setting key, which rows written before it was recorded lack.
NOT_COMPARED = {"wall_s", "train_s", "prepare_s", "eval_s", "peak_rss_mb", "run_dir", "loaded_from", "setting"}


def cells(path: str) -> dict[str, dict]:
    return {cell_key(r["attack"], r["defense"], r["poison_rate"], r["seed"]): compared(r) for r in read_results(path)}


def compared(row: dict) -> dict:
    """The row's values a rerun must reproduce, as JSON text (so that NaN equals NaN); a defense's
    cache_dir says where a grid shared its work, not how the defense judged."""
    kept = {k: v for k, v in row.items() if k not in NOT_COMPARED}
    if isinstance(kept.get("defense_options"), dict):
        kept["defense_options"] = {k: v for k, v in kept["defense_options"].items() if k != "cache_dir"}
    return {k: json.dumps(v, sort_keys=True) for k, v in kept.items()}


def main(before_path: str, after_path: str) -> int:
    before, after = cells(before_path), cells(after_path)
    differences = [f"{key}: only in {before_path if key in before else after_path}"
                   for key in sorted(set(before) ^ set(after))]
    for key in sorted(set(before) & set(after)):
        changed = {k: (before[key].get(k), after[key].get(k)) for k in set(before[key]) | set(after[key])
                   if before[key].get(k) != after[key].get(k)}
        if changed:
            differences.append(f"{key}: {changed}")
    print("\n".join(differences) or f"{len(before)} cells, the same apart from timings")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
