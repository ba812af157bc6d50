"""Markdown tables from benchmark results: mean ± std over seeds per (attack, defense, rate)."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence


def _digits(metric: str) -> int:
    """Counts print as counts, times and memory to a tenth, rates and scores to three places."""
    return 0 if metric.startswith("n_") else 1 if metric in ("wall_s", "peak_rss_mb") else 3


def _mean_std(values: list[float], digits: int) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def results_table(rows: Sequence[dict], metrics: Sequence[str]) -> str:
    """One line per (attack, defense, poison_rate), metrics aggregated over seeds; a metric a
    row does not have is left blank rather than counted as zero."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["attack"], row["defense"], row["poison_rate"])].append(row)
    header = ["attack", "defense", "poison rate", "seeds", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (attack, defense, rate), cell in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[0][2])):
        values = [_mean_std([r[m] for r in cell if m in r], _digits(m)) if any(m in r for r in cell) else ""
                  for m in metrics]
        lines.append("| " + " | ".join([attack, defense, f"{rate:g}", str(len(cell)), *values]) + " |")
    return "\n".join(lines)
