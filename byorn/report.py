"""Benchmark reports: Markdown tables (mean ± std over seeds) and PNG plots from results.jsonl.

`byorn report DIR` reads DIR/results.jsonl and writes DIR/report.md and DIR/plots/*.png:
score histograms (clean vs poisoned training samples, per attack), ASR per defense per attack,
clean score against ASR (BYORn's threshold variants as a frontier, the baselines as points) and
the cost of each defense relative to no defense in the same run.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from byorn.fileio import atomic_write, atomic_write_text

NONE = "none"
SCORES_NAME = "scores.jsonl"  # per benchmark cell: each training sample's suspicion under the defense
REPORT_METRICS = ("asr", "clean_score", "one_modality_asr", "detect_auroc", "detect_precision", "detect_recall",
                  "n_flagged", "train_s", "wall_s", "peak_rss_mb")


def _digits(metric: str) -> int:
    """Counts print as counts, times and memory to a tenth, rates and scores to three places."""
    return 0 if metric.startswith("n_") else 1 if metric.endswith(("_s", "_mb")) else 3


def _is_finite(value: object) -> bool:
    """A number that is finite (a metric left undefined is NaN or null)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _finite(values: list) -> list[float]:
    return [v for v in values if _is_finite(v)]


def _mean_std(values: list[float], digits: int) -> str:
    values = _finite(values)
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _mean(values: list[float]) -> float:
    values = _finite(values)
    return statistics.mean(values) if values else math.nan


def _by(rows: Sequence[dict], *keys: str) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in keys)].append(row)
    return groups


def results_table(rows: Sequence[dict], metrics: Sequence[str]) -> str:
    """One line per (attack, defense, poison_rate), metrics aggregated over seeds; a metric a
    row does not have is left blank rather than counted as zero."""
    groups = _by(rows, "attack", "defense", "poison_rate")
    header = ["attack", "defense", "poison rate", "seeds", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (attack, defense, rate), cell in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[0][2])):
        values = [_mean_std([r[m] for r in cell if m in r], _digits(m)) if any(m in r for r in cell) else ""
                  for m in metrics]
        lines.append("| " + " | ".join([attack, defense, f"{rate:g}", str(len(cell)), *values]) + " |")
    return "\n".join(lines)


HEADLINE_DEFENSES = ("none", "onion", "bye", "score_drop", "byorn", "byorn_paper")


def _asr_and_clean(rows: dict[int, dict], oracle: dict[int, dict]) -> str:
    """'ASR mean ± std (clean % of the same seed's oracle)' of one defense's cells, seed -> row."""
    if not rows:
        return ""
    clean = [100 * row["clean_score"] / oracle[s]["clean_score"] for s, row in rows.items()
             if "clean_score" in row and s in oracle and oracle[s]["clean_score"]]
    asr = _mean_std([row["asr"] for row in rows.values()], 2)
    return f"{asr} ({_mean(clean):.0f} %)" if clean else asr


