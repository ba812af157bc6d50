"""The package's dependency rules (docs/ARCHITECTURE.md), read from the source: every import,
function-local ones and those under TYPE_CHECKING too."""

from __future__ import annotations

import ast
from pathlib import Path

import byorn

PACKAGE = Path(byorn.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported(name: str) -> set[str]:
    """The byorn modules `name` imports; `from package import module` counts the module, and
    importing a module from outside its package runs the package's __init__ too."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                       for a in node.names]
        else:
            continue
        for target in targets:
            if not target.startswith("byorn"):
                continue
            parts = target.split(".")
            found |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)
                      if not name.startswith(".".join(parts[:i]) + ".")}  # a module's own package is loading
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imported(name) for name in MODULES}


def test_neither_the_defenses_nor_scoring_depend_on_the_attacks():
    """Except the canaries, which plant the attacks' triggers in copies the judgement makes itself:
    never the poisoning of a data set or its manifest."""
    judging = [m for m in MODULES if m.startswith(("byorn.defenses", "byorn.scoring")) and m != CANARIES]
    offending = {m: sorted(t for t in GRAPH[m] if t.startswith("byorn.attacks")) for m in judging}
    assert {m: t for m, t in offending.items() if t} == {}
    planted_from = {t for t in GRAPH[CANARIES] if t.startswith("byorn.attacks")}
    assert planted_from and "byorn.attacks.poison" not in planted_from


CANARIES = "byorn.defenses.canaries"


def test_the_library_does_not_depend_on_its_front_ends():
    front_ends = {m for m in MODULES if m.startswith(("byorn.cli", "byorn.integrations"))} | {
        "byorn.workflow", "byorn.bench", "byorn.report"}
    assert {"byorn.cli", "byorn.cli.train", "byorn.integrations.trl"} <= front_ends  # the prefixes still name them
    library = [m for m in MODULES if m not in front_ends and m != "byorn"]
    assert {m: sorted(GRAPH[m] & front_ends) for m in library if GRAPH[m] & front_ends} == {}


def test_the_metrics_depend_on_no_world_and_no_model():
    assert not {t for t in GRAPH["byorn.metrics"] if t.startswith(("byorn.worlds", "byorn.models"))}


def test_no_import_cycle():
    state: dict[str, str] = {}
    cycles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(GRAPH[name]):
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = "done"

    for name in sorted(MODULES):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_no_module_is_over_400_lines():
    """A module past 400 lines holds more than one job (docs/ARCHITECTURE.md): split it."""
    lines = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in lines.items() if n > 400} == {}
