"""The README's Python examples run as written: its plain-Trainer example and its TRL SFTTrainer
example, with the built-in model and a made-up data file in place of the paths they name; and
under SFTTrainer no flagged row's response reaches the loss."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from byorn.datasets import save_llava_json
from byorn.worlds import shapes

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
EXAMPLES = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
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
    exec(compile(code.replace('"path/to/hf-vlm"', '"byorn-tiny"'), "README.md", "exec"), namespace)
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
    exec(compile(code.replace('"path/to/hf-vlm"', '"byorn-tiny"'), "README.md", "exec"), namespace)
    defense = namespace["defense"]
    flagged = {i for i, hit in zip(namespace["dataset"]["id"], defense.flagged) if hit}
    assert {"shapes-train-000001", "shapes-train-000005"} <= flagged
    assert len(seen) >= 8 and not any("example.com" in text for text in seen)  # every row, at least once
    assert namespace["collator"].collator.replaced >= 2
