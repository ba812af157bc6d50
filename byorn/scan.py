"""`byorn scan`: rank a data set by how implausible each response is (BYORn's judgement: the
pretrained model, then the warmed reference), before any training, and show where BYORn's
threshold would cut."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from byorn.config import TrainConfig
from byorn.data import Sample
from byorn.defenses.byorn import judge
from byorn.defenses.byorn_config import JudgeConfig
from byorn.defenses.byorn_records import Judgement
from byorn.defenses.canaries import CANARIES_NAME
from byorn.distributed import barrier, is_main
from byorn.fileio import atomic_write, atomic_write_text, write_jsonl
from byorn.models.hf import VLM
from byorn.outdir import finish_output, start_output
from byorn.review import REVIEW_NAME, write_review

WRITTEN = ("scan.jsonl", "scan.csv", "scores.png", REVIEW_NAME, CANARIES_NAME)  # each replaced whole by a new run
FIELDS = ("rank", "id", "score", "flagged", "threshold", "group", "instruction", "response")


@dataclass(frozen=True)
class ScanRow:
    rank: int
    id: str
    score: float
    flagged: bool
    threshold: float
    group: str
    instruction: str
    response: str


def scan(vlm: VLM, samples: Sequence[Sample], config: JudgeConfig, out_dir: str | Path,
         train: TrainConfig | None = None) -> list[ScanRow]:
    """Score, flag and rank; writes scan.jsonl, scan.csv, scores.png and review.html (the page to
    review what was flagged, byorn.review) to `out_dir`. train: the warm-up's settings (the
    fine-tuning the data is for; TrainConfig's defaults if None)."""
    if is_main():  # under `accelerate launch` every process judges (each scores its share); one writes
        start_output(out_dir, "scan", WRITTEN, [s.image for s in samples if isinstance(s.image, Path)])
    barrier()
    out_dir = Path(out_dir)
    scores, flagging = (judgement := judge(vlm, samples, config, out_dir, train)).scores, judgement.flagging
    groups = flagging.groups
    order = sorted(range(len(samples)), key=lambda i: -scores[i])
    rows = [ScanRow(rank, samples[i].id, scores[i], flagging.flagged[i], flagging.thresholds[groups[i]], groups[i],
                    samples[i].instruction, samples[i].response) for rank, i in enumerate(order, start=1)]
    if is_main():
        _write(out_dir, rows, samples, config, judgement)
    return rows


def _write(out_dir: Path, rows: list[ScanRow], samples: Sequence[Sample], config: JudgeConfig,
           judgement: Judgement) -> None:
    """scan.jsonl, scan.csv, scores.png and review.html, then the folder marked finished."""
    scores, flagging = judgement.scores, judgement.flagging
    write_jsonl(out_dir / "scan.jsonl", (vars(r) for r in rows), ensure_ascii=False)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows({k: _spreadsheet_text(v) for k, v in vars(r).items()} for r in rows)
    atomic_write_text(out_dir / "scan.csv", buffer.getvalue())
    score = f"{config.variant}, then {config.rejudge_variant} (MAD units)" if config.rejudge else config.variant
    plot_histogram(scores, flagging.thresholds, score, out_dir / "scores.png")
    write_review(out_dir / REVIEW_NAME, samples, scores, flagging.flagged, groups=flagging.groups,
                 thresholds=flagging.thresholds, title=f"byorn scan: {out_dir.name}", judgement=judgement)
    finish_output(out_dir)


# what a spreadsheet reads as the start of a formula, in ASCII and full width (Excel and others
# fold ＝ to =)
FORMULA_STARTS = ("=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def _spreadsheet_text(value: object) -> object:
    """A cell a spreadsheet shows as text: untrusted text starting with =, +, -, @ (full width
    too, and after leading spaces, tabs or line breaks, which spreadsheets skip) would be run as a
    formula when scan.csv is opened; a quote in front stops it."""
    if isinstance(value, str) and (value[:1] in ("\t", "\r") or value.lstrip().startswith(FORMULA_STARTS)):
        return "'" + value
    return value


def plot_histogram(scores: Sequence[float], thresholds: dict[str, float], variant: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.hist(scores, bins=_bins(scores), color="#4477aa")
    for group, value in thresholds.items():
        axes.axvline(value, color="#cc3311", linestyle="--", label=f"threshold {group}: {value:.2f}")
    axes.set_xlabel(f"implausibility ({variant})")
    axes.set_ylabel("samples")
    axes.legend(fontsize=7)
    figure.tight_layout()
    atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=120))
    plt.close(figure)


def _bins(scores: Sequence[float]) -> int | list[float]:
    """50 bins, or one bin around scores too close together to split: matplotlib cannot cut a
    range of a few ulps into 50 ("Too many bins for data range")."""
    finite = [s for s in scores if math.isfinite(s)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 0.0)
    if high - low > 1e-9 * max(1.0, abs(low), abs(high)):
        return 50
    return [low - 0.5, high + 0.5]
