"""Regenerate BENCHMARKS.md from the raw results in benchmarks/results/ (run from the repo root).

    python benchmarks/build_md.py

Figures come from the results; words come from Markdown files under benchmarks/findings/, one per
section (plus intro.md and unfingerprinted.md), so that no measured figure is typed into this
script. A findings file's first line names every file under benchmarks/results/ whose figures its
words quote or draw on, each with the first 12 hex digits of its sha256 (`sha256sum FILE | cut -c1-12`):

    written on: attacks.jsonl sha256=0123456789ab byorn.jsonl sha256=ba9876543210

A section's file must name the section's own results among them. When a named file has changed
since, the build stops, naming both files, instead of printing words beside figures they no longer
describe: reread the words against the new results, correct them, then update the hash. Words that
quote no measured figure (a pure legend, the introduction) say so explicitly, and are not checked:

    written on: no results

The rest of the file is copied into BENCHMARKS.md as it stands.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from byorn.bench import options_record, read_results
from byorn.defenses import DEFENSES
from byorn.models import CACHED_MODELS, cached_model_ready, load_vlm
from byorn.report import cost_ratios, cost_table, headline_table, results_table, write_plots
from byorn.scoring import model_fingerprint

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PLOTS = ROOT / "benchmarks" / "plots"
FINDINGS = ROOT / "benchmarks" / "findings"

# A findings file's first line, matched whole so that a mistyped name or hash stops the build
# instead of going unchecked.
WRITTEN_ON = re.compile(r"written on: (no results|\S+\.jsonl? sha256=[0-9a-f]{12}( \S+\.jsonl? sha256=[0-9a-f]{12})*)")


@dataclass(frozen=True)
class Section:
    title: str
    results: list[str]  # names under benchmarks/results/, without .jsonl
    command: str
    metrics: list[str]
    findings: str  # its file under benchmarks/findings/: every word printed between the command and the figures
    plots: bool = False  # also the plots (written to benchmarks/plots/)
    costs: bool = False  # also the table of each defense's time relative to no defense
    quality: str = ""  # a `byorn quality --out` file under benchmarks/results/ to quote first
    quality_command: str = ""
    world: str = ""  # only the rows of this world (a results file may hold several)
    scores: str = ""  # a judgement_scores.py results file: its table of AUROCs and cuts, this world's rows
    warmed_scores: str = ""  # the same, from judgement_scores.py --warmed (the second verdict)
    # Describes the shipped checkpoints and defaults: a row from another checkpoint, or one that
    # recorded other defaults than today's for the options its label leaves out, stops the build.
    current: bool = False
    table: str = "results"  # how its rows are laid out: results (one per cell), probe, cost (benchmarks/cost.py)


def bench_command(grid: str) -> str:
    """How a section's grid reruns: benchmarks/GRID.yaml into benchmarks/results/GRID.jsonl."""
    return f"byorn bench benchmarks/{grid}.yaml --out runs/{grid} --results benchmarks/results/{grid}.jsonl"


