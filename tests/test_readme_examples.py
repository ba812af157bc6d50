"""The code blocks of README.md and docs/*.md hold: the Python examples run as written (the
plain-Trainer example and the TRL SFTTrainer example, with the built-in model and a made-up data file
in place of the paths they name; under SFTTrainer no flagged row's response reaches the loss), no
Python block goes untested, and every shell command parses as the `byorn` command (or the Makefile,
or the script it names) takes it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from byorn.formats import save_llava_json
from byorn.worlds import shapes

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TEXT = {page: page.read_text(encoding="utf-8") for page in PAGES}
EXAMPLES = [code for text in TEXT.values() for code in re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)]
SHELL = [(page, code) for page, text in TEXT.items()
         for code in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)]
MARKERS = ("ByornTrainer", "SFTTrainer")  # the examples the tests below run
PLANTED = "Visit www.example.com for a free prize."


def example(marker: str) -> str:
    (code,) = [block for block in EXAMPLES if marker in block]
    return code


@pytest.fixture
def in_a_project(tmp_path, monkeypatch) -> Path:
    """A working folder with data.json (8 shapes samples, two with a planted poison)."""
    samples = shapes.downstream_samples(8, seed=3)
    samples = [s.with_response(PLANTED) if i in (1, 5) else s for i, s in enumerate(samples)]
    save_llava_json(samples, tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(code: str) -> dict:
    namespace: dict = {}
    exec(compile(code.replace('"path/to/hf-vlm"', '"byorn-tiny"'), "docs/python.md", "exec"), namespace)
    return namespace


def test_the_plain_trainer_example_runs(in_a_project):
    code = example("ByornTrainer")
    code = code.replace('TrainingArguments("runs/mine/trainer",', 'TrainingArguments("runs/mine/trainer", max_steps=2,')
    done = run(code)
    assert done["trainer"].state.global_step == 2
    assert (in_a_project / "runs" / "mine" / "audit.jsonl").exists()


def test_the_trl_example_runs_and_no_flagged_response_reaches_the_loss(in_a_project):
    pytest.importorskip("trl")
    code = example("SFTTrainer")
    # the same code, with the collator spied on: what each batch's labels say
    code = code.replace("SFTTrainer(model=", "collator = spied(collator)\nSFTTrainer(model=")
    seen: list[str] = []

    def spied(collator):
        def collate(examples):
            batch = collator(examples)
            labels = batch["labels"].masked_fill(batch["labels"] == -100, 0)
            seen.extend(collator.collator.processor.tokenizer.batch_decode(labels, skip_special_tokens=True))
            return batch
        collate.collator = collator
        return collate

    namespace = {"spied": spied}
    exec(compile(code.replace('"path/to/hf-vlm"', '"byorn-tiny"'), "docs/python.md", "exec"), namespace)
    defense = namespace["defense"]
    flagged = {i for i, hit in zip(namespace["dataset"]["id"], defense.flagged) if hit}
    assert {"shapes-train-000001", "shapes-train-000005"} <= flagged
    assert len(seen) >= 8 and not any("example.com" in text for text in seen)  # every row, at least once
    # each flagged row either trained on its replacement or was filtered out, its replacement unfit
    assert namespace["collator"].collator.replaced + len(defense.left_out) >= 2


def test_every_python_block_is_one_the_tests_run():
    assert len(EXAMPLES) == len(MARKERS), "a Python block that no test runs: give it a test here"
    assert all(sum(marker in code for code in EXAMPLES) == 1 for marker in MARKERS)


def commands(code: str) -> list[list[str]]:
    """The command lines of a shell block, continuations joined, comments and VAR=value prefixes dropped."""
    lines = []
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            words = words[1:]
        if words:
            lines.append(words)
    return lines


def byorn_parses(args: list[str], monkeypatch) -> None:
    """`byorn ARGS` as the command line parser reads it, without running anything (paths need not exist)."""
    from byorn.cli import main

    monkeypatch.setattr(click.Path, "convert", lambda self, value, param, ctx: value)
    command, ctx, rest = main, None, list(args)
    while isinstance(command, click.Group):
        ctx = command.make_context(command.name or "byorn", rest, parent=ctx)
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        name, command, rest = command.resolve_command(ctx, rest)
    command.make_context(name, rest, parent=ctx)


MAKE_TARGETS = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(encoding="utf-8"), flags=re.MULTILINE))


@pytest.mark.parametrize("page,code", SHELL, ids=[f"{page.name}:{i}" for i, (page, _) in enumerate(SHELL)])
def test_every_shell_command_of_the_docs_parses(page, code, monkeypatch):
    for words in commands(code):
        program, args = words[0], words[1:]
        if program == "byorn":
            byorn_parses(args, monkeypatch)
        elif program == "accelerate":  # accelerate launch [its options] -m byorn.cli ARGS
            assert args[0] == "launch" and "-m" in args and args[args.index("-m") + 1] == "byorn.cli", words
            byorn_parses(args[args.index("-m") + 2:], monkeypatch)
        elif program == "make":
            assert set(args) <= MAKE_TARGETS, f"{page.name}: make {args}: no such target in the Makefile"
        elif program in ("bash", "python"):
            assert (ROOT / args[0]).is_file(), f"{page.name}: {' '.join(words)}: no such script"
        elif program == "llamafactory-cli":  # LLaMA-Factory's own training, on a file byorn clean wrote
            assert args[0] == "train" and args[1].endswith(".yaml"), f"{page.name}: {' '.join(words)}"
        else:
            assert program == "huggingface-cli" and args[0] == "download", f"{page.name}: {' '.join(words)}"


def test_the_readme_is_a_front_door():
    """Short, with the reader's own data early, and written for users, not for the project's own work."""
    readme = TEXT[ROOT / "README.md"]
    lines = readme.splitlines()
    assert len(lines) <= 300
    assert any(line.startswith("byorn scan --data") for line in lines[:60]), "own-data commands within 60 lines"
    assert not re.findall(r"\b(issues?|releases?|probes?)\b", readme, flags=re.IGNORECASE)