def headline_table(rows: Sequence[dict], defenses: Sequence[str] = HEADLINE_DEFENSES) -> str:
    """Per attack and poison rate: each defense's ASR (mean ± std over seeds) and, in brackets, its
    clean score as a percentage of the oracle's in the same seed (seed mean), so that an ASR bought by
    wrecking the model shows; then BYORn's cost, (preparation + fine-tuning) over the undefended
    fine-tuning of the same seed. A defense with no cell there is left blank."""
    header = ["attack", "poison rate", "seeds", *(f"ASR {d} (clean % of oracle)" for d in defenses),
              "BYORn cost (x undefended)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    groups = _by(rows, "attack", "poison_rate")
    for (attack, rate), cell in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        by_seed: dict[str, dict[int, dict]] = defaultdict(dict)  # defense -> seed -> row
        for row in cell:
            by_seed[row["defense"]][row["seed"]] = row
        none, byorn = by_seed["none"], by_seed["byorn"]
        cost = [(byorn[s].get("prepare_s", 0.0) + byorn[s]["train_s"]) / none[s]["train_s"] for s in byorn
                if s in none and none[s].get("train_s") and own_cost(none[s]) and own_cost(byorn[s])]
        lines.append("| " + " | ".join([attack, f"{rate:g}", str(len({r["seed"] for r in cell})),
                                         *(_asr_and_clean(by_seed[d], by_seed["oracle"]) for d in defenses),
                                         f"{_mean(cost):.2f}" if cost else ""]) + " |")
    return "\n".join(lines)


def _is_variant(defense: str) -> bool:
    """A point of BYORn's own sweep: byorn with or without changed options; the paper's recipe
    (byorn_paper) is a defense of its own."""
    return defense == "byorn" or defense.startswith("byorn(")


def own_cost(row: dict) -> bool:
    """Whether a cell's times are its own work: not where it loaded a fine-tune an earlier cell of
    its grid had run (BYE's probe, a shared oracle, a judgement's warm-up: byorn.trained)."""
    return not row.get("loaded_from")


def cost_ratios(rows: Sequence[dict]) -> dict[str, dict[str, float]]:
    """Per defense, the mean over cells of its time divided by the undefended cell's time for the
    same attack, rate and seed: `training` counts the defense's preparation (scoring, a probe
    fine-tune) plus the fine-tuning loop, `wall` the whole cell. Cells whose times are not their
    own (`own_cost`) are left out."""
    none = {(r["attack"], r["poison_rate"], r["seed"]): r for r in rows if r["defense"] == NONE and own_cost(r)}
    ratios: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        base = none.get((row["attack"], row["poison_rate"], row["seed"]))
        if base is None or not own_cost(row):
            continue
        if _is_finite(row.get("train_s")) and _is_finite(base.get("train_s")) and base["train_s"]:
            spent = (row.get("prepare_s") or 0.0) + row["train_s"]
            ratios[row["defense"]]["training"].append(spent / base["train_s"])
        if _is_finite(row.get("wall_s")) and _is_finite(base.get("wall_s")) and base["wall_s"]:
            ratios[row["defense"]]["wall"].append(row["wall_s"] / base["wall_s"])
    return {d: {k: _mean(v) for k, v in parts.items()} for d, parts in ratios.items()}


def cost_table(rows: Sequence[dict]) -> str:
    """`cost_ratios` per defense; a defense none of whose cells did its own work says so."""
    ratios = cost_ratios(rows)
    lines = ["| defense | (preparation + fine-tuning) / undefended fine-tuning | wall time / undefended |",
             "|---|---|---|"]
    borrowed = {r["defense"] for r in rows} - {r["defense"] for r in rows if own_cost(r)}
    for defense in sorted(set(ratios) | borrowed):
        if defense in borrowed:
            lines.append(f"| {defense} | not measured: every cell loaded a fine-tune an earlier cell ran | |")
            continue
        parts = ratios[defense]
        cells = [f"{parts[k]:.2f}x" if k in parts and not math.isnan(parts[k]) else "" for k in ("training", "wall")]
        lines.append(f"| {defense} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- plots -------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=110))
    _pyplot().close(figure)
    return path


def _grid(n: int, width: float = 3.2, height: float = 2.6):
    columns = min(n, 4)
    rows = math.ceil(n / columns)
    figure, axes = _pyplot().subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    for extra in axes.flat[n:]:
        extra.set_visible(False)
    return figure, list(axes.flat)


def plot_asr_by_defense(rows: Sequence[dict], rate: float, path: Path) -> Path:
    """Grouped bars: mean ASR per attack (groups) and defense (bars) at one poison rate."""
    chosen = [r for r in rows if r["poison_rate"] == rate]
    attacks = sorted({r["attack"] for r in chosen})
    defenses = sorted({r["defense"] for r in chosen}, key=lambda d: (d != NONE, d))
    cells = _by(chosen, "attack", "defense")
    figure, axes = _pyplot().subplots(figsize=(max(6.0, 1.1 * len(attacks) * max(len(defenses), 1) / 3), 3.6))
    width = 0.8 / max(len(defenses), 1)
    for k, defense in enumerate(defenses):
        values = [_mean([r["asr"] for r in cells.get((a, defense), [])]) for a in attacks]
        axes.bar([i + k * width for i in range(len(attacks))], values, width, label=defense)
    axes.set_xticks([i + 0.4 - width / 2 for i in range(len(attacks))], [a.split("(")[0] for a in attacks],
                    rotation=30, ha="right", fontsize=7)
    axes.set_ylabel(f"ASR at {rate:g} poisoning")
    axes.set_ylim(0, 1.05)
    axes.legend(fontsize=6, ncol=min(len(defenses), 4))
    figure.tight_layout()
    return _save(figure, path)


def plot_frontier(rows: Sequence[dict], rate: float, path: Path) -> Path:
    """Clean score against ASR per attack: every BYORn variant (a threshold sweep) as a line of
    points sorted by clean score, every other defense as a labelled marker."""
    chosen = [r for r in rows if r["poison_rate"] == rate]
    attacks = sorted({r["attack"] for r in chosen})
    figure, axes = _grid(len(attacks))
    for ax, attack in zip(axes, attacks):
        cells = _by([r for r in chosen if r["attack"] == attack], "defense")
        points = {d: (_mean([r["clean_score"] for r in c]), _mean([r["asr"] for r in c])) for (d,), c in cells.items()}
        sweep = sorted(p for d, p in points.items() if _is_variant(d))
        if sweep:
            ax.plot(*zip(*sweep), "o-", color="#228833", label="BYORn (variants)", markersize=4)
        for defense, (clean, asr) in points.items():
            if not _is_variant(defense):
                ax.plot(clean, asr, "s", markersize=5, label=defense)
        ax.set_title(attack.split("(")[0], fontsize=8)
        ax.set_xlabel("clean score", fontsize=7)
        ax.set_ylabel("ASR", fontsize=7)
        ax.set_ylim(-0.05, 1.05)
        ax.legend(fontsize=5)
    figure.tight_layout()
    return _save(figure, path)


def plot_cost(rows: Sequence[dict], path: Path) -> Path:
    ratios = cost_ratios(rows)
    defenses = sorted(ratios)
    figure, axes = _pyplot().subplots(figsize=(5, 3))
    axes.bar(defenses, [ratios[d].get("training", math.nan) for d in defenses], color="#4477aa")
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.set_ylabel("(prepare + train) / undefended train")
    axes.tick_params(axis="x", labelsize=7, rotation=20)
    figure.tight_layout()
    return _save(figure, path)


def _cell_scores(run_dir: Path) -> tuple[list[float], list[float]] | None:
    """(clean, poisoned) scores from a cell's scores.jsonl and poison manifest; None when absent."""
    scores, manifest = Path(run_dir) / SCORES_NAME, Path(run_dir) / "poison_manifest.jsonl"
    if not (scores.exists() and manifest.exists()):
        return None
    records = map(json.loads, manifest.read_text(encoding="utf-8").splitlines())
    poisoned = {r["id"] for r in records if not r["negative"]}
    clean, bad = [], []
    for record in map(json.loads, scores.read_text(encoding="utf-8").splitlines()):
        (bad if record["id"] in poisoned else clean).append(record["score"])
    return clean, bad


def plot_score_histograms(rows: Sequence[dict], defense: str, rate: float, path: Path) -> Path | None:
    """Per attack, the score histogram of clean and poisoned training samples (first seed's cell
    of `defense` at `rate`, read from its run directory). None when no cell kept its scores."""
    found = {}
    for row in sorted(rows, key=lambda r: r["seed"]):
        wanted = row["defense"] == defense and row["poison_rate"] == rate and row["attack"] not in found
        if wanted and (scores := _cell_scores(Path(row.get("run_dir", "")))) is not None:
            found[row["attack"]] = scores
    if not found:
        return None
    figure, axes = _grid(len(found))
    for ax, (attack, (clean, bad)) in zip(axes, sorted(found.items())):
        bins = 40
        ax.hist(clean, bins=bins, alpha=0.6, label=f"clean ({len(clean)})", color="#4477aa")
        ax.hist(bad, bins=bins, alpha=0.7, label=f"poisoned ({len(bad)})", color="#cc3311")
        ax.set_title(attack.split("(")[0], fontsize=8)
        ax.legend(fontsize=6)
    figure.tight_layout()
    return _save(figure, path)


def write_plots(rows: Sequence[dict], plots_dir: Path) -> list[Path]:
    """Every plot the rows support, at each poison rate they have."""
    made = []
    for rate in sorted({r["poison_rate"] for r in rows}, reverse=True):
        tag = f"{rate:g}".replace(".", "p")
        made += [plot_asr_by_defense(rows, rate, plots_dir / f"asr_by_defense_{tag}.png"),
                 plot_frontier(rows, rate, plots_dir / f"clean_vs_asr_{tag}.png")]
        if (histograms := plot_score_histograms(rows, "byorn", rate, plots_dir / f"scores_{tag}.png")) is not None:
            made.append(histograms)
    if cost_ratios(rows):
        made.append(plot_cost(rows, plots_dir / "cost.png"))
    return made


def write_report(rows: Sequence[dict], out_dir: str | Path, title: str = "Benchmark report") -> Path:
    """out_dir/report.md (tables) and out_dir/plots/*.png; returns the report's path."""
    out_dir = Path(out_dir)
    plots = write_plots(rows, out_dir / "plots")
    metrics = [m for m in REPORT_METRICS if any(m in r for r in rows)]
    parts = [f"# {title}", "", f"{len(rows)} cells. Mean ± std over seeds.", "", results_table(rows, metrics), ""]
    if cost_ratios(rows):
        parts += ["## Cost relative to no defense", "", cost_table(rows), ""]
    parts += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots] + [""]
    atomic_write_text(out_dir / "report.md", "\n".join(parts))
    return out_dir / "report.md"
