"""The benchmark grid: attacks x defenses x poison rates x seeds, one JSON line per finished cell.

Resumable: a cell whose key is already in the results file is skipped, so an interrupted grid
continues where it stopped. Each cell fine-tunes byorn-tiny on the shapes downstream task and
measures ASR on triggered test inputs and clean scene-F1 on clean test inputs.
"""

from __future__ import annotations

import json
import logging
import re
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from byorn.attacks import build_attack, one_modality_test_sets, poison, triggered_test_set
from byorn.attacks.poison import MANIFEST_NAME, write_manifest
from byorn.config import ConfigError, PretrainConfig, TrainConfig, from_dict
from byorn.data import Sample
from byorn.defenses import DEFENSES, Defense, build_defense
from byorn.defenses.judging import JudgeConfig
from byorn.evaluate import evaluate_clean
from byorn.fileio import atomic_write_text
from byorn.metrics import attack_success_rate, detection_scores
from byorn.models import CACHE_DIR, CACHED_MODELS, cached_model_ready, load_vlm
from byorn.report import SCORES_NAME
from byorn.scoring import model_fingerprint
from byorn.train import finetune
from byorn.worlds import flickr8k, shapes

# Besides the registered defenses: "oracle" trains on the clean samples only (the upper bound).
ORACLE = "oracle"
WORLDS = ("shapes", "flickr8k")
log = logging.getLogger(__name__)


def available_defenses() -> list[str]:
    return sorted([*DEFENSES, ORACLE])


@dataclass(frozen=True)
class AttackSpec:
    """One attack of the grid: a trigger, a target modifier and their options."""

    trigger: str
    target: str = "fixed"
    options: dict[str, Any] = field(default_factory=dict)
    clean_label: bool = False  # poison samples whose response already fits the target (see poison())

    @property
    def name(self) -> str:
        """Unique per grid row: options are part of it, so two variants of one trigger never share cells."""
        options = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.trigger}+{self.target}" + (f"({options})" if options else "") + \
            (" clean-label" if self.clean_label else "")


@dataclass(frozen=True)
class DefenseSpec:
    """One defense of the grid; options make variants (a threshold sweep is several of these)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        options = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return self.name + (f"({options})" if options else "")


@dataclass(frozen=True)
class GridConfig:
    attacks: list[AttackSpec]
    defenses: list[DefenseSpec]
    poison_rates: list[float]
    seeds: list[int]
    n_train: int = 1000
    n_test: int = 200
    train: TrainConfig = field(default_factory=TrainConfig)
    task: str = "describe"  # the shapes downstream task: describe, caption or mixed (two styles)
    world: str = "shapes"  # or flickr8k: real photos (data: the Flickr8k folder)
    data: str = ""

    def task_samples(self, n: int, seed: int, split: str) -> list[Sample]:
        """The world's downstream samples: its training set (split "train") or test set."""
        if self.world == "flickr8k":
            return flickr8k.downstream_samples(self.data, n, seed, split=split)
        return shapes.downstream_samples(n, seed, split=split, task=self.task)


