"""Regenerate BENCHMARKS.md from the raw results in benchmarks/results/ (run from the repo root).

    python benchmarks/build_md.py

Figures come from the results; words come from Markdown files under benchmarks/findings/, one per
section (plus intro.md), so that no measured figure is typed into this script; the summary
table at the top and its plot (benchmarks/plots/summary.png) are computed from the results. A
findings file's first line names every file under benchmarks/results/ whose figures its words
quote or draw on, each with the first 12 hex digits of its sha256 (`sha256sum FILE | cut -c1-12`):

    written on: attacks.jsonl sha256=0123456789ab byorn.jsonl sha256=ba9876543210

A section's file must name the section's own results among them. When a named file has changed
since, the build stops, naming both files, instead of printing words beside figures they no longer
describe: reread the words against the new results, correct them, then update the hash. Words that
quote no measured figure (a pure legend, the introduction) say so explicitly, and are not checked:

    written on: no results

BENCHMARKS.md prints the rest of the file up to its `<!-- more -->` line (the section's summary) and
links the file for the words after it; a file without that line is printed whole.

Every figure describes what ships: a row measured on another checkpoint than the one installed
here, or one that recorded other defaults than today's for an option its label leaves out, stops
the build (`stale`). Rerun such a grid, or remove its results (git keeps them).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from byorn.bench import cell_key, grid_cells, load_grid, options_record, read_results
from byorn.defenses import DEFENSES
from byorn.models import CACHED_MODELS, cached_model_ready, load_vlm
from byorn.report import cost_ratios, cost_table, headline_table, results_table, write_plots
from byorn.scoring import checkpoint_label

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
# the grids that chose the settings (the standard setting, the threshold), beside those that make the tables
EXPLORE = BENCHMARKS / "explore"
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
    # its rows join the headline table (byorn.report.headline_table), printed before the first such
    # section's results and in README.md
    headline: bool = False
    table: str = "results"  # how its rows are laid out: results (one per cell), probe, cost (benchmarks/cost.py)
    figure: str = ""  # a plot under benchmarks/plots/ its script draws, shown after the table


def bench_command(grid: str, folder: Path = BENCHMARKS) -> str:
    """How a section's grid reruns: benchmarks/GRID.yaml (or benchmarks/explore/GRID.yaml) into
    benchmarks/results/GRID.jsonl."""
    return (f"byorn bench {(folder / grid).relative_to(ROOT).as_posix()}.yaml --out runs/{grid} "
            f"--results benchmarks/results/{grid}.jsonl")


# The grids whose undefended cells chose the standard setting (benchmarks/standard.yaml): it first.
SETTINGS = ["standard", "standard_low", "standard_setting_1000", "standard_setting", "standard_setting_strong_small",
            "standard_setting_2000", "standard_setting_strong", "standard_setting_low", "standard_setting_images",
            "standard_setting_multimodal"]

SECTIONS = [
    Section("The standard grid: every family at 10 and 5 %, three seeds", ["standard"],
            bench_command("standard") + " --shard 0/2 (and --shard 1/2 beside it, OMP_NUM_THREADS=1 each)",
            ["asr", "clean_score", "one_modality_asr", "detect_auroc", "detect_precision", "detect_recall",
             "n_flagged", "prepare_s", "train_s", "wall_s"],
            "standard.md", plots=True, costs=True, headline=True),
    Section("The standard grid at 1 %: 3,000 samples", ["standard_low"],
            bench_command("standard_low") + " --shard 0/2 (and --shard 1/2 beside it, OMP_NUM_THREADS=1 each)",
            ["asr", "clean_score", "one_modality_asr", "detect_auroc", "detect_precision", "detect_recall",
             "n_flagged", "prepare_s", "train_s", "wall_s"],
            "standard_low.md", costs=True, headline=True),
    Section("The default judgement: shapes, new answer style, one-word swaps", ["judgement"],
            "byorn bench benchmarks/judgement.yaml --out runs/judgement --results benchmarks/results/judgement.jsonl "
            "--shard 0/2 (and --shard 1/2 beside it, OMP_NUM_THREADS=1 each), then the same with "
            "benchmarks/judgement_seeds.yaml and benchmarks/judgement_seeds_low.yaml; scores before training: "
            "python benchmarks/judgement_scores.py benchmarks/judgement.yaml",
            ["asr", "clean_score", "detect_auroc", "detect_precision", "detect_recall", "n_flagged", "prepare_s",
             "train_s", "wall_s"],
            "judgement_shapes.md", costs=True, world="shapes", scores="judgement_scores",
            warmed_scores="judgement_scores_warmed"),
    Section("The default judgement: real photographs (Flickr8k)", ["judgement"],
            "byorn bench benchmarks/judgement_flickr8k.yaml --out runs/judgement_flickr8k --results "
            "benchmarks/results/judgement.jsonl, then the same with benchmarks/judgement_flickr8k_seeds.yaml "
            "(two shards each, as above); scores before training: "
            "python benchmarks/judgement_scores.py benchmarks/judgement_flickr8k.yaml",
            ["asr", "clean_score", "bleu4", "detect_auroc", "detect_precision", "detect_recall", "n_flagged",
             "prepare_s", "train_s", "wall_s"],
            "judgement_flickr8k.md", costs=True, world="flickr8k", scores="judgement_scores",
            warmed_scores="judgement_scores_warmed",
            quality="judgement_flickr8k_quality.json",
            quality_command="byorn quality --model byorn-tiny-flickr --flickr8k FLICKR8K --n 1000 "
                            "--out benchmarks/results/judgement_flickr8k_quality.json"),
    Section("Lessons the pretrained model lacks: kept, and the backdoor still ended", ["lessons"],
            "byorn bench benchmarks/lessons_count.yaml --out runs/lessons_count --results "
            "benchmarks/results/lessons.jsonl, then the same with lessons_yesno.yaml, lessons_rename.yaml and "
            "lessons_dog.yaml (OMP_NUM_THREADS=1 each; two side by side); the images unlike the shapes world: "
            "OMP_NUM_THREADS=1 python benchmarks/unlike_shapes.py --out benchmarks/results/unlike_shapes.jsonl; "
            "the noise of one fine-tuning: OMP_NUM_THREADS=1 python benchmarks/explore/lesson_noise.py "
            "benchmarks/lessons_yesno.yaml benchmarks/lessons_rename.yaml --out benchmarks/results/lesson_noise.jsonl "
            "and byorn bench benchmarks/explore/rename_warm_start.yaml --out runs/rename_warm_start --runs "
            "runs/lessons_rename/runs --results benchmarks/results/rename_warm_start.jsonl",
            ["asr", "lesson_score"], "lessons.md", table="lessons"),
    Section("Canaries: does what they catch predict what the judgement catches?", ["canaries"],
            "OMP_NUM_THREADS=1 python benchmarks/canaries.py benchmarks/judgement_flickr8k.yaml "
            "benchmarks/judgement.yaml benchmarks/judgement_flickr8k_seeds.yaml benchmarks/judgement_seeds.yaml "
            "benchmarks/judgement_seeds_low.yaml "
            "--out benchmarks/results/canaries.jsonl --runs runs/canaries and the same with lessons_yesno.yaml, "
            "lessons_count.yaml, lessons_rename.yaml and lessons_dog.yaml (two processes side by side), the "
            "Flickr8k targets: OMP_NUM_THREADS=1 python benchmarks/explore/canary_sentence.py --out "
            "benchmarks/results/canary_sentence.jsonl, then python benchmarks/canaries.py --report "
            "benchmarks/results/canaries.jsonl --plot benchmarks/plots/canaries.png; their cost: "
            "OMP_NUM_THREADS=1 python benchmarks/cost.py --canaries --n 1000 3000 --out "
            "benchmarks/results/cost_canaries.jsonl; the canaries' cut against the default: python "
            "benchmarks/canary_cut.py --grid GRID runs/canaries/GRID_NAME (each grid above) --out "
            "benchmarks/results/canary_cut.jsonl, then python benchmarks/canary_cut.py --report "
            "benchmarks/results/canary_cut.jsonl",
            [], "canaries.md", table="canaries", figure="canaries.png"),
    Section("The default judgement's cost against the previous default", ["judgement_cost"],
            "byorn bench benchmarks/judgement_cost.yaml --out runs/judgement_cost --results "
            "benchmarks/results/judgement_cost.jsonl (OMP_NUM_THREADS=1)",
            ["asr", "clean_score", "n_flagged", "prepare_s", "train_s", "wall_s"],
            "judgement_cost.md", costs=True),
    Section("A guard for replacements written by the model being fine-tuned", ["judgement_guard"],
            "byorn bench benchmarks/judgement_guard.yaml --out runs/judgement_guard --results "
            "benchmarks/results/judgement_guard.jsonl, then the same with benchmarks/judgement_guard_flickr8k.yaml "
            "(--shard 0/2 and 1/2 beside it, OMP_NUM_THREADS=1 each)",
            ["asr", "clean_score", "cider", "detect_recall", "n_flagged", "wall_s"],
            "judgement_guard.md"),
    Section("What BYORn costs: the measured overhead and its floor", ["cost", "cost_default_allocator"],
            "OMP_NUM_THREADS=1 python benchmarks/cost.py --repeats 2 --out benchmarks/results/cost.jsonl "
            "(nothing else running), "
            "then the same with --default-allocator --repeats 1 --out benchmarks/results/cost_default_allocator.jsonl; "
            "the lesson rules' share: --lesson-rules --n 3000 --out benchmarks/results/cost_lesson_rules.jsonl; "
            "bfloat16 against float32: python benchmarks/precision_agreement.py",
            [], "cost.md", table="cost"),
    Section("Scanning a large data set: time and memory as it grows",
            ["scan_scale", "warm_size", "warm_size_score_order"],
            "OMP_NUM_THREADS=1 python benchmarks/scan_scale.py --sizes 1000 2000 10000 20000 100000 --out "
            "benchmarks/results/scan_scale.jsonl (nothing else running), then python benchmarks/scan_scale.py "
            "--report benchmarks/results/scan_scale.jsonl --plot benchmarks/plots/scan_scale.png; the warm set's "
            "size: OMP_NUM_THREADS=1 python benchmarks/explore/warm_size.py --seed S --warm-max 512 2000 0 "
            "--out benchmarks/results/warm_size.jsonl for S in 0 1 2, the same with --clean; the draws in score "
            "order (warm_size_score_order.jsonl): the same commands with --warm-max 500 1000 2000 at commit afca70e",
            [], "scan_scale.md", table="scale", figure="scan_scale.png"),
    Section("The grey pass's shared prefix, computed once (reuse_prefix, off by default)", ["prefix_reuse"],
            "OMP_NUM_THREADS=1 python benchmarks/prefix_reuse.py --out benchmarks/results/prefix_reuse.jsonl "
            "(nothing else running)", [], "prefix_reuse.md", table="prefix"),
    Section("Lessons past the warm set's bound: 10,000 samples", ["lessons_10k"],
            "OMP_NUM_THREADS=1 byorn bench benchmarks/lessons_count_10k.yaml --out runs/lessons_count_10k --results "
            "benchmarks/results/lessons_10k.jsonl, then the same with lessons_yesno_10k.yaml",
            ["asr", "lesson_score", "n_flagged", "n_train", "wall_s"], "lessons_10k.md"),
    Section("byorn clean, then any trainer, against in-training BYORn", ["clean_vs_train"],
            "OMP_NUM_THREADS=1 python benchmarks/clean_vs_train.py --out benchmarks/results/clean_vs_train.jsonl",
            [], "clean_vs_train.md", table="clean"),
    Section("The newer baselines: random drop, TCAP, reference-ratio decoding", ["baselines"],
            "byorn bench benchmarks/baselines.yaml --out runs/baselines --results benchmarks/results/baselines.jsonl "
            "--shard 0/2 (and --shard 1/2 beside it, OMP_NUM_THREADS=1 each); decoding cost: "
            "OMP_NUM_THREADS=1 python benchmarks/ratio_decoding.py --out benchmarks/results/ratio_decoding.json",
            ["asr", "clean_score", "one_modality_asr", "detect_auroc", "detect_precision", "detect_recall",
             "n_flagged", "prepare_s", "train_s", "eval_s", "wall_s"],
            "baselines.md", costs=True),
    Section("Choosing the standard setting: where the attacks implant, undefended", SETTINGS,
            "byorn bench benchmarks/explore/GRID.yaml --out runs/GRID --results benchmarks/results/GRID.jsonl "
            "for each GRID named in the table (standard and standard_low: benchmarks/GRID.yaml; "
            "--shard 0/2 and 1/2 beside it, OMP_NUM_THREADS=1 each)",
            [], "standard_setting.md", table="settings"),
    Section("Attacks, undefended (byorn-tiny x shapes downstream task)", ["attacks"],
            bench_command("attacks"),
            ["asr", "clean_score", "one_modality_asr", "image_only_asr", "text_only_asr", "wall_s", "peak_rss_mb"],
            "attacks.md"),
    Section("Can byorn-tiny see the trigger? (a linear probe on its image features)", ["trigger_probe"],
            "python benchmarks/explore/trigger_probe.py", ["probe_accuracy"],
            "trigger_probe.md", table="probe"),
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
    Section("Adaptive attacks: poisons made plausible to the pretrained model", ["adaptive"],
            bench_command("adaptive") + " --shard 0/2 (and --shard 1/2 beside it, OMP_NUM_THREADS=1 each)",
            ["asr", "clean_score", "detect_auroc", "detect_precision", "detect_recall", "n_flagged", "wall_s"],
            "adaptive.md"),
    Section("Real photographs: the baselines on Flickr8k (byorn-tiny-flickr)", ["flickr8k"],
            bench_command("flickr8k") + " --shard 0/2 (and --shard 1/2 beside it, OMP_NUM_THREADS=1 each)",
            ["asr", "clean_score", "bleu4", "detect_auroc", "detect_recall", "n_flagged", "wall_s"],
            "flickr8k.md", costs=True),
    Section("BYORn threshold sweep (the clean-vs-ASR frontier)", ["sweep"],
            bench_command("sweep", EXPLORE),
            ["asr", "clean_score", "n_flagged", "detect_precision", "detect_recall", "detect_auroc", "wall_s"],
            "sweep.md"),
]


MORE = "<!-- more -->"  # a findings file's line between its summary, printed in BENCHMARKS.md, and the rest


def findings_summary(name: str, required: Iterable[str] = ()) -> str:
    """What BENCHMARKS.md prints of a findings file: its words up to its MORE line, then a link to the
    file for the rest (all of its words where it has no such line)."""
    summary, more, _ = findings_text(name, required).partition(MORE)
    path = (FINDINGS / name).relative_to(ROOT).as_posix()
    return summary.strip() + (f"\n\nThe setting and every finding in full: [{path}]({path})." if more else "")


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
    """name -> name@fingerprint of each model a section may be measured on, as it is here
    (byorn-tiny-flickr only where it was built: it is trained locally on the Flickr8k photos)."""
    found = {}
    for name in ("byorn-tiny", *CACHED_MODELS):
        if name in CACHED_MODELS and not cached_model_ready(name):
            print(f"note: {name} is not built here; its rows' checkpoint is not checked")
            continue
        found[name] = checkpoint_label(name, load_vlm(name))
    return found


# Options the default judgement gained after rows were published (keeping lessons: byorn_config.py).
# A row that records none of them ran with the judgement before them: its section says so, in place
# of refusing it, until its grid is rerun on the shipped default.
ADDED_SINCE = ("lesson_share", "flag_copies", "vouch", "fit_replacements", "warm_max")
ADDED = ", ".join(f"`{name}`" for name in ADDED_SINCE[:-1]) + f" and `{ADDED_SINCE[-1]}`"
BEFORE_LESSONS = (f"**Measured before lessons:** this section's BYORn rows ran with the judgement before {ADDED} "
                  "(they record none of them); rerun its grid for the shipped default. "
                  "[docs/method.md](docs/method.md#lessons) says what those options change.")


# Options that change no figure of a row: the canaries are judged on the samples' statistics and move
# no sample's verdict (tests/test_canaries.py), so a row from before them describes the shipped default.
REPORTS_ONLY = ("canaries",)

# Options added after rows were published, with the value that is what ran before them (canary_cut=0:
# the rule's cut; warm_max=0: no bound; reuse_prefix: the whole grey pass): a row that does not record
# one ran at that value.
BEFORE_ADDED = {"canary_cut": 0.0, "warm_max": 0, "reuse_prefix": False}
# Options that act only where another has a value (ema_decay: the average that writes with generator=ema);
# a row with that other option set otherwise ran as it would with any of their values.
ACTS_ONLY_WITH = {"ema_decay": ("generator", "ema")}


def warm_set_under(row: dict, bound: int) -> bool:
    """Whether the warm sets of `row`'s grid cannot pass `bound`, so that the bound draws nothing and
    a row from before it is what it gives: a warm set is at most warm_share of the samples judged
    (its grid's n_train) and half a sample more per lesson and for the rest (rounding), with at most
    1 / lesson_share lessons (byorn/defenses/warm_set.py)."""
    grid, options = row_grid(row), row["defense_options"]
    if grid is None:
        return False
    share = options.get("lesson_share")
    lessons = int(1 / share) if share and share < 1 else 0  # a share of 1 makes none
    return options["warm_share"] * grid_samples(grid) + (lessons + 1) / 2 <= bound


def row_grid(row: dict) -> str | None:
    """The grid a row ran in, where its run folder says (runs/<grid>/...) and the grid file is here."""
    parts = Path(row.get("run_dir", "")).parts
    grid = parts[1] if len(parts) > 1 and parts[0] == "runs" else None
    return grid if grid and grid_file(grid) else None


def grid_file(grid: str) -> Path | None:
    """benchmarks/GRID.yaml, or benchmarks/explore/GRID.yaml for a grid that chose a setting (None: neither)."""
    return next((path for folder in (BENCHMARKS, EXPLORE) if (path := folder / f"{grid}.yaml").exists()), None)


@functools.cache  # asked once per row; the grid file is read once
def grid_samples(grid: str) -> int:
    """The samples a grid's cells judge (its n_train)."""
    return load_grid(grid_path(grid)).n_train


def before_lessons_note(rows: list[dict]) -> str:
    """What a section says of its judging rows from before the ADDED_SINCE options: that they all
    are, or which labels have such rows ('' where none is)."""
    judging = [row for row in rows if "k" in (row.get("defense_options") or {})]  # a cost pair's are the default's
    earlier = [row for row in judging if before_lessons(row)]
    if not earlier or len(earlier) == len(judging):
        return BEFORE_LESSONS if earlier else ""
    return ("**Partly measured before lessons:** the rows of " +
            ", ".join(f"`{label}`" for label in sorted({row.get("defense", DEFAULT) for row in earlier})) +
            f" ran with the judgement before {ADDED} (they record none of them); the section's other BYORn rows "
            "are on the shipped default. "
            "[docs/method.md](docs/method.md#lessons) says what those options change.")


def before_lessons(row: dict) -> bool:
    """Whether `row` is a judging defense's row from before the ADDED_SINCE options existed."""
    recorded = row.get("defense_options")
    return isinstance(recorded, dict) and "k" in recorded and not any(k in recorded for k in ADDED_SINCE)


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
    # cache_dir is where a grid shares scores and fine-tunes, not how it judges
    recorded = {**BEFORE_ADDED, **row["defense_options"]}
    for option, (other, value) in ACTS_ONLY_WITH.items():
        if option in today and option not in recorded and recorded.get(other) != value:
            recorded[option] = today[option]
    if "warm_max" in today and "warm_max" not in row["defense_options"] and warm_set_under(row, today["warm_max"]):
        recorded["warm_max"] = today["warm_max"]
    changed = sorted(k for k, v in today.items() if k not in named and k != "cache_dir" and k not in REPORTS_ONLY
                     and recorded.get(k) != v and not (before_lessons(row) and k in ADDED_SINCE))
    return f"its label leaves out {', '.join(changed)}, whose defaults have changed since" if changed else ""


def refuse_stale(title: str, rows: list[dict], shipped: dict[str, str]) -> None:
    """Stop the build, naming the rows, when any of a section's rows is `stale`."""
    refused = [f"{row.get('attack', '')} {row.get('defense', row.get('path', ''))} {row.get('poison_rate', '')}: "
               f"{why}" for row in rows if (why := stale(row, shipped))]
    if refused:
        raise SystemExit(f"{title}: {len(refused)} rows do not describe the shipped checkpoint and "
                         f"defaults (rerun them, or relabel them with the options they ran with):\n  " +
                         "\n  ".join(refused[:10]))


def measured_on(rows: list[dict]) -> str:
    """Which checkpoints a section's figures come from: a retrained byorn-tiny keeps its name."""
    return "Measured on " + "; ".join(f"`{m}`" for m in sorted({row["model"] for row in rows})) + "."


def cell_time(rows: list[dict], sharded: bool) -> str:
    """The cells' own wall times added up: the grid's cost in core time; for a grid run as two shards
    side by side (`sharded`), what the longer shard adds up to: the wait for the grid on two cores."""
    timed = [row["wall_s"] for row in rows if "wall_s" in row]
    if not timed:
        return ""
    text = f"{len(timed)} cells; their wall times add up to {sum(timed) / 60:.0f} minutes"
    if not sharded or (shards := shard_seconds(rows)) is None:
        return text + "."
    return text + (f"; as two shards side by side (`--shard 0/2`, `1/2`, one core each) the longer adds up to "
                   f"{max(shards) / 60:.0f} minutes.")


def shard_seconds(rows: list[dict]) -> tuple[float, float] | None:
    """The wall seconds of each of two shards, the timed cells split as `byorn bench --shard i/2` splits
    a grid's cells (by their place in it); None where a row's grid is not known, or a row is not a
    cell of that grid."""
    shards = [0.0, 0.0]
    for row in rows:
        if "wall_s" not in row:
            continue
        grid = row_grid(row) or row.get("grid")  # where the run folder does not say: the results file's grid
        if grid is None or grid_file(grid) is None:
            return None
        place = grid_places(grid).get(cell_key(row["attack"], row["defense"], row["poison_rate"], row["seed"]))
        if place is None:
            return None
        shards[place % 2] += row["wall_s"]
    return shards[0], shards[1]


@functools.cache
def grid_places(grid: str) -> dict[str, int]:
    """Each cell's place in its grid's running order (its cell_key -> index)."""
    return {cell_key(spec.name, defense.label, rate, seed): i
            for i, (spec, defense, rate, seed) in enumerate(grid_cells(load_grid(grid_path(grid))))}


IMPLANTED = 0.9  # an undefended ASR from which an attack is said to implant in a cell


def poisoned_undefended(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """The undefended cells with poisons among `rows`, and those of them below IMPLANTED."""
    poisoned = [r for r in rows if r.get("defense") == "none" and r["poison_rate"] > 0]
    return poisoned, [r for r in poisoned if r["asr"] < IMPLANTED]


def undefended_misses(rows: list[dict]) -> str:
    """A section's poisoned cells where the attack, undefended, stays below IMPLANTED, named with
    their seeds' ASR ('' where the section has no undefended poisoned cell)."""
    poisoned, missed = poisoned_undefended(rows)
    if not poisoned:
        return ""
    if not missed:
        return f"Undefended, every attack implants (ASR at least {IMPLANTED:g}) in all {len(poisoned)} poisoned cells."
    by_cell: dict[tuple, list[dict]] = {}
    for row in missed:
        by_cell.setdefault((row.get("lesson"), row["attack"], row["poison_rate"]), []).append(row)
    named = "; ".join(f"{attack}{f' ({lesson})' if lesson else ''} at {rate:g}: "
                      + ", ".join(f"{r['asr']:.2f} (seed {r['seed']})" for r in sorted(cell, key=lambda r: r["seed"]))
                      for (lesson, attack, rate), cell in sorted(by_cell.items(),
                                                                 key=lambda kv: (kv[0][0] or "", kv[0][1], -kv[0][2])))
    return (f"Undefended, the attack stays below ASR {IMPLANTED:g} in {len(missed)} of {len(poisoned)} poisoned "
            f"cells (it implants only partly, or not at all, there): {named}.")


HEADLINE_LEGEND = ("Per attack and poison rate: each defense's attack success rate (ASR), mean ± standard "
                   "deviation over the seeds, and in brackets its clean score as a percentage of the clean "
                   "oracle's in the same seed (mean over the seeds); BYORn's preparation and fine-tuning time "
                   "over the undefended fine-tuning of the same seed. The 1 % rows come from the next "
                   "section's grid (3,000 samples, 5 epochs); a blank: that defense did not run there.")
SUMMARY_LEGEND = ("Every grid in which the shipped BYORn default ran, each cell an attack, a poison rate and a "
                  "seed; each column the lowest and highest value over the grid's cells. ASR: the attack success "
                  "rate on triggered test inputs, undefended and under the default; "
                  f"undefended below {IMPLANTED:g}: of the undefended cells with poisons, those where the attack "
                  "implants only partly or not at all "
                  "(each section names them); poisons and clean samples "
                  "flagged: shares of each in the training set; the clean score (scene F1 on shapes, CIDEr on real "
                  "photos) as a percentage of the clean oracle's in the same cell ('-': no oracle there). The "
                  "sections below say which attacks each grid holds, and the plot shows every cell.")
README_HEADLINE = re.compile(r"<!-- headline: .*? -->\n.*?(<!-- /headline -->)", re.DOTALL)


def write_readme_headline(table: str, results: list[str]) -> None:
    """README.md's copy of the headline table, between its markers; the opening marker names the
    results it comes from, so that tests/test_cli_bench.py checks the table against those files."""
    path = ROOT / "README.md"
    text = path.read_text(encoding="utf-8")
    if not README_HEADLINE.search(text):
        raise SystemExit(f"{path}: no '<!-- headline: ... -->' ... '<!-- /headline -->' block to write the table into")
    sources = " ".join(f"benchmarks/results/{name}.jsonl" for name in results)
    opening = f"<!-- headline: benchmarks/build_md.py writes this table from {sources} -->\n"
    written = README_HEADLINE.sub(lambda m: opening + table + "\n" + m.group(1), text, count=1)
    path.write_text(written, encoding="utf-8")


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
    then the scoring throughputs; "memory kept": whether the process kept the memory it freed
    (byorn/allocator.py; --default-allocator runs without)."""
    def kept(row: dict) -> str:
        return "yes" if row["freed_memory_kept"] else "no"

    pairs = [r for r in rows if r["what"] == "fine-tuning"]
    settings = sorted({(kept(r), r["poison_rate"], r["epochs"]) for r in pairs},
                      key=lambda s: (s[0] != "yes", -s[2], -s[1]))
    lines = ["| memory kept | poison rate | epochs | pairs | median (preparation + fine-tuning) / undefended | "
             "median wall / undefended | the paper's recipe: median (preparation + fine-tuning) / undefended | "
             "median undefended fine-tuning s |", "|---|---|---|---|---|---|---|---|"]
    for memory, rate, epochs in settings:
        mine = [r for r in pairs if (kept(r), r["poison_rate"], r["epochs"]) == (memory, rate, epochs)]
        ratios = (median(r["training_ratio"] for r in mine), median(r["wall_ratio"] for r in mine))
        # rows from before byorn_paper existed have no paper cell
        paper = [r["paper_training_ratio"] for r in mine if "paper_training_ratio" in r]
        lines.append(f"| {memory} | {rate:g} | {epochs:g} | {len(mine)} | {ratios[0]:.2f}x | {ratios[1]:.2f}x | "
                     f"{f'{median(paper):.2f}x' if paper else 'not measured'} | "
                     f"{median(r['undefended_train_s'] for r in mine):.1f} |")
    lines += ["", "| memory kept | poison rate | epochs | run | undefended fine-tuning s | BYORn preparation s | "
              "BYORn fine-tuning s | flagged | (preparation + fine-tuning) / undefended | wall / undefended | "
              "ASR none / BYORn |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {kept(r)} | {r['poison_rate']:g} | {r['epochs']:g} | {r.get('repeat', 0)} | "
              f"{r['undefended_train_s']:.1f} | {r['byorn_prepare_s']:.1f} | {r['byorn_train_s']:.1f} | "
              f"{r['n_flagged']} | {r['training_ratio']:.2f}x | {r['wall_ratio']:.2f}x | "
              f"{r['asr']['none']:.2f} / {r['asr']['byorn']:.2f} |" for r in pairs]
    lines += ["", "| memory kept | scoring | samples | threads | computed in | seconds | samples/s |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {kept(r)} | {r['scores']} | {r['n']} | {r['threads']} | {r.get('dtype', 'float32')} | "
              f"{r['seconds']:.2f} | {r['samples_per_s']:.0f} |" for r in rows if r["what"] == "scoring"]
    return "\n".join(lines)


def clean_table(rows: list[dict], metrics: list[str]) -> str:
    """benchmarks/clean_vs_train.py's rows: each attack defended in training and by byorn clean."""
    lines = ["| attack | path | flagged | ASR | clean score | seconds | trained weights |",
             "|---|---|---|---|---|---|---|"]
    return "\n".join(lines + [f"| {r['attack']} | {r['path']} | {r['n_flagged']} | {r['asr']:.2f} | "
                               f"{r['clean_score']:.3f} | {r['seconds']:.1f} | {r.get('trained', '')} |" for r in rows])


def grid_path(grid: str) -> Path:
    """grid_file(grid), which must be there."""
    if path := grid_file(grid):
        return path
    raise SystemExit(f"benchmarks/{grid}.yaml: the grid of benchmarks/results/{grid}.jsonl is missing "
                     "(looked in benchmarks/ and benchmarks/explore/)")


def grid_setting(grid: str) -> str:
    """'samples, epochs, lr' of the grid GRID."""
    path = grid_path(grid)
    setting = load_grid(path)
    return f"{setting.n_train}, {setting.train.epochs:g}, {setting.train.learning_rate:g}"


def settings_table(rows: list[dict], metrics: list[str]) -> str:
    """Grids' undefended cells side by side, one line per grid, attack and rate: each seed's ASR (and
    the multimodal trigger's firing on one half alone), so settings compare seed by seed."""
    lines = ["| grid | samples, epochs, lr | attack | poison rate | ASR per seed | one-trigger ASR per seed |",
             "|---|---|---|---|---|---|"]
    cells: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["defense"] == "none":
            cells.setdefault((row["grid"], row["attack"], row["poison_rate"]), []).append(row)
    order = {grid: i for i, grid in enumerate(dict.fromkeys(row["grid"] for row in rows))}
    settings = {grid: grid_setting(grid) for grid in order}
    for (grid, attack, rate), mine in sorted(cells.items(), key=lambda kv: (order[kv[0][0]], kv[0][1], -kv[0][2])):
        mine.sort(key=lambda r: r["seed"])
        asr = " / ".join(f"{r['asr']:.2f}" for r in mine)
        one = " / ".join(f"{r['one_modality_asr']:.2f}" if "one_modality_asr" in r else "-" for r in mine) \
            if any("one_modality_asr" in r for r in mine) else ""
        lines.append(f"| {grid} | {settings[grid]} | {attack} | {rate:g} | {asr} | {one} |")
    return "\n".join(lines)


DEFAULT = "byorn"  # the shipped default's label: BYORn with no option changed
PAPER = "byorn_paper"  # BYORn with the paper's own recipe, no option changed
BASELINES = ("onion", "bye", "tcap", "score_drop", "random_drop", "reference_ratio")  # the summary's baselines
SUMMARY_PLOT = PLOTS / "summary.png"


def section_label(section: Section) -> str:
    """A section's short name in the summary: its results file, and its world where the file holds two."""
    return section.results[0] + (f" ({section.world})" if section.world else "")


def section_anchor(title: str) -> str:
    """The link GitHub gives a '## title' heading."""
    return "#" + re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def span(values: list[float], digits: int = 2, unit: str = "") -> str:
    """'low-high unit' of the values (one figure when they print alike, '-' when there are none)."""
    if not values:
        return "-"
    low, high = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return (low if low == high else f"{low}-{high}") + unit


def default_cells(rows: list[dict]) -> tuple[list[dict], list[dict], dict[tuple, dict]]:
    """A section's undefended cells, the shipped default's cells, and the oracle's cells by
    (world, attack, poison rate, seed)."""
    def key(row: dict) -> tuple:
        return row.get("world", "shapes"), row["attack"], row["poison_rate"], row["seed"]

    return ([r for r in rows if r.get("defense") == "none"], [r for r in rows if r.get("defense") == DEFAULT],
            {key(r): r for r in rows if r.get("defense") == "oracle"})


def clean_flagged_share(row: dict) -> float:
    """The share of the clean training samples a cell flagged: its flags less the poisons it found,
    over the clean samples it judged (its grid's n_train: a row's n_train leaves out the flagged
    samples whose replacement did not train)."""
    poisons_found = round(row["detect_recall"] * row["n_poisoned"]) if row["n_poisoned"] else 0  # clean: recall nan
    grid = row_grid(row)
    judged = row.get("n_judged") or (grid_samples(grid) if grid else row["n_train"])
    return (row["n_flagged"] - poisons_found) / (judged - row["n_poisoned"])


def summary_sections(sections: list[Section]) -> list[tuple[Section, list[dict]]]:
    """The sections of grids where the shipped default ran, each with its rows."""
    found = []
    for section in sections:
        if section.table not in ("results", "lessons"):
            continue
        rows = [row for name in section.results for row in read_results(RESULTS / f"{name}.jsonl")
                if not section.world or row.get("world", "shapes") == section.world]
        if any(row.get("defense") == DEFAULT for row in rows):
            found.append((section, rows))
    return found


def summary_table(found: list[tuple[Section, list[dict]]]) -> str:
    """One line per grid where the shipped default ran: the range over its cells (attack, rate and
    seed) of the undefended ASR, the default's ASR, the share of the poisons and of the clean samples
    it flags, and its clean score over the clean oracle's of the same cell (a lesson grid's clean
    score is its lesson score); then the paper's recipe's and the best baseline's (the lowest mean
    ASR of the grid's baselines) ASR and clean score, where they ran."""
    lines = [f"| grid (section) | cells | ASR undefended | undefended below {IMPLANTED:g} | ASR BYORn | "
             "poisons flagged | clean samples flagged | BYORn clean score, % of oracle's | "
             "the paper's recipe: cells, ASR, clean % of oracle's | best baseline: ASR, clean % of oracle's |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for section, rows in found:
        undefended, byorn, oracle = default_cells(rows)
        paper = [r for r in rows if r.get("defense") == PAPER]
        baselines = {name: [r for r in rows if r.get("defense") == name] for name in BASELINES}
        best = min((name for name in baselines if baselines[name]),
                   key=lambda name: sum(r["asr"] for r in baselines[name]) / len(baselines[name]), default=None)
        lines.append(f"| [{section_label(section)}]({section_anchor(section.title)}) | {len(byorn)} | "
                     f"{span([r['asr'] for r in undefended])} | {below_implanted(undefended)} | "
                     f"{span([r['asr'] for r in byorn])} | "
                     f"{span([100 * r['detect_recall'] for r in byorn if r.get('n_poisoned')], 0, ' %')} | "
                     f"{span([100 * clean_flagged_share(r) for r in byorn], 1, ' %')} | "
                     f"{span(clean_ratios(byorn, oracle), 1, ' %')} | "
                     + (f"{len(paper)}, {span([r['asr'] for r in paper])}, "
                        f"{span(clean_ratios(paper, oracle), 1, ' %')} | " if paper else "not run yet | ")
                     + (f"{best}: {span([r['asr'] for r in baselines[best]])}, "
                        f"{span(clean_ratios(baselines[best], oracle), 1, ' %')} |" if best else "none in this grid |"))
    return "\n".join(lines)


def below_implanted(undefended: list[dict]) -> str:
    """'n of m' of the poisoned undefended cells whose ASR stays below IMPLANTED (its section names them)."""
    poisoned, missed = poisoned_undefended(undefended)
    return f"{len(missed)} of {len(poisoned)}" if poisoned else "-"


def clean_ratios(cells: list[dict], oracle: dict[tuple, dict]) -> list[float]:
    """Each cell's clean score as a percentage of the clean oracle's of the same cell, where it ran."""
    return [100 * r["clean_score"] / o["clean_score"] for r in cells
            if (o := oracle.get((r.get("world", "shapes"), r["attack"], r["poison_rate"], r["seed"])))
            and o.get("clean_score") and r.get("clean_score") is not None]


def plot_summary(found: list[tuple[Section, list[dict]]], path: Path) -> Path:
    """Each cell's ASR undefended, under the shipped default and under the paper's recipe, one row of
    points per grid."""
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7.5, 0.45 * len(found) + 1.2))
    for i, (_, rows) in enumerate(reversed(found)):
        undefended, byorn, _ = default_cells(rows)
        axes.scatter([r["asr"] for r in undefended], [i + 0.15] * len(undefended), s=14, color="#999999",
                     label="undefended" if i == 0 else None)
        axes.scatter([r["asr"] for r in byorn], [i - 0.15] * len(byorn), s=14, color="#228833",
                     label="BYORn (shipped default)" if i == 0 else None)
        paper = [r["asr"] for r in rows if r.get("defense") == PAPER]
        axes.scatter(paper, [i] * len(paper), s=14, marker="x", color="#cc6677",
                     label="the paper's recipe" if i == 0 else None)
    axes.set_yticks(range(len(found)), [section_label(section) for section, _ in reversed(found)], fontsize=7)
    axes.set_xlim(-0.03, 1.03)
    axes.set_xlabel("attack success rate of a cell (attack, poison rate, seed)", fontsize=8)
    axes.tick_params(axis="x", labelsize=7)
    axes.grid(axis="x", linewidth=0.3)
    axes.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=110)
    plt.close(figure)
    return path


