"""The benchmarks folder and the pages that describe it hold together: grids that benchmarks/README.md
says share a setting have it, no script reaches into byorn's private names, and every link and
every benchmarks/ path the Markdown pages name is there."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parent.parent
BENCHMARKS = ROOT / "benchmarks"
PAGES = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md")),
         *sorted(BENCHMARKS.rglob("README.md")), *sorted((BENCHMARKS / "findings").glob("*.md"))]


def shared_settings() -> list[tuple[str, list[str]]]:
    """(setting, its grids) for each row of benchmarks/README.md's table of shared settings."""
    text = (BENCHMARKS / "README.md").read_text(encoding="utf-8").split("## Shared settings", 1)[1]
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| ") and ".yaml" in line]
    return [(cells[0].strip(), re.findall(r"`([^`]+\.yaml)`", cells[-1])) for cells in rows]


def test_this_checkout_computes_the_published_fingerprint_of_byorn_tiny():
    """Every results row's label of the shipped byorn-tiny is what a fresh clone computes, so that
    build_md accepts the published rows there (byorn-tiny-flickr is built locally: build_md checks it)."""
    from byorn.models import load_vlm
    from byorn.scoring import checkpoint_label

    label = checkpoint_label("byorn-tiny", load_vlm("byorn-tiny"))
    published = {json.loads(line).get("model") for path in (BENCHMARKS / "results").glob("*.jsonl")
                 for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    assert {name for name in published if str(name).startswith("byorn-tiny@")} == {label}


def test_grids_named_as_sharing_a_setting_have_it():
    settings = shared_settings()
    assert [name for name, _ in settings] == ["standard", "judgement", "lessons", "real photos"]
    for name, grids in settings:
        raw = {grid: yaml.safe_load((BENCHMARKS / grid).read_text(encoding="utf-8")) for grid in grids}
        first, *_ = raw.values()
        for grid, config in raw.items():
            # each lesson is a task of its own, with the samples it needs
            for key in ("train", "world") if name == "lessons" else ("n_train", "train", "world", "task"):
                if key == "task" and name == "standard" and grid == "byorn_mixed.yaml":
                    continue  # a mix of two answer styles, trained the same way
                assert config.get(key) == first.get(key), f"{grid}: {key} differs from the {name} setting"


def test_every_grid_is_in_a_shared_setting_or_said_to_have_its_own():
    own = {"standard_low.yaml", "lessons_dog.yaml"}
    named = {grid for _, grids in shared_settings() for grid in grids} | own
    explore = {f"explore/{p.name}" for p in (BENCHMARKS / "explore").glob("*.yaml")}
    published = {p.name for p in BENCHMARKS.glob("*.yaml")}
    assert published <= named, f"grids in no row of benchmarks/README.md: {sorted(published - named)}"
    assert named - own <= published | explore


@pytest.mark.parametrize("script", sorted(BENCHMARKS.rglob("*.py")), ids=lambda p: p.name)
def test_no_benchmark_script_imports_a_private_name_of_byorn(script):
    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("byorn"):
            private = [alias.name for alias in node.names if alias.name.startswith("_")]
            assert not private, f"{script.name} imports {private} from {node.module}"
            assert not any(part.startswith("_") for part in node.module.split(".")), f"{script.name}: {node.module}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_of_a_page_resolves(page):
    text = page.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.relative_to(ROOT)} links to {target}, which is not there"
        assert ROOT.resolve() in path.parents or path == ROOT.resolve(), f"{target} points outside the repository"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_benchmarks_file_a_page_names_is_there(page):
    text = page.read_text(encoding="utf-8")
    for name in re.findall(r"benchmarks/[\w/.*-]+\.(?:yaml|py|jsonl|json|md)", text):
        if "*" in name or "GRID" in name:
            continue
        assert (ROOT / name).exists(), f"{page.relative_to(ROOT)} names {name}, which is not there"


def test_no_page_points_outside_the_repository():
    for page in [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]:
        assert "../shared" not in page.read_text(encoding="utf-8"), page.name


def build_md_module(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_md", BENCHMARKS / "build_md.py")
    build_md = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "build_md", build_md)  # its dataclasses look themselves up there
    spec.loader.exec_module(build_md)
    return build_md


def test_benchmarks_md_opens_with_the_summary_its_results_give(monkeypatch):
    """BENCHMARKS.md's summary table is computed from the results files, as build_md.py writes it."""
    build_md = build_md_module(monkeypatch)
    text = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    table = build_md.summary_table(build_md.summary_sections(build_md.SECTIONS))
    assert text.index(table) < text.index("\n## The standard grid"), "rerun python benchmarks/build_md.py"
    assert (ROOT / "benchmarks" / "plots" / "summary.png").exists()
    for section in build_md.SECTIONS:  # each section's words: the summary, then a link to the rest
        summary = build_md.findings_summary(section.findings)
        assert summary in text
        assert len(summary) < 1200, f"{section.findings}: the summary above its '<!-- more -->' line is long"


