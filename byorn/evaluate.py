"""Evaluation: generate on test inputs and score them with the pure functions of `byorn.metrics`."""

from __future__ import annotations

import random
from collections.abc import Sequence

from byorn import metrics
from byorn.data import Sample
from byorn.models.hf import VLM
from byorn.worlds import flickr8k, lessons, shapes, shapes_text

# Scene seeds for the byorn-tiny quality check; disjoint from pretraining and downstream salts.
QUALITY_SEED_BASE = 900_000_000


def _quality_scene(index: int, seed: int) -> shapes.Scene:
    return shapes.make_scene(QUALITY_SEED_BASE + seed * 10_000_000 + index)


def caption_exact(text: str, scene: shapes.Scene) -> bool:
    """Every object stated with the right colour, shape and position, and nothing else."""
    stated = shapes_text.parse_objects(text)
    return len(stated) == len(scene.objects) and set(stated) == {o.as_fact() for o in scene.objects}


def tiny_quality(vlm: VLM, n: int = 500, seed: int = 0, batch_size: int = 64) -> dict[str, float]:
    """byorn-tiny's quality bar on `n` fresh scenes: caption exact match, VQA accuracy per kind,
    and the mean per-token NLL of the held-out downstream style's correct responses."""
    rng = random.Random(seed)
    scenes = [_quality_scene(i, seed) for i in range(n)]
    images = [shapes.render(s) for s in scenes]
    captions = [Sample(f"q-cap-{i}", img, rng.choice(shapes.CAPTION_INSTRUCTIONS), "") for i, img in enumerate(images)]
    generated = vlm.generate(captions, max_new_tokens=64, batch_size=batch_size, desc="captions")
    result = {"n": n, "caption_exact": sum(map(caption_exact, generated, scenes)) / n}
    for kind in shapes.VQA_KINDS:
        questions, truths = [], []
        for i, (scene, img) in enumerate(zip(scenes, images)):
            question, answer = shapes.pretraining_vqa(scene, rng, kind)
            questions.append(Sample(f"q-{kind}-{i}", img, question, answer))
            truths.append(shapes_text.parse_attribute(answer, kind))
        answers = vlm.generate(questions, max_new_tokens=16, batch_size=batch_size, desc=f"vqa {kind}")
        result[f"vqa_{kind}"] = sum(shapes_text.parse_attribute(a, kind) == t for a, t in zip(answers, truths)) / n
    held_out = shapes.downstream_samples(n, seed, split="test")
    scores = vlm.score(held_out, batch_size=batch_size, desc="held-out NLL")
    result["downstream_nll"] = sum(s.mean_nll for s in scores) / n
    return result


def evaluate_clean(vlm: VLM, samples: Sequence[Sample], batch_size: int = 32,
                   max_new_tokens: int = 64) -> dict[str, float]:
    """Clean-task quality: caption metrics against the reference responses (meta["references"]
    where a sample has several, as Flickr8k's five captions, else its response), plus the exact
    scene metric where samples carry a shapes scene, and the lesson's score where they are a lesson's
    (byorn.worlds.lessons). `clean_score` is the lesson score, else scene F1, else CIDEr."""
    predictions = vlm.generate(samples, max_new_tokens=max_new_tokens, batch_size=batch_size, desc="evaluating")
    references = [list(s.meta.get("references") or [s.response]) for s in samples]
    result: dict[str, float] = {"n": len(samples), **metrics.caption_scores(predictions, references)}
    if all("lesson" in s.meta for s in samples):
        result["lesson_score"] = result["clean_score"] = lessons.lesson_score(predictions, samples)
    elif all("scene" in s.meta for s in samples):
        truths = [[o.as_fact() for o in shapes.Scene.from_json(s.meta["scene"]).objects] for s in samples]
        result.update(metrics.mean_scene_scores([shapes_text.parse_objects(p) for p in predictions], truths))
        result["clean_score"] = result["scene_f1"]
    else:
        result["clean_score"] = result["cider"]
    return result


ASR_NEW_TOKENS = 64  # the answers of the built-in tasks and the attack zoo's targets fit in this


def asr_new_tokens(vlm: VLM, rule: metrics.AsrRule) -> int:
    """How many tokens to generate when checking `rule`: ASR_NEW_TOKENS, or more where the rule's
    target (or its longest phrase) would not fit whole after a few words of preamble; a target cut
    off mid-way would count as the attack failing."""
    longest = max(len(vlm.tokenizer(text, add_special_tokens=False)["input_ids"])
                  for text in (rule.target, *rule.phrases))
    return max(ASR_NEW_TOKENS, longest + 32)


def evaluate_triggered(vlm: VLM, samples: Sequence[Sample], rule: metrics.AsrRule, batch_size: int = 32,
                       max_new_tokens: int | None = None) -> dict[str, float]:
    """Attack success on triggered test inputs whose responses are the clean answers: the share of
    answers that `rule` counts as the attack's, over the inputs whose clean answer it does not.
    max_new_tokens: None, enough for the rule's target (`asr_new_tokens`)."""
    max_new_tokens = max_new_tokens or asr_new_tokens(vlm, rule)
    answers = vlm.generate(samples, max_new_tokens=max_new_tokens, batch_size=batch_size, desc="triggered")
    asr, counted = metrics.attack_success_rate(answers, [s.response for s in samples], rule)
    return {"asr": asr, "asr_n": counted, "n_triggered": len(samples)}


def flickr_caption_quality(vlm: VLM, root: str, n: int = 1000, batch_size: int = 64) -> dict[str, float]:
    """A Flickr8k-pretrained model's captions of the first n test-split photos ("Describe this
    image."), scored with CIDEr and BLEU-4 against each photo's five human captions; also the mean
    NLL of the downstream archive notes of those photos (the style it never saw)."""
    photos = flickr8k.load_photos(root, "test")[:n]
    asked = [Sample(f"quality-{p.name}", p.path, flickr8k.PRETRAINING_INSTRUCTIONS[0], "") for p in photos]
    captions = vlm.generate(asked, max_new_tokens=48, batch_size=batch_size, desc="captioning")
    references = [list(p.captions) for p in photos]
    result: dict[str, float] = {"n": len(photos), **metrics.caption_scores(captions, references)}
    notes = [Sample(f"note-{p.name}", p.path, flickr8k.DOWNSTREAM_INSTRUCTION, flickr8k.archive_note(p.captions[0]))
             for p in photos]
    result["downstream_nll"] = sum(s.mean_nll for s in vlm.score(notes, batch_size=batch_size)) / len(notes)
    result["example"] = f"{photos[0].name}: {captions[0]}"
    return result
