"""Backdoor attacks for experiments: triggers, target modifiers, a registry and poisoning.

The papers are named in each module: image_triggers.py (BadNets, Blended, SIG, WaNet),
text_triggers.py (RIPPLe rare tokens, AddSent), multimodal.py (dual-key), targets.py and
adaptive.py (attacks that use the pretrained model: white-box injection, Shadowcast).
"""

from byorn.attacks.image_triggers import BadNets, Blended, ImageTrigger, Sig, WaNet
from byorn.attacks.multimodal import MultimodalTrigger
from byorn.attacks.poison import (
                                  MANIFEST_NAME,
                                  ManifestRecord,
                                  one_modality_test_sets,
                                  poison,
                                  read_manifest,
                                  triggered_test_set,
                                  write_manifest,
)
from byorn.attacks.registry import TARGETS, TRIGGERS, Attack, build_attack, list_attacks
from byorn.attacks.targets import FixedTarget, Injection, Refusal, Substitution, TargetModifier
from byorn.attacks.text_triggers import AddSent, RareToken, TextTrigger

__all__ = [
    "AddSent", "Attack", "BadNets", "Blended", "FixedTarget", "ImageTrigger", "Injection", "MANIFEST_NAME",
    "ManifestRecord", "MultimodalTrigger", "RareToken", "Refusal", "Sig", "Substitution", "TARGETS", "TRIGGERS",
    "TargetModifier", "TextTrigger", "WaNet", "build_attack", "list_attacks", "one_modality_test_sets", "poison",
    "read_manifest", "triggered_test_set", "write_manifest",
]
