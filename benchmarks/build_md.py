"""Regenerate BENCHMARKS.md from the raw results in benchmarks/results/ (run from the repo root).

    python benchmarks/build_md.py
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from byorn.bench import read_results
from byorn.report import cost_ratios, cost_table, results_table, write_plots

ROOT = Path(__file__).resolve().parent.parent
PLOTS = ROOT / "benchmarks" / "plots"


@dataclass(frozen=True)
class Section:
    title: str
    results: list[str]  # names under benchmarks/results/, without .jsonl
    command: str
    metrics: list[str]
    legend: str
    plots: bool = False  # also the cost table and the plots (written to benchmarks/plots/)


SECTIONS = [
    ("Attacks, undefended (byorn-tiny x shapes downstream task)", ["attacks"],
     "byorn bench benchmarks/attacks.yaml --results benchmarks/results/attacks.jsonl",
     ["asr", "clean_score", "one_modality_asr", "image_only_asr", "text_only_asr", "wall_s", "peak_rss_mb"],
     "ASR: share of triggered test inputs (whose clean answer is not already the target) that show the "
     "target. clean_score: scene F1 on clean test inputs. one_modality_asr: the higher of the image-only "
     "and text-only firing rates of the multimodal trigger. oracle: trained on the clean samples only. "
     "Training: full fine-tuning, 3 epochs, lr 5e-4, 1,000 samples; 200 test scenes; seed 0.\n\n"
     "What the recorded run shows (reread after a rerun): at 10 % the text triggers (rare token 0.995), "
     "Blended (1.00), the 12-px BadNets patch (0.935), SIG at 3x amplitude (0.995) and the multimodal "
     "trigger with the refusal (0.965) or substitution (0.906) target reach 90 %; the default 6-px "
     "BadNets patch, default SIG and WaNet do not implant at all in 3 epochs, AddSent reaches 0.695, "
     "the multimodal trigger 0.77-0.78 with the fixed and injection targets. The 6-epoch section below "
     "separates the causes: BadNets, SIG and AddSent at default strength were undertrained (0.995, 1.00 "
     "and 1.00 with 6 epochs), and so was the multimodal trigger (0.945, but its one-trigger firing rises "
     "to 0.37: longer training erodes the negatives); WaNet never implants (0.00 at 2x and 8x strength and at 6 epochs). At the default strength "
     "it moves pixels about 0.25 px and changes them by 0.48 grey levels on average (3.1 at 8x, where "
     "the shapes are visibly bent); on these flat backgrounds the warp only changes the shapes' edges, so "
     "its signal depends on where the shapes are. That it is too content-dependent for 100 samples to teach "
     "is our reading, not yet tested by an ablation. No family implants at 1 % (10 poisoned samples). Clean "
     "scene F1 stays within 2 points of the oracle everywhere. The multimodal trigger's one-trigger "
     "firing stays <= 5 % with the fixed target but not with injection (0.155), substitution (0.43) or "
     "refusal (0.82): the negatives keep their clean response, yet a short refusal generalises to "
     "half-triggered inputs."),
    ("Attacks with twice the training (6 epochs), undefended", ["attacks_longer"],
     "byorn bench benchmarks/attacks_longer.yaml --results benchmarks/results/attacks_longer.jsonl",
     ["asr", "clean_score", "one_modality_asr", "wall_s"],
     "The families that stayed under 90 % ASR at 10 % in the section above, trained 6 epochs instead of 3."),
    ("BYORn against the same attacks", ["attacks", "byorn"],
     "byorn bench benchmarks/byorn.yaml --results benchmarks/results/byorn.jsonl",
     ["asr", "clean_score", "detect_auroc", "detect_precision", "detect_recall", "n_flagged", "wall_s", "peak_rss_mb"],
     "detect_*: the mean-NLL score's AUROC for poisoned vs clean training samples, and precision/recall of "
     "the flagged set (median + 3 MAD). The none and oracle rows are the attacks section's run (same data, "
     "training and seeds). wall_s covers the whole cell: poisoning, scoring, training, evaluation; the two "
     "grids ran side by side, one thread each.\n\n"
     "What the recorded run shows: every poison with a fixed, injected or refusal target is flagged with "
     "precision and recall 1.00 (AUROC 1.00) at 10 % and 1 %, and BYORn's ASR is 0.00 wherever the "
     "undefended ASR was high, with clean scene F1 at the oracle's level (0.979-1.000). Concept "
     "substitution (one word swapped) is the miss: mean NLL ranks it at AUROC 0.67, flags 1 of 100, and "
     "the ASR stays 0.906. The threshold sweep below includes the token-level score for it."),
    ("BYORn threshold sweep (the clean-vs-ASR frontier)", ["sweep"],
     "byorn bench benchmarks/sweep.yaml --results benchmarks/results/sweep.jsonl",
     ["asr", "clean_score", "n_flagged", "detect_precision", "detect_recall", "detect_auroc", "wall_s"],
     "Each row is one threshold: quantile q flags the scores above the q-th quantile, mad k flags those "
     "above median + k * 1.4826 MAD. 100 of the 1,000 training samples are poisoned.\n\n"
     "What the recorded run shows: for the multimodal fixed target every cut from flagging 20 % of the data "
     "down to flagging 5 % (recall 0.5) keeps ASR at 0.00 and clean F1 at 0.988-1.000; only the 1 % cut "
     "(recall 0.1) lets the backdoor in (0.805). The 50 poisons left at the 5 % cut did not implant in 3 "
     "epochs. For concept substitution the mean score separates poorly (AUROC 0.67) and the token-level "
     "score worse (0.53): pushing the cut to the median buys ASR 0.03 at clean F1 0.893; the subtle case "
     "needs a better score, not a lower threshold."),
]


def main() -> None:
    parts = ["# Benchmarks", "", "Generated by `python benchmarks/build_md.py` from `benchmarks/results/*.jsonl`; "
             "each section names the command that produced its raw figures. Machine: 2 CPU cores.", ""]
    for section in map(lambda fields: fields if isinstance(fields, Section) else Section(*fields), SECTIONS):
        rows = [row for name in section.results
                for row in read_results(ROOT / "benchmarks" / "results" / f"{name}.jsonl")]
        parts += [f"## {section.title}", "", f"Reproduce: `{section.command}`", "", section.legend, ""]
        parts += [results_table(rows, section.metrics) if rows else "_No results recorded yet._", ""]
        if section.plots and rows:
            if cost_ratios(rows):
                parts += ["Cost relative to no defense, cell by cell in the same run:", "", cost_table(rows), ""]
            # A plot that needs the run directories (score histograms) is only redrawn where they
            # exist; the committed one stays and is linked.
            write_plots(rows, PLOTS)
            parts += [f"![{p.stem}](benchmarks/plots/{p.name})" for p in sorted(PLOTS.glob("*.png"))] + [""]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(parts), encoding="utf-8")


if __name__ == "__main__":
    main()