def test_a_row_from_before_the_warm_bound_stands_only_where_its_warm_sets_stay_under_it(monkeypatch):
    """A grid of 1,000 samples warms on at most 500 and half a sample per lesson: a bound of 512 draws
    nothing there; the count lesson's 2,000 samples pass it; a row whose grid is unknown proves nothing."""
    build_md = build_md_module(monkeypatch)
    options = {"warm_share": 0.5, "lesson_share": 0.12}
    row = {"run_dir": "runs/judgement/runs/cell", "defense_options": options}
    assert build_md.warm_set_under(row, 512) and not build_md.warm_set_under(row, 500)
    assert not build_md.warm_set_under({**row, "run_dir": "runs/lessons_count/runs/cell"}, 512)
    assert not build_md.warm_set_under({**row, "run_dir": "runs/no_such_grid/runs/cell"}, 512)
    assert not build_md.warm_set_under({"defense_options": options}, 512)
    shipped = build_md.shipped_checkpoints()
    model = shipped["byorn-tiny"]
    today = build_md.options_record(build_md.dataclasses.asdict(build_md.DEFENSES["byorn"].config_class()))
    before = {key: value for key, value in today.items() if key != "warm_max"}
    byorn_row = {**row, "model": model, "defense": "byorn", "defense_options": before}
    assert build_md.stale(byorn_row, shipped) == ""
    assert "warm_max" in build_md.stale({**byorn_row, "run_dir": "runs/no_such_grid/runs/cell"}, shipped)
    onion = {"model": model, "defense": "onion", "run_dir": "runs/standard/runs/cell",
             "defense_options": build_md.options_record(build_md.dataclasses.asdict(
                 build_md.DEFENSES["onion"].config_class()))}
    assert build_md.stale(onion, shipped) == ""  # a defense without a warm set has no bound to miss


@pytest.mark.parametrize("grid", sorted(BENCHMARKS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(BENCHMARKS)))
def test_every_grid_loads(grid):
    from byorn.bench import load_grid

    data = yaml.safe_load(grid.read_text(encoding="utf-8")).get("data")
    if data and not Path(data).is_dir():
        pytest.skip(f"its data folder {data} is not here")
    load_grid(grid)


def test_a_row_from_before_ema_decay_stands_unless_it_wrote_with_the_average(monkeypatch):
    """ema_decay acts only with generator=ema: a row of another generator that does not record it ran
    as with any decay; a paper-recipe row must record it."""
    build_md = build_md_module(monkeypatch)
    shipped = build_md.shipped_checkpoints()
    for defense in ("byorn", "byorn_paper"):
        today = build_md.options_record(build_md.dataclasses.asdict(build_md.DEFENSES[defense].config_class()))
        row = {"model": shipped["byorn-tiny"], "defense": defense, "run_dir": "runs/standard/runs/cell",
               "defense_options": {key: value for key, value in today.items() if key != "ema_decay"}}
        assert bool(build_md.stale(row, shipped)) == (today["generator"] == "ema")
        assert build_md.stale({**row, "defense_options": today}, shipped) == ""


def test_a_section_names_the_cells_where_the_attack_stays_below_implanting_undefended(monkeypatch):
    build_md = build_md_module(monkeypatch)
    undefended = [{"defense": "none", "attack": "a", "poison_rate": 0.1, "seed": seed, "asr": asr}
                  for seed, asr in enumerate([0.95, 0.5])]
    rows = [*undefended, {"defense": "none", "attack": "a", "poison_rate": 0.0, "seed": 0, "asr": 0.0},
            {"defense": "byorn", "attack": "a", "poison_rate": 0.1, "seed": 1, "asr": 0.0}]
    text = build_md.undefended_misses(rows)
    assert "in 1 of 2 poisoned cells" in text and "a at 0.1: 0.50 (seed 1)" in text and "0.95" not in text
    assert build_md.below_implanted(undefended) == "1 of 2"
    assert build_md.undefended_misses(rows[:1]).startswith("Undefended, every attack implants")
    assert build_md.undefended_misses(rows[3:]) == ""


def test_the_two_shards_wall_times_split_the_cells_as_the_runner_does(monkeypatch):
    """A grid's cells alternate between the shards in the grid's order, where a clean rate's cells run
    under the first attack only; a row's order in its file does not matter."""
    from byorn.bench import grid_cells, load_grid

    build_md = build_md_module(monkeypatch)
    cells = grid_cells(load_grid(BENCHMARKS / "lessons_rename.yaml"))
    assert cells[0][2] == 0.0 and cells[-1][2] > 0.0
    timed = dict(zip((0, 1, 2, len(cells) - 1), (1.0, 2.0, 4.0, 8.0)))
    rows = [{"attack": cells[i][0].name, "defense": cells[i][1].label, "poison_rate": cells[i][2],
             "seed": cells[i][3], "wall_s": wall, "run_dir": f"runs/lessons_rename/runs/{i}"}
            for i, wall in reversed(timed.items())]
    odd = sum(wall for i, wall in timed.items() if i % 2)
    assert build_md.shard_seconds([*rows, {"attack": "untimed"}]) == (sum(timed.values()) - odd, odd)
    assert build_md.shard_seconds([{**rows[0], "run_dir": "/elsewhere", "grid": "lessons_rename"}]) is not None
    assert build_md.shard_seconds([{**rows[0], "run_dir": "/elsewhere"}]) is None
    assert build_md.shard_seconds([{**rows[0], "attack": "not in the grid"}]) is None
