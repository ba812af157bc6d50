"""Can byorn-tiny's pretrained image features tell a triggered image from a clean one?

A logistic-regression probe on the projected image features (what the language model reads) of
600 clean and 600 triggered scenes (different scenes, so no pair can be compared), scored on
held-out scenes. Near 0.5: the trigger is invisible to the model before fine-tuning.

    python benchmarks/explore/trigger_probe.py     # writes benchmarks/results/trigger_probe.jsonl
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from byorn.attacks.registry import IMAGE_TRIGGERS
from byorn.fileio import write_jsonl
from byorn.models import load_vlm
from byorn.scoring import checkpoint_label
from byorn.worlds import shapes

OUT = Path(__file__).resolve().parent.parent / "results" / "trigger_probe.jsonl"
TRIGGERS = [("wanet", {}), ("wanet", {"strength": 1.0}), ("wanet", {"strength": 4.0}), ("badnets", {}),
            ("badnets", {"size": 0.25}), ("sig", {}), ("sig", {"delta": 60.0}), ("blended", {})]
N = 1200  # half clean, half triggered; 3/4 to fit, 1/4 held out


@torch.no_grad()
def image_features(vlm, images) -> np.ndarray:
    rows = []
    for start in range(0, len(images), 100):
        pixels = vlm.processor.image_processor(images[start:start + 100], return_tensors="pt")["pixel_values"]
        # pooler_output: one [tokens, hidden] tensor per image, after the projector
        features = torch.stack(list(vlm.model.model.get_image_features(pixel_values=pixels).pooler_output))
        rows.append(features.reshape(features.shape[0], -1).float().numpy())
    return np.concatenate(rows)


def main() -> None:
    vlm = load_vlm("byorn-tiny")
    vlm.model.eval()
    model = checkpoint_label("byorn-tiny", vlm)
    samples = shapes.downstream_samples(N, 0, split="dev")
    clean_images = [s.pil() for s in samples]
    clean = image_features(vlm, clean_images)
    order = np.random.default_rng(0).permutation(N)
    clean_half, triggered_half = order[: N // 2], order[N // 2:]
    rows = []
    for name, options in TRIGGERS:
        trigger = IMAGE_TRIGGERS[name](**options)
        triggered = image_features(vlm, [trigger.apply(clean_images[i], key=samples[i].id) for i in triggered_half])
        x = np.concatenate([clean[clean_half], triggered])
        y = np.r_[np.zeros(len(clean_half)), np.ones(len(triggered_half))]
        shuffle = np.random.default_rng(1).permutation(N)
        x, y = x[shuffle], y[shuffle]
        fit = 3 * N // 4
        probe = LogisticRegression(max_iter=3000).fit(x[:fit], y[:fit])
        label = name + ("(" + ",".join(f"{k}={v}" for k, v in sorted(options.items())) + ")" if options else "")
        accuracy = round(float(probe.score(x[fit:], y[fit:])), 3)
        rows.append({"trigger": label, "model": model, "probe_accuracy": accuracy})
        print(json.dumps(rows[-1]), flush=True)
    write_jsonl(OUT, rows)


if __name__ == "__main__":
    main()
