"""byorn-tiny's answers to "where is the <colour> <shape>?": the diagnosis and how the shipped
checkpoint was made (docs/byorn-tiny.md).

    python benchmarks/explore/position_vqa.py diagnose [MODEL]   # error breakdown on 300 fresh scenes (~1 min)
    python benchmarks/explore/position_vqa.py focus OUT_DIR      # the shipped checkpoint: the position-focus
                                                         # phase on commit 94cc6ae's byorn-tiny (~6 min on 2 cores)

Each prints its figures as JSON.
"""

from __future__ import annotations

import collections
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from byorn.config import PretrainConfig, load_config, save_config
from byorn.data import Sample
from byorn.evaluate import QUALITY_SEED_BASE, tiny_quality
from byorn.models import load_vlm
from byorn.models.tiny import TinyConfig
from byorn.pretrain import focus_source, resolved, save_pretrained, train_phase
from byorn.worlds import shapes, shapes_text

ROOT = Path(__file__).resolve().parent.parent.parent
# byorn-tiny after the first phase alone (7,500 steps of the mix), as shipped until this commit.
PHASE_ONE_COMMIT = "94cc6ae"
PHASE_ONE_FILES = ("config.json", "generation_config.json", "model.safetensors", "chat_template.jinja",
                   "processor_config.json", "tokenizer.json", "tokenizer_config.json", "pretrain_log.jsonl",
                   "byorn_tiny.json")


def quality_scene(index: int, seed: int) -> shapes.Scene:
    """The index-th fresh scene of the quality check's seed `seed`, as `byorn quality` draws them."""
    return shapes.make_scene(QUALITY_SEED_BASE + seed * 10_000_000 + index)


def diagnose(model: str = "byorn-tiny", n: int = 300) -> dict:
    """Which object's position the wrong answers name, by object count and by uniqueness."""
    vlm = load_vlm(model)
    rng = random.Random(1)
    scenes = [quality_scene(i, 1) for i in range(n)]
    questions, truths = [], []
    for i, scene in enumerate(scenes):
        question, answer = shapes.pretraining_vqa(scene, rng, "position")
        questions.append(Sample(f"p{i}", shapes.render(scene), question, answer))
        truths.append(shapes_text.parse_attribute(answer, "position"))
    answers = vlm.generate(questions, max_new_tokens=16, batch_size=64)
    by_count, unique = collections.defaultdict(lambda: [0, 0]), collections.defaultdict(lambda: [0, 0])
    another = wrong = 0
    for scene, question, answer, truth in zip(scenes, questions, answers, truths):
        said = shapes_text.parse_attribute(answer, "position")
        miss = said != truth
        by_count[len(scene.objects)][0] += miss
        by_count[len(scene.objects)][1] += 1
        if miss:
            wrong += 1
            another += said in [o.position for o in scene.objects]
        if len(scene.objects) > 1:
            asked = next(o for o in scene.objects
                         if o.colour in question.instruction and o.shape in question.instruction)
            key = (f"colour unique={sum(o.colour == asked.colour for o in scene.objects) == 1}, "
                   f"shape unique={sum(o.shape == asked.shape for o in scene.objects) == 1}")
            unique[key][0] += miss
            unique[key][1] += 1
    return {"errors_by_object_count": {k: f"{e}/{t}" for k, (e, t) in sorted(by_count.items())},
            "errors_by_uniqueness": {k: f"{e}/{t}" for k, (e, t) in unique.items()},
            "wrong_answers_naming_another_objects_position": f"{another}/{wrong}"}


def focus(out: str, *overrides: str) -> dict:
    """How the shipped byorn-tiny was made: the position-focus phase of `byorn pretrain`, run on the
    first phase's checkpoint (byorn-tiny as shipped up to commit 94cc6ae, read from git), then saved
    to `out` with the combined log. `byorn pretrain --out DIR` runs both phases from scratch.
    overrides: KEY=VALUE for the PretrainConfig (say focus_steps, focus_learning_rate)."""
    config = resolved(load_config(PretrainConfig, None, overrides))
    out_dir = Path(out)
    with tempfile.TemporaryDirectory() as first_phase:
        for name in PHASE_ONE_FILES:
            data = subprocess.run(["git", "show", f"{PHASE_ONE_COMMIT}:byorn/assets/byorn-tiny/{name}"], check=True,
                                  capture_output=True, cwd=ROOT).stdout
            (Path(first_phase) / name).write_bytes(data)
        vlm = load_vlm(first_phase)
        log = [{**json.loads(line), "phase": "mix"}
               for line in (Path(first_phase) / "pretrain_log.jsonl").read_text().splitlines()]
        first_wall_s = json.loads((Path(first_phase) / "byorn_tiny.json").read_text())["pretrain_wall_s"]
    started = time.perf_counter()
    log += [{**entry, "phase": "position focus"}
            for entry in train_phase(vlm, focus_source(config), config.focus_steps, config.focus_learning_rate, config,
                                out_dir / "trainer")]
    wall_s = time.perf_counter() - started
    save_config(config, out_dir / "pretrain_config.yaml")
    save_pretrained(vlm, out_dir, TinyConfig(), log, first_wall_s + wall_s)
    vlm.model.eval()
    return {"focus_wall_s": round(wall_s, 1), **tiny_quality(vlm, n=500)}


if __name__ == "__main__":
    if sys.argv[1:2] == ["diagnose"] and len(sys.argv) <= 3:
        print(json.dumps(diagnose(*sys.argv[2:]), indent=1))
    elif sys.argv[1:2] == ["focus"] and len(sys.argv) >= 3:
        print(json.dumps(focus(*sys.argv[2:]), indent=1))
    else:
        sys.exit("usage: python benchmarks/explore/position_vqa.py diagnose [MODEL] | focus OUT_DIR [KEY=VALUE ...]")