def lessons_table(rows: list[dict], metrics: list[str]) -> str:
    """Per lesson, attack and poison rate: each defense's ASR and lesson score (mean over the seeds
    it ran; the count is the default's), and whether the shipped default keeps the lesson (at least 95 % of
    the undefended score on clean data, of the oracle's under attack, seed by seed) and ends the
    backdoor (ASR at most 0.02 above the oracle's, seed by seed)."""
    defenses = list(dict.fromkeys(r["defense"] for r in rows))
    columns = " | ".join(f"{d}: ASR / lesson" for d in defenses)
    lines = [f"| lesson | attack | poison rate | seeds of the default | {columns} | default keeps the lesson | "
             "default ends the backdoor |",
             "|---|---|---|---|" + "---|" * (len(defenses) + 2)]
    cells: dict[tuple, dict[str, dict[int, dict]]] = {}
    for row in rows:
        cells.setdefault((row["lesson"], row["attack"], row["poison_rate"]), {}).setdefault(
            row["defense"], {})[row["seed"]] = row
    for (lesson, attack, rate), by_defense in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1])):
        shown = []
        for defense in defenses:
            mine = list(by_defense.get(defense, {}).values())
            shown.append(f"{sum(r['asr'] for r in mine) / len(mine):.2f} / "
                         f"{sum(r['lesson_score'] for r in mine) / len(mine):.3f}" if mine else "")
        default = by_defense.get(DEFAULT, {})
        against = by_defense.get("none" if rate == 0 else "oracle", {})
        paired = [(row, against[seed]) for seed, row in default.items() if seed in against]
        keeps = "" if not paired else ("yes" if all(r["lesson_score"] >= 0.95 * a["lesson_score"] for r, a in paired)
                                       else "no: " + ", ".join(f"seed {r['seed']} {r['lesson_score']:.3f} against "
                                                               f"{a['lesson_score']:.3f}" for r, a in paired
                                                               if r["lesson_score"] < 0.95 * a["lesson_score"]))
        oracle = by_defense.get("oracle", {})
        ended = [(row, oracle[seed]) for seed, row in default.items() if seed in oracle]
        ends = "" if rate == 0 or not ended else ("yes" if all(r["asr"] <= o["asr"] + 0.02 for r, o in ended)
                                                  else "no: " + ", ".join(f"seed {r['seed']} ASR {r['asr']:.2f}"
                                                                          for r, o in ended
                                                                          if r["asr"] > o["asr"] + 0.02))
        seeds = len(default)
        lines.append(f"| {lesson} | {attack} | {rate:g} | {seeds} | " + " | ".join(shown) + f" | {keeps} | {ends} |")
    return "\n".join(lines)