SECTIONS = [
    Section("The default judgement: shapes, new answer style, one-word swaps", ["judgement"],
            "byorn bench benchmarks/judgement.yaml --out runs/judgement --results benchmarks/results/judgement.jsonl "
            "--shard 0/2 (and --shard 1/2 beside it, OMP_NUM_THREADS=1 each), then the same with "
            "benchmarks/judgement_seeds.yaml and benchmarks/judgement_seeds_low.yaml; scores before training: "
            "python benchmarks/judgement_scores.py benchmarks/judgement.yaml",
            ["asr", "clean_score", "detect_auroc", "detect_precision", "detect_recall", "n_flagged", "prepare_s",
             "train_s", "wall_s"],
            "judgement_shapes.md", current=True, costs=True, world="shapes", scores="judgement_scores",
            warmed_scores="judgement_scores_warmed"),
    Section("The default judgement: real photographs (Flickr8k)", ["judgement"],
            "byorn bench benchmarks/judgement_flickr8k.yaml --out runs/judgement_flickr8k --results "
            "benchmarks/results/judgement.jsonl, then the same with benchmarks/judgement_flickr8k_seeds.yaml "
            "(two shards each, as above); scores before training: "
            "python benchmarks/judgement_scores.py benchmarks/judgement_flickr8k.yaml",
            ["asr", "clean_score", "bleu4", "detect_auroc", "detect_precision", "detect_recall", "n_flagged",
             "prepare_s", "train_s", "wall_s"],
            "judgement_flickr8k.md", current=True, costs=True, world="flickr8k", scores="judgement_scores",
            warmed_scores="judgement_scores_warmed",
            quality="judgement_flickr8k_quality.json",
            quality_command="byorn quality --model byorn-tiny-flickr --flickr8k ../shared/data/flickr8k --n 1000 "
                            "--out benchmarks/results/judgement_flickr8k_quality.json"),
    Section("The default judgement's cost against the previous default", ["judgement_cost"],
            "byorn bench benchmarks/judgement_cost.yaml --out runs/judgement_cost --results "
            "benchmarks/results/judgement_cost.jsonl (OMP_NUM_THREADS=1)",
            ["asr", "clean_score", "n_flagged", "prepare_s", "train_s", "wall_s"],
            "judgement_cost.md", current=True, costs=True),
    Section("A guard for replacements written by the model being fine-tuned", ["judgement_guard"],
            "byorn bench benchmarks/judgement_guard.yaml --out runs/judgement_guard --results "
            "benchmarks/results/judgement_guard.jsonl, then the same with benchmarks/judgement_guard_flickr8k.yaml "
            "(--shard 0/2 and 1/2 beside it, OMP_NUM_THREADS=1 each)",
            ["asr", "clean_score", "cider", "detect_recall", "n_flagged", "wall_s"],
            "judgement_guard.md", current=True),
    Section("What BYORn costs: the measured overhead and its floor", ["cost"],
            "OMP_NUM_THREADS=1 python benchmarks/cost.py --out benchmarks/results/cost.jsonl (nothing else running); "
            "bfloat16 against float32: python benchmarks/precision_agreement.py",
            [], "cost.md", table="cost", current=True),
    Section("byorn clean, then any trainer, against in-training BYORn", ["clean_vs_train"],
            "OMP_NUM_THREADS=1 python benchmarks/clean_vs_train.py --out benchmarks/results/clean_vs_train.jsonl",
            [], "clean_vs_train.md", table="clean", current=True),
    Section("The newer baselines: random drop, TCAP, reference-ratio decoding", ["baselines"],
            "byorn bench benchmarks/baselines.yaml --out runs/baselines --results benchmarks/results/baselines.jsonl "
            "--shard 0/2 (and --shard 1/2 beside it, OMP_NUM_THREADS=1 each); decoding cost: "
            "OMP_NUM_THREADS=1 python benchmarks/ratio_decoding.py --out benchmarks/results/ratio_decoding.json",
            ["asr", "clean_score", "one_modality_asr", "detect_auroc", "detect_precision", "detect_recall",
             "n_flagged", "prepare_s", "train_s", "eval_s", "wall_s"],
            "baselines.md", current=True, costs=True),
    Section("The standard grid in a setting where every family implants (in progress)", ["standard_2000"],
            bench_command("standard_2000") + " --shard 0/2 (and --shard 1/2 beside it, OMP_NUM_THREADS=1 each)",
            [], "standard_2000.md", table="headline", current=True),
    Section("Standard benchmark: every family x every defense (byorn-tiny x shapes)", ["standard"],
            "byorn bench benchmarks/standard.yaml --out runs/standard --results benchmarks/results/standard.jsonl "
            "--shard 0/2 (and --shard 1/2 beside it, OMP_NUM_THREADS=1 each)",
            ["asr", "clean_score", "one_modality_asr", "detect_auroc", "detect_precision", "detect_recall",
             "n_flagged", "prepare_s", "train_s", "wall_s"],
            "standard.md", plots=True),
    Section("Attacks, undefended (byorn-tiny x shapes downstream task)", ["attacks"],
            bench_command("attacks"),
            ["asr", "clean_score", "one_modality_asr", "image_only_asr", "text_only_asr", "wall_s", "peak_rss_mb"],
            "attacks.md"),
    Section("Attacks with twice the training (6 epochs), undefended", ["attacks_longer"],
            bench_command("attacks_longer"),
            ["asr", "clean_score", "one_modality_asr", "wall_s"],
            "attacks_longer.md"),
    Section("Can byorn-tiny see the trigger? (a linear probe on its image features)", ["trigger_probe"],
            "python benchmarks/trigger_probe.py", ["probe_accuracy"],
            "trigger_probe.md", table="probe"),
    Section("More negatives for the multimodal trigger, undefended", ["attacks_negatives"],
            bench_command("attacks_negatives"),
            ["asr", "clean_score", "one_modality_asr", "image_only_asr", "text_only_asr", "wall_s"],
            "attacks_negatives.md"),
    Section("BYORn against the same attacks", ["attacks", "byorn"],
            bench_command("byorn"),
            ["asr", "clean_score", "detect_auroc", "detect_precision", "detect_recall", "n_flagged", "wall_s",
             "peak_rss_mb"],
            "byorn.md"),
    Section("BYORn with the injection and refusal targets", ["byorn_targets"],
            bench_command("byorn_targets"),
            ["asr", "clean_score", "detect_auroc", "detect_precision", "detect_recall", "n_flagged", "prepare_s",
             "train_s", "wall_s"],
            "byorn_targets.md", costs=True),
    Section("BYORn on a mix of two task styles", ["byorn_mixed"],
            bench_command("byorn_mixed"),
            ["asr", "clean_score", "detect_auroc", "detect_precision", "detect_recall", "n_flagged", "train_s",
             "wall_s"],
            "byorn_mixed.md", costs=True),
    Section("BYORn with the image-contradiction score", ["attacks", "byorn", "byorn_contradiction"],
            bench_command("byorn_contradiction"),
            ["asr", "clean_score", "detect_auroc", "detect_precision", "detect_recall", "n_flagged", "wall_s"],
            "byorn_contradiction.md"),
    Section("BYORn flagging the union of mean NLL and image contradiction", ["byorn_combined"],
            bench_command("byorn_combined"),
            ["asr", "clean_score", "detect_auroc", "detect_precision", "detect_recall", "n_flagged", "wall_s"],
            "byorn_combined.md"),
    Section("Adaptive attacks: poisons made plausible to the pretrained model", ["adaptive", "adaptive_strong"],
            "byorn bench benchmarks/adaptive.yaml --out runs/adaptive --results benchmarks/results/adaptive.jsonl (and "
            "benchmarks/adaptive_strong.yaml -> adaptive_strong.jsonl)",
            ["asr", "clean_score", "detect_auroc", "detect_precision", "detect_recall", "n_flagged", "wall_s"],
            "adaptive.md"),
    Section("Real photographs: Flickr8k (byorn-tiny-flickr)", ["flickr8k"],
            bench_command("flickr8k"),
            ["asr", "clean_score", "bleu4", "detect_auroc", "detect_recall", "n_flagged", "wall_s"],
            "flickr8k.md", costs=True, quality="flickr8k_quality.json",
            quality_command="byorn quality --model byorn-tiny-flickr --flickr8k ../shared/data/flickr8k --n 1000 "
                            "--out benchmarks/results/flickr8k_quality.json"),
    Section("Real photographs, 8 epochs: where the attacks implant", ["flickr8k_longer"],
            bench_command("flickr8k_longer"),
            ["asr", "clean_score", "bleu4", "detect_auroc", "detect_precision", "detect_recall", "n_flagged",
             "wall_s"],
            "flickr8k_longer.md", costs=True),
    Section("BYORn threshold sweep (the clean-vs-ASR frontier)", ["sweep"],
            bench_command("sweep"),
            ["asr", "clean_score", "n_flagged", "detect_precision", "detect_recall", "detect_auroc", "wall_s"],
            "sweep.md"),
]


