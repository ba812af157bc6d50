"""The benchmark grid: attacks x defenses x poison rates x seeds, one JSON line per finished cell.

Resumable: a cell whose key is already in the results file is skipped, so an interrupted grid
continues where it stopped. Each cell fine-tunes byorn-tiny on the shapes downstream task and
measures ASR on triggered test inputs and clean scene-F1 on clean test inputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from byorn.attacks import (
    build_attack,
    one_modality_test_sets,
    poison,
    triggered_test_set,
)
from byorn.attacks.poison import MANIFEST_NAME, write_manifest
from byorn.config import ConfigError, PretrainConfig, TrainConfig, check_choice, from_dict, option, read_yaml
from byorn.data import Sample
from byorn.defenses import DEFENSES, Defense, build_defense
from byorn.defenses.byorn import JudgingDefense
from byorn.evaluate import asr_new_tokens, evaluate_clean
from byorn.fileio import append_jsonl, write_jsonl
from byorn.metrics import attack_success_rate, detection_scores
from byorn.models import CACHE_DIR, CACHED_MODELS, cached_model_ready, load_vlm, resolve_model_path
from byorn.models.hf import VLM
from byorn.report import SCORES_NAME
from byorn.scoring import checkpoint_label
from byorn.train import finetune
from byorn.trained import WarmUps, trained_or_found
from byorn.worlds import WORLDS
from byorn.worlds.lessons import LESSONS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttackSpec:
    """One attack of the grid: a trigger, a target modifier and their options."""

    trigger: str = field(metadata={"help": "trigger name (`byorn list attacks`)"})
    target: str = option("fixed", "target modifier name")
    options: dict[str, Any] = field(default_factory=dict, metadata={"help": "the trigger's and target's options"})
    clean_label: bool = option(False, "poison samples whose response already fits the target (see poison())")

    @property
    def name(self) -> str:
        """Unique per grid row: options are part of it, so two variants of one trigger never share cells."""
        options = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.trigger}+{self.target}" + (f"({options})" if options else "") + \
            (" clean-label" if self.clean_label else "")


@dataclass(frozen=True)
class DefenseSpec:
    """One defense of the grid; options make variants (a threshold sweep is several of these)."""

    name: str = field(metadata={"help": "defense name (`byorn list defenses`)"})
    options: dict[str, Any] = field(default_factory=dict, metadata={"help": "the defense's options"})

    @property
    def label(self) -> str:
        options = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return self.name + (f"({options})" if options else "")


@dataclass(frozen=True)
class GridConfig:
    """A benchmark grid: every attack x defense x poison rate x seed is one cell."""

    attacks: list[AttackSpec] = field(default_factory=list, metadata={"help": "the attacks"})
    defenses: list[DefenseSpec] = field(default_factory=lambda: [DefenseSpec("none")],
                                        metadata={"help": "the defenses: a name, or {name: ..., options: {...}}"})
    poison_rates: list[float] = field(default_factory=lambda: [0.1], metadata={"help": "shares of poisoned samples"})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "one cell per seed"})
    n_train: int = option(1000, "training samples per cell", min=1)
    n_test: int = option(200, "test samples per cell", min=1)
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "the fine-tuning (TrainConfig keys)"})
    task: str = option("describe", "the downstream task: describe (the world's own), caption or mixed (shapes: two "
                                   "styles), or a lesson the model lacks (shapes: count, yesno, rename; flickr8k: dog)")
    world: str = option("shapes", "shapes, or flickr8k: real photos (data: the Flickr8k folder)")
    data: str = option("", "world flickr8k: the Flickr8k folder, relative to where byorn runs")

    def task_samples(self, n: int, seed: int, split: str) -> list[Sample]:
        """The world's downstream samples: its training set (split "train") or test set."""
        return WORLDS[self.world].downstream(n, seed, split, self.data, self.task)