def canaries_table(rows: list[dict], metrics: list[str]) -> str:
    """Per judged cell (benchmarks/canaries.py): the real poisons' recall, the canary recall of the
    kind nearest the attack and of every kind, the real samples whose flags differ without the
    canaries, and the judgement's time with them over without."""
    lines = ["| world, task | attack | poison rate | seed | real recall | nearest kind: canary recall | every kind | "
             "flags that differ | time with / without (other work running) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kinds = ", ".join(f"{kind} {recall:.1f}" for kind, recall in r["canary_recall"].items())
        nearest = r["canary_recall"].get(r["nearest_kind"])
        near = f"{r['nearest_kind']}: {nearest:.2f}" if nearest is not None else f"{r['nearest_kind']}: none planted"
        real = "no poisons" if r["real_recall"] is None else f"{r['real_recall']:.2f}"
        lines.append(f"| {r['world']}, {r['task']} | {r['attack'] if r['n_poisoned'] else 'none'} | "
                     f"{r['poison_rate']:g} | {r['seed']} | {real} | {near if r['nearest_kind'] else '-'} | {kinds} | "
                     f"{r['flags_differ']} of {r['n']} | "
                     f"{r['judge_s_with'] / r['judge_s_without']:.2f} |")
    return "\n".join(lines)


def prefix_table(rows: list[dict], metrics: list[str]) -> str:
    """benchmarks/prefix_reuse.py's rows: per attack, the first verdict's flags with the grey pass's
    prefix reused against the whole pass; the time of that verdict's scoring; the prefix's share of
    the grey pass's positions."""
    lines = ["| attack (10 %, 1,000 samples) | flags that differ | flagged whole / reused | poisons flagged whole / "
             "reused | rank correlation: image contradiction, shared answer |", "|---|---|---|---|---|"]
    lines += [f"| {r['attack']} | {r['flags_differ']} | {r['flagged']['False']} / {r['flagged']['True']} | "
              f"{r['poisons_flagged']['False']} / {r['poisons_flagged']['True']} | "
              f"{r['spearman']['image_contradiction']:.5f}, {r['spearman']['shared_answer']:.5f} |"
              for r in rows if r["what"] == "agreement"]
    lines += ["", "| scoring | samples | pairs | seconds, whole pass | seconds, prefix reused | median ratio |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['scores']} | {r['n']} | {r['repeats']} | {', '.join(map(str, r['seconds_whole']))} | "
              f"{', '.join(map(str, r['seconds_reused']))} | {r['ratio_median']:.2f}x |"
              for r in rows if r["what"] == "time"]
    lines += ["", "| model | instruction + answer tokens | the shared prefix's share of a grey row's positions |",
              "|---|---|---|"]
    lines += [f"| {r.get('estimate_for', r['model'] + ', measured')} | "
              f"{r.get('instruction_and_answer_tokens', 'the shapes task')} | {100 * r['prefix_share']:.1f} % |"
              for r in rows if r["what"] == "positions"]
    return "\n".join(lines)


def scale_table(rows: list[dict], metrics: list[str]) -> str:
    """benchmarks/scan_scale.py's rows (each size and process count: time, throughput at the margin
    since the size before, peak memory against the peak at 10,000), then warm_size.py's (the
    judgement of 10,000 samples with warm sets of several sizes)."""
    lines = ["| processes | samples | wall s | samples/s | samples/s since the size before | peak MB | "
             "peak / peak at 10,000 | poisons flagged | clean flagged |", "|---|---|---|---|---|---|---|---|---|"]
    for processes in sorted({r["processes"] for r in rows if r.get("what") == "scan"}):
        mine = sorted((r for r in rows if r.get("what") == "scan" and r["processes"] == processes),
                      key=lambda r: r["n"])
        at_10k = next((r["peak_rss_mb"] for r in mine if r["n"] == 10_000), None)
        for before, r in zip([None, *mine], mine):
            margin = f"{(r['n'] - before['n']) / (r['wall_s'] - before['wall_s']):.0f}" if before else ""
            against = f"{r['peak_rss_mb'] / at_10k:.2f}x" if at_10k else ""
            lines.append(f"| {processes} | {r['n']:,} | {r['wall_s']:.1f} | {r['samples_per_s']:.0f} | {margin} | "
                         f"{r['peak_rss_mb']:.0f} | {against} | {r['poisons_flagged']:.3f} | "
                         f"{r['clean_flagged']:.3f} |")
    warm = [r for r in rows if r.get("what") != "scan"]
    if warm:
        lines += ["", "| samples | poisons | warm-up | seed | warm_share | warm_epochs | warm set | drawn | "
                  "poisons flagged | clean flagged | clean flagged of those judged | judge s |", "|---" * 12 + "|"]
        for r in warm:
            poisons = f"{r['poisons_flagged']:.3f}" if r["poisons_flagged"] is not None else ""
            held = f"{r['held_clean_flagged']:.3f}" if "held_clean_flagged" in r else ""  # not recorded at first
            # a bounded warm set is a draw (from the candidates in sample order; "score order": before d5c9a4e)
            draw = r.get("draw", "sample order") if r.get("warm_max") or "draw" in r else ""
            lines.append(f"| {r['n']:,} | {r['attack']} {r['poison_rate']:g} | "
                         f"{r.get('training', 'full, lr 5e-4, batches of 16')} | {r['seed']} | {r['warm_share']:g} | "
                         f"{r.get('warm_epochs', 1.0):g} | {r['warm_set']} | {draw} | {poisons} | "
                         f"{r['clean_flagged']:.3f} | {held} | {r['judge_s']:.0f} |")
    return "\n".join(lines)


TABLES = {"results": results_table, "probe": probe_table, "cost": cost_rows_table, "clean": clean_table,
          "settings": settings_table, "lessons": lessons_table, "canaries": canaries_table, "scale": scale_table,
          "prefix": prefix_table}


def main() -> None:
    parts = ["# Benchmarks", "", findings_text("intro.md"), ""]
    shipped = shipped_checkpoints()
    found = summary_sections(SECTIONS)
    plot_summary(found, SUMMARY_PLOT)
    earlier = [section_label(section) for section, rows in found if any(before_lessons(row) for row in rows)]
    parts += ["## Summary", "", SUMMARY_LEGEND, "", summary_table(found), "",
              *([f"BYORn's rows in {', '.join(earlier)} were measured before the lesson rules, all or some of "
                 "them (their sections say which); the other grids' rows and the lessons section are on the shipped "
                 "default.", ""]
                if earlier else []),
              f"![each cell's ASR, undefended and under BYORn]({SUMMARY_PLOT.relative_to(ROOT).as_posix()})", "",
              "## Contents", "", *(f"- [{s.title}]({section_anchor(s.title)})" for s in SECTIONS), ""]
    headline_grids = [name for section in SECTIONS if section.headline for name in section.results]
    headline_rows = [row for name in headline_grids for row in read_results(RESULTS / f"{name}.jsonl")]
    headline = headline_table(headline_rows) if headline_rows else "_No results recorded yet._"
    headline_printed = False
    for section in SECTIONS:
        rows = [{**row, "grid": name} for name in section.results for row in read_results(RESULTS / f"{name}.jsonl")
                if not section.world or row.get("world", "shapes") == section.world]
        refuse_stale(section.title, rows, shipped)
        shown = [f"{name}.jsonl" for name in [*section.results, section.scores, section.warmed_scores] if name]
        parts += [f"## {section.title}", "", f"Reproduce: `{section.command}`", "",
                  findings_summary(section.findings, shown), ""]
        if note := before_lessons_note(rows):
            parts += [note, ""]
        if section.quality and (path := ROOT / "benchmarks" / "results" / section.quality).exists():
            figures = json.loads(path.read_text(encoding="utf-8"))
            refuse_stale(f"{section.title} ({section.quality})", [figures], shipped)
            parts += [(f"The pretrained model's own captions of the first {figures['n']} test photos "
                       f"(`{section.quality_command}`): CIDEr {figures['cider']:.3f}, BLEU-4 {figures['bleu4']:.3f}, "
                       "mean NLL of the downstream archive "
                       f"notes {figures['downstream_nll']:.2f} nats a token; for example {figures['example']!r}."), ""]
        if rows:
            parts += [" ".join(filter(None, [measured_on(rows), cell_time(rows, "--shard" in section.command)])), ""]
        if section.table in ("results", "lessons") and (misses := undefended_misses(rows)):
            parts += [misses, ""]
        if section.headline and not headline_printed:
            parts += [HEADLINE_LEGEND, "", headline, "", "Every cell:", ""]
            headline_printed = True
        parts += [TABLES[section.table](rows, section.metrics) if rows else "_No results recorded yet._", ""]
        if section.figure:
            parts += [f"![{Path(section.figure).stem}](benchmarks/plots/{section.figure})", ""]
        if section.scores:
            scored = [r for r in read_results(RESULTS / f"{section.scores}.jsonl") if r["world"] == section.world]
            refuse_stale(f"{section.title} ({section.scores}.jsonl)", scored, shipped)
            parts += [("The pretrained model's scores before training (`benchmarks/judgement_scores.py`; the "
                       "first of the default's two verdicts): AUROC of each score against the poisons ('default': "
                       "the four joined), and the share of poisons and of clean samples their union flags at "
                       "several k:"), "", scores_table(scored), ""]
        if section.warmed_scores:
            scored = [r for r in read_results(RESULTS / f"{section.warmed_scores}.jsonl")
                      if r["world"] == section.world]
            refuse_stale(f"{section.title} ({section.warmed_scores}.jsonl)", scored, shipped)
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
            others = {SUMMARY_PLOT.name, *(s.figure for s in SECTIONS if s.figure)}  # shown where they belong
            parts += [f"![{p.stem}](benchmarks/plots/{p.name})" for p in sorted(PLOTS.glob("*.png"))
                      if p.name not in others] + [""]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(parts), encoding="utf-8")
    write_readme_headline(headline, headline_grids)  # last: the README changes only with a build that went through


if __name__ == "__main__":
    main()