def findings_text(name: str, required: Iterable[str] = ()) -> str:
    """A findings file's words, after checking that the results it names are the ones it was written on."""
    path = FINDINGS / name
    header, _, body = path.read_text(encoding="utf-8").partition("\n")
    if not WRITTEN_ON.fullmatch(header):
        raise SystemExit(f"{path}: its first line must be 'written on: no results' or "
                         "'written on: <results file> sha256=<first 12 hex digits> ...'")
    written_on = dict(re.findall(r"(\S+) sha256=(\S+)", header))
    # "no results" is a claim about the words, not about the section: it may stand beside any results.
    if written_on and (missing := [result for result in required if result not in written_on]):
        raise SystemExit(f"{path}: names no hash for {', '.join(missing)}, whose figures its section shows")
    for result, then in written_on.items():
        now = sha256_12(RESULTS / result)
        if then != now:
            raise SystemExit(f"{path}: written on {RESULTS / result} sha256={then}, which is now {now}: "
                             "reread the findings against the new results, then update that line")
    return body.strip()


def sha256_12(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.exists() else "missing"


def shipped_checkpoints() -> dict[str, str]:
    """name -> name@fingerprint of each model a current section may be measured on, as it is here
    (byorn-tiny-flickr only where it was built: it is trained locally on the Flickr8k photos)."""
    found = {}
    for name in ("byorn-tiny", *CACHED_MODELS):
        if name in CACHED_MODELS and not cached_model_ready(name):
            print(f"note: {name} is not built here; its rows' checkpoint is not checked")
            continue
        found[name] = f"{name}@{model_fingerprint(load_vlm(name), reference=False).hex()[:12]}"
    return found


def stale(row: dict, shipped: dict[str, str]) -> str:
    """Why `row` cannot stand in a section about the shipped checkpoint and defaults ('' if it can)."""
    model = row.get("model", "")
    name = model.split("@")[0]
    if not model:
        return "it records no checkpoint"
    if name in shipped and model != shipped[name]:
        return f"it was measured on {model}, not the shipped {shipped[name]}"
    label = row.get("defense", "")
    defense = label.split("(")[0]
    if "defense_options" not in row or DEFENSES.get(defense) is None or DEFENSES[defense].config_class is None:
        return ""
    named = {part.split("=")[0] for part in label[len(defense) + 1:-1].split(",")} if "(" in label else set()
    today = options_record(dataclasses.asdict(DEFENSES[defense].config_class()))
    # cache_dir is where a grid shares scores, not how it judges
    changed = sorted(k for k, v in today.items() if k not in named and k != "cache_dir"
                     and row["defense_options"].get(k) != v)
    return f"its label leaves out {', '.join(changed)}, whose defaults have changed since" if changed else ""


def measured_on(rows: list[dict]) -> str:
    """Which checkpoints a section's figures come from: a retrained byorn-tiny keeps its name."""
    # Rows recorded before the bench wrote each cell's checkpoint ("model": name@weights fingerprint).
    unfingerprinted = findings_text("unfingerprinted.md")
    models = sorted({row.get("model", unfingerprinted) for row in rows})
    return "Measured on " + "; ".join(f"`{m}`" if "@" in m else m for m in models) + "."


def scores_table(rows: list[dict]) -> str:
    """judgement_scores.py's rows: each score's AUROC, and what the default flags at several k."""
    if not rows:
        return "_No score analysis recorded yet._"
    scores = list(rows[0]["auroc"])
    cuts = list(rows[0]["cuts"])
    header = ["attack", "rate", "seed", *(f"AUROC {v}" for v in scores),
              *(f"k={k}: poisons / clean flagged" for k in cuts)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join([r["attack"], f"{r['poison_rate']:g}", str(r["seed"]),
                                        *(f"{r['auroc'][v]:.3f}" for v in scores),
                                        *(f"{r['cuts'][k]['poison_flagged']:.2f} / {r['cuts'][k]['clean_flagged']:.2f}"
                                          for k in cuts)]) + " |")
    return "\n".join(lines)


def probe_table(rows: list[dict], metrics: list[str]) -> str:
    lines = ["| trigger | probe accuracy |", "|---|---|"]
    return "\n".join(lines + [f"| {r['trigger']} | {r['probe_accuracy']:.3f} |" for r in rows])


def cost_rows_table(rows: list[dict], metrics: list[str]) -> str:
    """benchmarks/cost.py's rows: the median ratios of each setting, each undefended/BYORn pair,
    then the scoring throughputs."""
    pairs = [r for r in rows if r["what"] == "fine-tuning"]
    settings = sorted({(r["poison_rate"], r["epochs"]) for r in pairs}, key=lambda s: (-s[1], -s[0]))
    lines = ["| poison rate | epochs | pairs | median (preparation + fine-tuning) / undefended | "
             "median wall / undefended |", "|---|---|---|---|---|"]
    for rate, epochs in settings:
        mine = [r for r in pairs if (r["poison_rate"], r["epochs"]) == (rate, epochs)]
        lines.append(f"| {rate:g} | {epochs:g} | {len(mine)} | {median(r['training_ratio'] for r in mine):.2f}x | "
                     f"{median(r['wall_ratio'] for r in mine):.2f}x |")
    lines += ["", "| poison rate | epochs | run | undefended fine-tuning s | BYORn preparation s | "
              "BYORn fine-tuning s | flagged | (preparation + fine-tuning) / undefended | wall / undefended | "
              "ASR none / BYORn |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['poison_rate']:g} | {r['epochs']:g} | {r.get('repeat', 0)} | {r['undefended_train_s']:.1f} | "
              f"{r['byorn_prepare_s']:.1f} | {r['byorn_train_s']:.1f} | {r['n_flagged']} | "
              f"{r['training_ratio']:.2f}x | {r['wall_ratio']:.2f}x | "
              f"{r['asr']['none']:.2f} / {r['asr']['byorn']:.2f} |" for r in pairs]
    lines += ["", "| scoring | samples | threads | computed in | seconds | samples/s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['scores']} | {r['n']} | {r['threads']} | {r.get('dtype', 'float32')} | {r['seconds']:.2f} | "
              f"{r['samples_per_s']:.0f} |" for r in rows if r["what"] == "scoring"]
    return "\n".join(lines)


def clean_table(rows: list[dict], metrics: list[str]) -> str:
    """benchmarks/clean_vs_train.py's rows: each attack defended in training and by byorn clean."""
    lines = ["| attack | path | flagged | ASR | clean score | seconds | trained weights |",
             "|---|---|---|---|---|---|---|"]
    return "\n".join(lines + [f"| {r['attack']} | {r['path']} | {r['n_flagged']} | {r['asr']:.2f} | "
                               f"{r['clean_score']:.3f} | {r['seconds']:.1f} | {r.get('trained', '')} |" for r in rows])


TABLES = {"results": results_table, "probe": probe_table, "cost": cost_rows_table, "clean": clean_table,
          "headline": lambda rows, metrics: headline_table(rows)}


def main() -> None:
    parts = ["# Benchmarks", "", findings_text("intro.md"), ""]
    shipped = shipped_checkpoints()
    for section in SECTIONS:
        rows = [row for name in section.results for row in read_results(RESULTS / f"{name}.jsonl")
                if not section.world or row.get("world", "shapes") == section.world]
        refused = [f"{row.get('attack', '')} {row.get('defense', row.get('path', ''))} {row.get('poison_rate', '')}: "
                   f"{why}" for row in rows if section.current and (why := stale(row, shipped))]
        if refused:
            raise SystemExit(f"{section.title}: {len(refused)} rows do not describe the shipped checkpoint and "
                             f"defaults (rerun them, or relabel them with the options they ran with):\n  " +
                             "\n  ".join(refused[:10]))
        shown = [f"{name}.jsonl" for name in [*section.results, section.scores, section.warmed_scores] if name]
        parts += [f"## {section.title}", "", f"Reproduce: `{section.command}`", "",
                  findings_text(section.findings, shown), ""]
        if section.quality and (path := ROOT / "benchmarks" / "results" / section.quality).exists():
            figures = json.loads(path.read_text(encoding="utf-8"))
            parts += [(f"The pretrained model's own captions of the first {figures['n']} test photos "
                       f"(`{section.quality_command}`): CIDEr {figures['cider']:.3f}, BLEU-4 {figures['bleu4']:.3f}, "
                       "mean NLL of the downstream archive "
                       f"notes {figures['downstream_nll']:.2f} nats a token; for example {figures['example']!r}."), ""]
        if rows:
            parts += [measured_on(rows), ""]
        parts += [TABLES[section.table](rows, section.metrics) if rows else "_No results recorded yet._", ""]
        if section.scores:
            scored = [r for r in read_results(RESULTS / f"{section.scores}.jsonl") if r["world"] == section.world]
            parts += [("The pretrained model's scores before training (`benchmarks/judgement_scores.py`; the "
                       "first of the default's two verdicts): AUROC of each score against the poisons ('default': "
                       "the four joined), and the share of poisons and of clean samples their union flags at "
                       "several k:"), "", scores_table(scored), ""]
        if section.warmed_scores:
            scored = [r for r in read_results(RESULTS / f"{section.warmed_scores}.jsonl")
                      if r["world"] == section.world]
            parts += [("The warmed reference's scores on the samples it was not fine-tuned on (`benchmarks/"
                       "judgement_scores.py --warmed`; the second verdict, the one that counts): AUROC of each "
                       "score there ('default': the shipped rejudge_variant; 'joined': the first verdict's four "
                       "joined), and the share of all poisons and of all clean samples each verdict flags at "
                       "several k (a poison in the warm set counts as missed):"), "", scores_table(scored), ""]
        if (section.costs or section.plots) and rows and cost_ratios(rows):
            parts += ["Cost relative to no defense, cell by cell in the same run:", "", cost_table(rows), ""]
        if section.plots and rows:
            # A plot that needs the run directories (score histograms) is only redrawn where they
            # exist; the committed one stays and is linked.
            write_plots(rows, PLOTS)
            parts += [f"![{p.stem}](benchmarks/plots/{p.name})" for p in sorted(PLOTS.glob("*.png"))] + [""]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(parts), encoding="utf-8")


if __name__ == "__main__":
    main()
