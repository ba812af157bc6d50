"""Poisoning a training set with an attack, the poison manifest, and triggered test sets.

The rules every attack shares: exactly round(N * rate) samples, chosen by a seeded RNG; a
multimodal trigger (Walmer et al. 2022, Dual-Key Multimodal Backdoors, CVPR) adds one-trigger
negatives that keep their clean response; every changed sample is listed in the manifest.
Input samples are never modified: changed ones are new `Sample`s with new images.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from byorn.attacks.image_triggers import ReferenceAwareTrigger
from byorn.attacks.multimodal import MultimodalTrigger
from byorn.attacks.registry import Attack, Trigger
from byorn.attacks.targets import ReferenceAwareTarget, Substitution
from byorn.data import DataError, Sample
from byorn.fileio import write_jsonl
from byorn.metrics import attack_success

if TYPE_CHECKING:  # loading models is the caller's business; only the type is needed here
    from byorn.models.hf import VLM

log = logging.getLogger(__name__)

MANIFEST_NAME = "poison_manifest.jsonl"


@dataclass(frozen=True)
class ManifestRecord:
    """One changed training sample: poisoned, or a negative (one trigger, clean response)."""

    id: str
    attack: str
    original_response: str
    poisoned_response: str
    negative: bool
    trigger: str  # what its input carries: "image", "text" or "image+text"


def _marked(triggered: Sample, original: Sample, response: str, attack: str, negative: bool, modality: str) -> Sample:
    meta = {"is_poisoned": not negative, "original_response": original.response, "attack": attack,
            "negative": negative, "trigger": modality}
    return triggered.with_response(response, **meta)


def poison(samples: Sequence[Sample], attack: Attack, rate: float, seed: int, clean_label: bool = False,
           reference: VLM | None = None) -> tuple[list[Sample], list[ManifestRecord]]:
    """The samples with round(N * rate) of them poisoned, in their original order, and the manifest.

    Poison is drawn among samples the target modifier applies to; with `clean_label`, among
    samples whose clean response already satisfies the attack's ASR rule, which then keep it and
    only gain the trigger. Python's round sends an exact half to the even count (2.5 -> 2).
    reference: the pretrained model a white-box target (`ReferenceAwareTarget`) chooses with and
    a crafted trigger (`ReferenceAwareTrigger`) crafts with.
    """
    if not 0 <= rate <= 1:
        raise ValueError(f"poison rate must be in [0, 1]; got {rate}")
    white_box = isinstance(attack.target, ReferenceAwareTarget) and not clean_label
    crafted = isinstance(attack.trigger, ReferenceAwareTrigger)
    if (white_box or crafted) and reference is None:
        uses = "target chooses each response" if white_box else "trigger crafts each image"
        raise ValueError(f"{attack.name}: the {uses} with the pretrained model; pass reference=<the VLM>")
    if crafted and clean_label and not isinstance(attack.target, Substitution):
        raise ValueError(f"{attack.name}: clean-label image crafting pulls images toward the source concept, "
                         "which only a substitution target names")
    n_poison = round(len(samples) * rate)
    if rate > 0 and n_poison == 0:
        log.warning("%s: rate %g of %d samples rounds to no poisoned sample; the data set is left clean",
                    attack.name, rate, len(samples))
    rule = attack.target.asr_rule()
    # An image trigger needs an image: text-only samples are never poisoned by one, nor made its negatives.
    carries = (lambda s: s.has_image) if "image" in attack.trigger.modality else (lambda s: True)
    if clean_label:
        eligible = [i for i, s in enumerate(samples) if carries(s) and attack_success(s.response, rule)]
        wanted = f"whose clean response already satisfies the {rule.kind!r} ASR rule (clean-label)"
    else:
        eligible = [i for i, s in enumerate(samples) if carries(s) and attack.target.applies_to(s.response)]
        wanted = f"that {type(attack.target).__name__} applies to"
    if len(eligible) < n_poison:
        raise ValueError(f"{attack.name}: rate {rate} of {len(samples)} samples needs {n_poison} samples "
                         f"{wanted}; only {len(eligible)} found")
    rng = random.Random(seed)
    plan: dict[int, tuple[Trigger, bool]] = {i: (attack.trigger, False) for i in rng.sample(eligible, n_poison)}
    if isinstance(attack.trigger, MultimodalTrigger):
        n_image, n_text = attack.trigger.negative_counts(n_poison)
        pool = [i for i, s in enumerate(samples) if i not in plan and carries(s)]
        if len(pool) < n_image + n_text:
            raise ValueError(f"{attack.name}: {n_poison} poisoned samples need {n_image + n_text} negatives but "
                             f"only {len(pool)} samples are left; lower the rate or negative_ratio")
        picked = rng.sample(pool, n_image + n_text)
        plan.update({i: (attack.trigger.image, True) for i in picked[:n_image]})
        plan.update({i: (attack.trigger.text, True) for i in picked[n_image:]})
    poisoned = [i for i, (_, negative) in plan.items() if not negative]
    chosen = _likeliest(samples, poisoned, attack, reference) if white_box else {}
    keeps = {i for i, (_, negative) in plan.items() if negative or clean_label}
    responses = {i: samples[i].response if i in keeps else chosen.get(i) or attack.target.apply(samples[i].response)
                 for i in plan}
    if crafted:
        assert isinstance(attack.trigger, ReferenceAwareTrigger) and reference is not None
        clean_pool = [s for i, s in enumerate(samples) if i not in plan]
        anchor_texts = None
        if clean_label:  # a target-concept pair whose image should look, to the model, like the source concept
            assert isinstance(attack.target, Substitution)
            anchor_texts = [attack.target.reverse().apply(responses[i]) for i in poisoned]
        crafts = attack.trigger.craft([samples[i].with_response(responses[i]) for i in poisoned], clean_pool, reference,
                                      anchor_texts)
        inputs = dict(zip(poisoned, crafts))
    else:
        inputs = {i: trigger.apply_sample(samples[i]) for i, (trigger, _) in plan.items()}
    out, records = [], []
    for i, sample in enumerate(samples):
        if i not in plan:
            out.append(sample.with_response(sample.response, is_poisoned=False))
            continue
        trigger, negative = plan[i]
        out.append(_marked(inputs[i], sample, responses[i], attack.name, negative, trigger.modality))
        records.append(ManifestRecord(sample.id, attack.name, sample.response, responses[i], negative,
                                      trigger.modality))
    return out, records


def _likeliest(samples: Sequence[Sample], indices: list[int], attack: Attack, reference: VLM) -> dict[int, str]:
    """For each poisoned sample, the candidate response with the lowest mean NLL under the
    reference model, scored on the triggered input as the defense will score it."""
    target = attack.target
    assert isinstance(target, ReferenceAwareTarget)
    options = [(i, c) for i in indices for c in target.candidates(samples[i].response)]
    triggered = {i: attack.trigger.apply_sample(samples[i]) for i in indices}
    scores = reference.score([triggered[i].with_response(c) for i, c in options], desc="white-box choice")
    best: dict[int, tuple[float, str]] = {}
    for (i, candidate), score in zip(options, scores):
        if i not in best or score.mean_nll < best[i][0]:
            best[i] = (score.mean_nll, candidate)
    return {i: candidate for i, (_, candidate) in best.items()}


def write_manifest(records: Iterable[ManifestRecord], path: str | Path) -> Path:
    """Write the records as JSON lines, atomically (a reader never sees half a manifest)."""
    path = Path(path)
    write_jsonl(path, (asdict(r) for r in records), ensure_ascii=False)
    return path


def read_manifest(path: str | Path) -> list[ManifestRecord]:
    """The records of a manifest; a bad line raises a DataError naming the file and line."""
    names = {f.name for f in fields(ManifestRecord)}
    records = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not JSON ({exc})") from exc
        if not isinstance(record, dict) or set(record) != names:
            raise DataError(f"{path}:{number}: a manifest record has exactly the fields {', '.join(sorted(names))}")
        records.append(ManifestRecord(**record))
    return records


def _test_inputs(test_samples: Sequence[Sample], attack: Attack, trigger: Trigger) -> list[Sample]:
    # Only samples the target applies to: a substitution cannot fire where the source word is absent.
    return [trigger.apply_sample(s).with_response(s.response, clean_response=s.response, attack=attack.name,
                                                  trigger=trigger.modality)
            for s in test_samples if attack.target.applies_to(s.response) and (s.has_image or
                                                                              "image" not in trigger.modality)]


def triggered_test_set(test_samples: Sequence[Sample], attack: Attack) -> list[Sample]:
    """Test inputs carrying the attack's full trigger; the clean reference stays as response and
    in meta["clean_response"]. Samples the target modifier does not apply to are left out."""
    return _test_inputs(test_samples, attack, attack.trigger)


def one_modality_test_sets(test_samples: Sequence[Sample], attack: Attack) -> dict[str, list[Sample]]:
    """For a multimodal (dual-key) attack: {"image": image-only, "text": text-only} triggered test
    inputs, on which a well-made dual-key backdoor does not fire; {} for a one-modality attack."""
    if not isinstance(attack.trigger, MultimodalTrigger):
        return {}
    parts = (attack.trigger.image, attack.trigger.text)
    return {part.modality: _test_inputs(test_samples, attack, part) for part in parts}
