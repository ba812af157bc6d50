"""Why byorn-tiny misses the VQA position bar: the diagnosis and the experiments in README.md.

    python benchmarks/position_vqa.py diagnose     # error breakdown on 300 fresh scenes (~1 min)
    python benchmarks/position_vqa.py continue     # +1,000 steps, half position questions (~4 min)
    python benchmarks/position_vqa.py layer0       # the same, projector also fed vision layer 0
    python benchmarks/position_vqa.py vision3      # from scratch, 3-layer vision tower (~22 min)

Each prints its figures as JSON; nothing is saved over the shipped checkpoint.
"""

from __future__ import annotations

import collections
import json
import random
import sys
import tempfile
from pathlib import Path

import torch
from transformers import LlavaForConditionalGeneration

from byorn.config import PretrainConfig
from byorn.data import Sample
from byorn.evaluate import _quality_scene, tiny_quality
from byorn.models import load_vlm
from byorn.models.tiny import TinyConfig
from byorn.pretrain import pretrain
from byorn.train import ByornTrainer, SampleDataset, collate_samples, training_arguments
from byorn.worlds import shapes


def diagnose(n: int = 300) -> dict:
    """Which object's position the wrong answers name, by object count and by uniqueness."""
    vlm = load_vlm("byorn-tiny")
    rng = random.Random(1)
    scenes = [_quality_scene(i, 1) for i in range(n)]
    questions, truths = [], []
    for i, scene in enumerate(scenes):
        question, answer = shapes.pretraining_vqa(scene, rng, "position")
        questions.append(Sample(f"p{i}", shapes.render(scene), question, answer))
        truths.append(shapes.parse_attribute(answer, "position"))
    answers = vlm.generate(questions, max_new_tokens=16, batch_size=64)
    by_count, unique = collections.defaultdict(lambda: [0, 0]), collections.defaultdict(lambda: [0, 0])
    another = wrong = 0
    for scene, question, answer, truth in zip(scenes, questions, answers, truths):
        said = shapes.parse_attribute(answer, "position")
        miss = said != truth
        by_count[len(scene.objects)][0] += miss
        by_count[len(scene.objects)][1] += 1
        if miss:
            wrong += 1
            another += said in [o.position for o in scene.objects]
        if len(scene.objects) > 1:
            asked = next(o for o in scene.objects if o.colour in question.instruction and o.shape in question.instruction)
            key = (f"colour unique={sum(o.colour == asked.colour for o in scene.objects) == 1}, "
                   f"shape unique={sum(o.shape == asked.shape for o in scene.objects) == 1}")
            unique[key][0] += miss
            unique[key][1] += 1
    return {"errors_by_object_count": {k: f"{e}/{t}" for k, (e, t) in sorted(by_count.items())},
            "errors_by_uniqueness": {k: f"{e}/{t}" for k, (e, t) in unique.items()},
            "wrong_answers_naming_another_objects_position": f"{another}/{wrong}"}


def _continue(layer0: bool, steps: int = 1000, learning_rate: float = 2e-4, share: float = 0.5) -> dict:
    """Fine-tune the shipped model further on a mix with `share` position questions."""
    vlm = load_vlm("byorn-tiny")
    if layer0:  # concatenate vision layer 0 (patch + position embeddings); its projector columns start at 0
        config = vlm.model.config
        config.vision_feature_layer = [-1, 0]
        state = vlm.model.state_dict()
        weight = state["model.multi_modal_projector.linear_1.weight"]
        state["model.multi_modal_projector.linear_1.weight"] = torch.cat([weight, torch.zeros_like(weight)], 1)
        vlm.model = LlavaForConditionalGeneration(config)
        vlm.model.load_state_dict(state, strict=False)

    def sample(i: int) -> Sample:
        seed = 900_000_000 + i
        rng = random.Random(seed)
        if rng.random() < share:
            scene = shapes.make_scene(seed)
            question, answer = shapes.pretraining_vqa(scene, rng, "position")
            return Sample(f"c{i}", shapes.render(scene), question, answer)
        return shapes.pretraining_sample(seed)

    with tempfile.TemporaryDirectory() as scratch:
        args = training_arguments(Path(scratch), batch_size=32, learning_rate=learning_rate, warmup=0.03, seed=0,
                                  logging_steps=100, max_steps=steps)
        ByornTrainer(model=vlm.model, args=args, train_dataset=SampleDataset(sample, length=steps * 32),
                     data_collator=collate_samples, vlm=vlm).train()
    vlm.model.eval()
    return tiny_quality(vlm, n=300, seed=0)


def vision3() -> dict:
    with tempfile.TemporaryDirectory() as out:
        path = pretrain(out, PretrainConfig(), TinyConfig(vision_layers=3))
        return tiny_quality(load_vlm(str(path)), n=500)


if __name__ == "__main__":
    runs = {"diagnose": diagnose, "continue": lambda: _continue(False), "layer0": lambda: _continue(True),
            "vision3": vision3}
    if len(sys.argv) != 2 or sys.argv[1] not in runs:
        sys.exit(f"usage: python benchmarks/position_vqa.py {{{'|'.join(runs)}}}")
    print(json.dumps(runs[sys.argv[1]](), indent=1))