def load_grid(path: str | Path) -> GridConfig:
    """A YAML grid; unknown keys, wrong types, defenses and attack names are errors before anything runs."""
    try:
        raw = read_yaml(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read grid ({exc})") from exc
    if isinstance(raw, dict) and isinstance(raw.get("defenses"), list):  # a bare name is {name: ...}
        raw["defenses"] = [{"name": d} if isinstance(d, str) else d for d in raw["defenses"]]
    grid = from_dict(GridConfig, raw, str(path))
    if bad := [d.name for d in grid.defenses if d.name not in DEFENSES]:
        raise ConfigError(f"{path}: unknown defense(s) {bad}. Available: {', '.join(sorted(DEFENSES))}")
    # Built once here so that a typo in an attack's or a defense's options fails before anything runs
    for kind, specs, build in (("attacks", grid.attacks, lambda a: build_attack(a.trigger, a.target, **a.options)),
                               ("defenses", grid.defenses, lambda d: build_defense(d.name, **d.options))):
        for i, spec in enumerate(specs):
            try:
                build(spec)
            except ValueError as exc:
                raise ConfigError(f"{path}: {kind}[{i}]: {exc}") from None
    _check_cells(grid, path)
    check_choice(f"{path}: world", grid.world, WORLDS)
    check_choice(f"{path}: task", grid.task, WORLDS[grid.world].tasks)
    if grid.train.model not in CACHED_MODELS:  # one pretrained on first use is made by run_grid
        try:
            resolve_model_path(grid.train.model)
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: train.model: {exc}") from None
    if WORLDS[grid.world].needs_data and not Path(grid.data).is_dir():
        raise ConfigError(f"{path}: data: world {grid.world} reads its data from a folder (relative to where byorn "
                          f"runs); {grid.data!r} is not a folder")
    return grid


def _check_cells(grid: GridConfig, path: str | Path) -> None:
    """Every cell of the grid is one to run, once: no empty axis, no value listed twice (its cells
    would run again into the same folders), rates and seeds that a poisoning can take."""
    # as cell_key writes them: two rates that print alike would share a cell's folder and key
    axes = {"attacks": [a.name for a in grid.attacks], "defenses": [d.label for d in grid.defenses],
            "poison_rates": [f"{r:g}" for r in grid.poison_rates], "seeds": grid.seeds}
    for field_name, values in axes.items():
        if not values:
            raise ConfigError(f"{path}: {field_name}: empty, so the grid has no cells")
        if repeated := sorted({str(v) for v in values if values.count(v) > 1}):
            raise ConfigError(f"{path}: {field_name}: {repeated[0]} is listed more than once")
    if bad := [r for r in grid.poison_rates if not 0 <= r <= 1]:  # NaN fails this too
        raise ConfigError(f"{path}: poison_rates: {bad[0]} is not a share in [0, 1]")
    if bad := [s for s in grid.seeds if not 0 <= s < 2**32]:
        raise ConfigError(f"{path}: seeds: {bad[0]} is not a seed in [0, 2**32)")


def cell_key(attack: str, defense: str, rate: float, seed: int) -> str:
    return f"{attack}|{defense}|{rate:g}|{seed}"


def grid_cells(grid: GridConfig) -> list[tuple[AttackSpec, DefenseSpec, float, int]]:
    """Every cell of the grid, in the order it runs them. A rate of 0 poisons nothing: its cells are
    the same under every attack, run once under the first."""
    return [(a, d, r, s) for a in grid.attacks for d in grid.defenses for r in grid.poison_rates for s in grid.seeds
            if r > 0 or a is grid.attacks[0]]


def cell_dir(runs_dir: Path, key: str) -> Path:
    """The run folder of the cell `key` (`cell_key`) under `runs_dir`."""
    return runs_dir / re.sub(r"[^A-Za-z0-9_.=-]+", "_", key)


def _asr(vlm, inputs, rule) -> tuple[float, int]:
    responses = vlm.generate(inputs, max_new_tokens=asr_new_tokens(vlm, rule), desc="triggered")
    return attack_success_rate(responses, [s.meta["clean_response"] for s in inputs], rule)


def run_cell(spec: AttackSpec, defense: DefenseSpec, rate: float, seed: int, grid: GridConfig, run_dir: Path,
             cache: Path | None = None) -> dict:
    """Poison, defend, fine-tune, evaluate; returns the results line.

    cache: a folder the cells of a grid share. Reference scores, keyed by model, variant and data,
    so BYORn and score-and-drop on the same poisoned set score it once (a defense's own cache_dir
    option wins); and fine-tunes (byorn.trained), so a cell that would fine-tune the same weights
    on the same samples with the same settings as an earlier one (the oracle under attacks that
    poison the same indices, BYE's probe and the undefended cell, score-and-drop's warm-up and
    BYORn's) loads those weights instead. The results do not change.
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

    train_config = dataclasses.replace(grid.train, seed=seed)
    row: dict[str, Any] = {"world": grid.world, "attack": spec.name, "defense": defense.label, "poison_rate": rate,
                           "seed": seed,
                           # which checkpoint (name@weights fingerprint): a retrained byorn-tiny keeps its name
                           "model": checkpoint_label(grid.train.model, vlm)}
    hook = build_defense(defense.name, **_with_cache(defense, cache))
    warm_ups = WarmUps(hook.config.cache_dir) if isinstance(hook, JudgingDefense) and hook.config.cache_dir else None
    if warm_ups:  # score-and-drop warms its reference up exactly as BYORn does on the same poisoned set
        hook.run_warm_up = warm_ups
    # every option, defaults resolved: a label names only what the grid changed, so after a default
    # changes this is what tells an old row from a new one
    row["defense_options"] = options_record({k: v for k, v in hook.resolved().items() if k != "defense"})
    row.update(hook.run_facts(vlm))
    prepared = time.perf_counter()
    hook.prepare(vlm, poisoned, run_dir, train=train_config)
    row["prepare_s"] = round(time.perf_counter() - prepared, 1)
    row.update(_detection(hook, poisoned))
    _write_suspicion(hook, poisoned, run_dir / SCORES_NAME)
    train_set = hook.training_set(poisoned)
    # train_s alone is the fine-tuning loop (with the defense's replacements), where wall_s also
    # counts poisoning, scoring and evaluation. BYORn's warm_start runs the loop's first steps in
    # prepare (prepare_s); prepare_s + train_s compares with an undefended train_s.
    training = time.perf_counter()
    vlm, trained_from = _finetune_or_load(vlm, train_set, train_config, run_dir, hook, cache)
    row["train_s"] = round(time.perf_counter() - training, 1)
    # fine-tunes this cell loaded where an earlier cell had run them: its times leave them out
    row["loaded_from"] = [path for path in (hook.loaded_from, *(warm_ups.loaded if warm_ups else ()), trained_from)
                          if path]

    def shown(inputs: list) -> list:  # what the deployed model is given: ONION cleans it first
        return [hook.test_input(s) for s in inputs]

    deployed = hook.deployed(vlm)  # reference-ratio decoding guards its answers
    rule = attack.target.asr_rule()
    evaluating = time.perf_counter()
    asr, n_asr = _asr(deployed, shown(triggered_test_set(test, attack)), rule)
    clean = evaluate_clean(deployed, shown(test))
    if "lesson_score" in clean:
        row.update({"lesson": grid.task, "lesson_score": clean["lesson_score"]})
    row.update({"asr": asr, "asr_n": n_asr, "clean_score": clean["clean_score"],
                "scene_exact": clean.get("scene_exact"), "cider": clean["cider"], "bleu4": clean["bleu4"],
                "n_poisoned": sum(s.meta.get("is_poisoned", False) for s in poisoned),
                "n_judged": len(poisoned), "n_train": len(train_set)})  # n_train: less what a defense left out
    if one_modality := one_modality_test_sets(test, attack):  # a dual-key trigger: does either half fire?
        one = {part: _asr(deployed, shown(inputs), rule)[0] for part, inputs in one_modality.items()}
        row.update({"one_modality_asr": max(one.values()), "image_only_asr": one["image"],
                    "text_only_asr": one["text"]})
    row["eval_s"] = round(time.perf_counter() - evaluating, 1)  # test-time cost (decoding defenses)
    row["wall_s"] = round(time.perf_counter() - started, 1)
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    row["run_dir"] = str(run_dir)
    return row


def _finetune_or_load(vlm: VLM, train_set: list[Sample], config: TrainConfig, run_dir: Path, hook: Defense,
                      cache: Path | None) -> tuple[VLM, str | None]:
    """`vlm` fine-tuned on `train_set` in `run_dir`, or, where the defense leaves the batches alone,
    the same fine-tune found in the grid's cache (byorn.trained); with where it was found."""
    def train() -> VLM:
        finetune(vlm, train_set, config, run_dir, hook=hook)
        return vlm

    model, found = trained_or_found(vlm, train_set, config, cache if hook.passive else None, train, run_dir)
    return model, str(found) if found else None


def options_record(options: dict[str, Any]) -> dict[str, Any]:
    """A defense's options as a results row records them (JSON has no infinity: `absolute` is "inf")."""
    return {k: v if not isinstance(v, float) or math.isfinite(v) else str(v) for k, v in options.items()}


def _with_cache(defense: DefenseSpec, cache: Path | None) -> dict[str, Any]:
    """The defense's options, with the grid's shared cache where it takes one and names none."""
    config_class = DEFENSES[defense.name].config_class
    options = dict(defense.options)
    takes_cache = config_class is not None and "cache_dir" in {f.name for f in dataclasses.fields(config_class)}
    if cache is not None and takes_cache and not options.get("cache_dir"):
        options["cache_dir"] = str(cache)
    return options


def _write_suspicion(defense: Defense, samples: list, path: Path) -> None:
    """Each sample's suspicion and verdict, for the report's histograms (nothing for a defense
    that does not judge samples)."""
    if defense.suspicion is None or defense.flagged is None:
        return
    write_jsonl(path, ({"id": s.id, "score": score, "flagged": hit}
                       for s, score, hit in zip(samples, defense.suspicion, defense.flagged)))


def _detection(defense: Defense, samples: list) -> dict[str, float]:
    """Detection quality of a defense that judges each sample (empty for one that does not)."""
    if defense.flagged is None or defense.suspicion is None:
        return {}
    poisoned = [bool(s.meta.get("is_poisoned")) for s in samples]
    found = detection_scores(defense.suspicion, poisoned, defense.flagged)
    return {"detect_auroc": found["auroc"], "detect_precision": found["precision"], "detect_recall": found["recall"],
            "n_flagged": sum(defense.flagged)}


def setting_key(grid: GridConfig) -> str:
    """What every cell of `grid` shares (all but its four axes), as the grid gives it: the values
    that differ from the defaults, hashed (12 hex digits). A results file's rows carry it, so a
    resumed grid whose setting changed does not take the old rows for its own."""
    def given(config: Any) -> dict[str, Any]:
        defaults = type(config)()
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
                if getattr(config, f.name) != getattr(defaults, f.name)}

    setting = {k: v for k, v in given(grid).items() if k not in ("attacks", "defenses", "poison_rates", "seeds")}
    setting["train"] = given(grid.train)
    return hashlib.sha256(json.dumps(setting, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_grid(config_path: str | Path, results_path: str | Path, runs_dir: str | Path,
             shard: tuple[int, int] = (0, 1)) -> list[dict]:
    """Run every cell not yet in `results_path`, appending one JSON line per finished cell.

    shard (i, n): only the cells at positions i, i + n, i + 2n, ... of the full grid, so n
    processes can share one grid and one results file (each appends whole lines)."""
    grid = load_grid(config_path)
    _ensure_pretrained(grid)
    results_path, runs_dir = Path(results_path), Path(runs_dir)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    # One results file may hold several worlds' and lessons' grids (rows before the world field are shapes')
    lesson = grid.task if grid.task in LESSONS else None
    rows_here = [r for r in read_results(results_path)
                 if r.get("world", "shapes") == grid.world and r.get("lesson") == lesson]
    setting = setting_key(grid)
    if other := [r for r in rows_here if r.get("setting", setting) != setting]:
        raise ConfigError(f"{results_path}: {len(other)} cell(s) there were run with another setting (n_train, n_test, "
                          f"task, data or train) than {config_path} has now, so they would be kept as if run with "
                          "this one: write to another --results file, or remove those lines to run them again")
    done = {cell_key(r["attack"], r["defense"], r["poison_rate"], r["seed"]) for r in rows_here}
    cells = grid_cells(grid)[shard[0]::shard[1]]
    todo = [c for c in cells if cell_key(c[0].name, c[1].label, c[2], c[3]) not in done]
    rows = []
    for spec, defense, rate, seed in tqdm(todo, desc="benchmark cells", disable=None):
        key = cell_key(spec.name, defense.label, rate, seed)
        row = run_cell(spec, defense, rate, seed, grid, cell_dir(runs_dir, key),
                       cache=runs_dir / "cache")
        row["setting"] = setting
        append_jsonl(results_path, row)  # one whole line per cell: resumable
        rows.append(row)
    return rows


def _ensure_pretrained(grid: GridConfig) -> None:
    """A grid on a cached model (byorn-tiny-flickr) pretrains it once, outside the repository."""
    if grid.train.model not in CACHED_MODELS or cached_model_ready(grid.train.model):
        return
    world = next(w for w in WORLDS.values() if w.model == grid.train.model)
    if grid.world != world.name:
        raise ConfigError(f"{grid.train.model} is pretrained on {world.name}; set world: {world.name} and data:")
    from byorn.pretrain import pretrain

    log.info("pretraining %s once into %s", grid.train.model, CACHE_DIR)
    pretrain(CACHE_DIR / grid.train.model, PretrainConfig(world=world.name, data=grid.data))


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