def load_grid(path: str | Path) -> GridConfig:
    """A YAML grid; unknown keys, defenses and attack names are errors before anything runs."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    known = {"attacks", "defenses", "poison_rates", "seeds", "n_train", "n_test", "train", "task", "world", "data"}
    if unknown := sorted(set(raw) - known):
        raise ConfigError(f"{path}: unknown key(s) {unknown}. Valid keys: {', '.join(sorted(known))}")
    attacks = [AttackSpec(**a) for a in raw.get("attacks", [])]
    for spec in attacks:
        build_attack(spec.trigger, spec.target, **spec.options)  # fail early on a typo
    # A defense is a name, or {name: ..., options: {...}} for a configured variant.
    defenses = [DefenseSpec(d) if isinstance(d, str) else DefenseSpec(**d) for d in raw.get("defenses", ["none"])]
    if bad := [d.name for d in defenses if d.name not in available_defenses()]:
        raise ConfigError(f"{path}: unknown defense(s) {bad}. Available: {', '.join(available_defenses())}")
    for spec in defenses:
        if spec.name != ORACLE:
            build_defense(spec.name, **spec.options)  # an unknown option fails before anything runs
    task = raw.get("task", "describe")
    if task not in shapes.DOWNSTREAM_TASKS:
        raise ConfigError(f"{path}: task: {task!r} is not one of {', '.join(shapes.DOWNSTREAM_TASKS)}")
    world, data = raw.get("world", "shapes"), str(raw.get("data", ""))
    if world not in WORLDS:
        raise ConfigError(f"{path}: world: {world!r} is not one of {', '.join(WORLDS)}")
    if world == "flickr8k" and not Path(data).is_dir():
        raise ConfigError(f"{path}: data: world flickr8k needs the Flickr8k folder (relative to where byorn runs); "
                          f"{data!r} is not a folder")
    return GridConfig(attacks, defenses, [float(r) for r in raw.get("poison_rates", [0.1])], raw.get("seeds", [0]),
                      raw.get("n_train", 1000), raw.get("n_test", 200),
                      from_dict(TrainConfig, raw.get("train", {}), f"{path}: train"), task, world, data)


def cell_key(attack: str, defense: str, rate: float, seed: int) -> str:
    return f"{attack}|{defense}|{rate:g}|{seed}"


def _asr(vlm, inputs, rule) -> tuple[float, int]:
    responses = vlm.generate(inputs, max_new_tokens=64, desc="triggered")
    return attack_success_rate(responses, [s.meta["clean_response"] for s in inputs], rule)


def run_cell(spec: AttackSpec, defense: DefenseSpec, rate: float, seed: int, grid: GridConfig, run_dir: Path,
             score_cache: Path | None = None) -> dict:
    """Poison, defend, fine-tune, evaluate; returns the results line.

    score_cache: a folder the cells of a grid share for reference scores (a defense's own
    cache_dir option wins). Scores are keyed by model, variant and data, so BYORn and
    score-and-drop on the same poisoned set score it once, and results do not change.
    """
    started = time.perf_counter()
    attack = build_attack(spec.trigger, spec.target, **spec.options)
    clean_train = grid.task_samples(grid.n_train, seed, "train")
    test = grid.task_samples(grid.n_test, seed, "test")
    vlm = load_vlm(grid.train.model)
    # The pretrained model is also the white-box attacker's reference (adaptive attacks).
    poisoned, manifest = poison(clean_train, attack, rate, seed, clean_label=spec.clean_label, reference=vlm)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(manifest, run_dir / MANIFEST_NAME)

    train_config = TrainConfig(**{**asdict(grid.train), "seed": seed})
    row: dict[str, Any] = {"world": grid.world, "attack": spec.name, "defense": defense.label, "poison_rate": rate,
                           "seed": seed,
                           # which checkpoint (name@weights fingerprint): a retrained byorn-tiny keeps its name
                           "model": f"{grid.train.model}@{model_fingerprint(vlm, reference=False).hex()[:12]}"}
    if defense.name == ORACLE:
        train_set, hook = [s for s in poisoned if not s.meta.get("is_poisoned")], None
    else:
        hook = build_defense(defense.name, **defense.options)
        if score_cache is not None and isinstance(getattr(hook, "config", None), JudgeConfig) \
                and not hook.config.cache_dir:
            hook.config.cache_dir = str(score_cache)
        prepared = time.perf_counter()
        hook.prepare(vlm, poisoned, run_dir, train=train_config)
        row["prepare_s"] = round(time.perf_counter() - prepared, 1)
        row.update(_detection(hook, poisoned))
        _write_suspicion(hook, poisoned, run_dir / SCORES_NAME)
        train_set = hook.training_set(poisoned)
    # train_s alone is the fine-tuning loop (with the defense's replacements): comparable across
    # defenses for the same steps, where wall_s also counts poisoning, scoring and evaluation.
    training = time.perf_counter()
    finetune(vlm, train_set, train_config, run_dir, hook=hook)
    row["train_s"] = round(time.perf_counter() - training, 1)

    def shown(inputs: list) -> list:  # what the deployed model is given: ONION cleans it first
        return [hook.test_input(s) for s in inputs] if hook else inputs

    deployed = hook.deployed(vlm) if hook else vlm  # reference-ratio decoding guards its answers
    rule = attack.target.asr_rule()
    evaluating = time.perf_counter()
    asr, n_asr = _asr(deployed, shown(triggered_test_set(test, attack)), rule)
    clean = evaluate_clean(deployed, shown(test))
    row.update({"asr": asr, "asr_n": n_asr, "clean_score": clean["clean_score"],
                "scene_exact": clean.get("scene_exact"), "cider": clean["cider"], "bleu4": clean["bleu4"],
                "n_poisoned": sum(s.meta.get("is_poisoned", False) for s in poisoned),
                "n_train": len(train_set)})
    if spec.trigger == "multimodal":
        one = {part: _asr(deployed, shown(inputs), rule)[0]
               for part, inputs in one_modality_test_sets(test, attack).items()}
        row.update({"one_modality_asr": max(one.values()), "image_only_asr": one["image"], "text_only_asr": one["text"]})
    row["eval_s"] = round(time.perf_counter() - evaluating, 1)  # test-time cost (decoding defenses)
    row["wall_s"] = round(time.perf_counter() - started, 1)
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    row["run_dir"] = str(run_dir)
    return row


def _write_suspicion(defense: Defense, samples: list, path: Path) -> None:
    """Each sample's suspicion and verdict, for the report's histograms (nothing for a defense
    that does not judge samples)."""
    if defense.suspicion is None or defense.flagged is None:
        return
    atomic_write_text(path, "".join(json.dumps({"id": s.id, "score": score, "flagged": hit}) + "\n"
                                    for s, score, hit in zip(samples, defense.suspicion, defense.flagged)))


def _detection(defense: Defense, samples: list) -> dict[str, float]:
    """Detection quality of a defense that judges each sample (empty for one that does not)."""
    if defense.flagged is None or defense.suspicion is None:
        return {}
    poisoned = [bool(s.meta.get("is_poisoned")) for s in samples]
    found = detection_scores(defense.suspicion, poisoned, defense.flagged)
    return {"detect_auroc": found["auroc"], "detect_precision": found["precision"], "detect_recall": found["recall"],
            "n_flagged": sum(defense.flagged)}


def run_grid(config_path: str | Path, results_path: str | Path, runs_dir: str | Path,
             shard: tuple[int, int] = (0, 1)) -> list[dict]:
    """Run every cell not yet in `results_path`, appending one JSON line per finished cell.

    shard (i, n): only the cells at positions i, i + n, i + 2n, ... of the full grid, so n
    processes can share one grid and one results file (each appends whole lines)."""
    grid = load_grid(config_path)
    _ensure_pretrained(grid)
    results_path, runs_dir = Path(results_path), Path(runs_dir)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    # One results file may hold several worlds' grids (rows before the world field are shapes')
    done = {cell_key(r["attack"], r["defense"], r["poison_rate"], r["seed"]) for r in read_results(results_path)
            if r.get("world", "shapes") == grid.world}
    cells = [(a, d, r, s) for a in grid.attacks for d in grid.defenses for r in grid.poison_rates for s in grid.seeds]
    cells = cells[shard[0]::shard[1]]
    todo = [c for c in cells if cell_key(c[0].name, c[1].label, c[2], c[3]) not in done]
    rows = []
    for spec, defense, rate, seed in tqdm(todo, desc="benchmark cells", disable=None):
        key = cell_key(spec.name, defense.label, rate, seed)
        row = run_cell(spec, defense, rate, seed, grid, runs_dir / re.sub(r"[^A-Za-z0-9_.=-]+", "_", key),
                       score_cache=runs_dir / "score_cache")
        with results_path.open("a", encoding="utf-8") as handle:  # one whole line per cell: resumable
            handle.write(json.dumps(row) + "\n")
        rows.append(row)
    return rows


def _ensure_pretrained(grid: GridConfig) -> None:
    """A grid on a cached model (byorn-tiny-flickr) pretrains it once, outside the repository."""
    if grid.train.model not in CACHED_MODELS or cached_model_ready(grid.train.model):
        return
    if grid.world != "flickr8k":
        raise ConfigError(f"{grid.train.model} is pretrained on Flickr8k; set world: flickr8k and data:")
    from byorn.pretrain import pretrain

    log.info("pretraining %s once into %s", grid.train.model, CACHE_DIR)
    pretrain(CACHE_DIR / grid.train.model, PretrainConfig(world="flickr8k", data=grid.data))


def read_results(path: str | Path) -> list[dict]:
    """Finished cells; a torn last line (a crash mid-write) is ignored, so it is rerun."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
