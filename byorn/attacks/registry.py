"""The attack registry: trigger and target names -> classes, and `build_attack`.

An attack is a trigger (image, text, or both) plus a target modifier. The papers are named in
image_triggers.py, text_triggers.py, multimodal.py and targets.py. Options are the fields of the
chosen classes, so a typo is an error that lists the valid names, never silently ignored.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, fields
from typing import Any

from byorn.attacks.adaptive import Shadowcast, WhiteBoxInjection
from byorn.attacks.image_triggers import BadNets, Blended, ImageTrigger, ReferenceAwareTrigger, Sig, WaNet
from byorn.attacks.multimodal import MultimodalTrigger
from byorn.attacks.targets import FixedTarget, Injection, Refusal, Substitution, TargetModifier
from byorn.attacks.text_triggers import AddSent, RareToken, TextTrigger
from byorn.config import ConfigError, checked_value

Trigger = ImageTrigger | TextTrigger | MultimodalTrigger

TRIGGERS: dict[str, type] = {
    "badnets": BadNets, "blended": Blended, "sig": Sig, "wanet": WaNet,
    "rare_token": RareToken, "addsent": AddSent, "multimodal": MultimodalTrigger, "shadowcast": Shadowcast,
}
# Image triggers a multimodal trigger may pair with a text one: fixed patterns, not crafted ones.
IMAGE_TRIGGERS = {name: cls for name, cls in TRIGGERS.items()
                  if issubclass(cls, ImageTrigger) and not issubclass(cls, ReferenceAwareTrigger)}
TEXT_TRIGGERS = {name: cls for name, cls in TRIGGERS.items() if issubclass(cls, TextTrigger)}
TARGETS: dict[str, type[TargetModifier]] = {
    "fixed": FixedTarget, "injection": Injection, "refusal": Refusal, "substitution": Substitution,
    "whitebox_injection": WhiteBoxInjection,
}


@dataclass(frozen=True)
class Attack:
    """A trigger and a target modifier, under the name written to manifests and results."""

    name: str
    trigger: Trigger
    target: TargetModifier


def _lookup(table: dict[str, type], name: str, what: str) -> type:
    if name not in table:
        raise ValueError(f"Unknown {what} {name!r}. Available: {', '.join(table)}")
    return table[name]


def _take(cls: type, options: dict[str, Any], valid: list[str], prefix: str = "") -> Any:
    """`cls` built from the options named prefix + field, which are removed from `options`."""
    names = [f.name for f in fields(cls)]
    valid.extend(prefix + name for name in names)
    hints = typing.get_type_hints(cls)
    given = {name: _typed(prefix + name, options.pop(prefix + name), hints[name])
             for name in names if prefix + name in options}
    if infinite := [prefix + k for k, v in given.items() if isinstance(v, float) and not math.isfinite(v)]:
        raise ConfigError(f"field {infinite[0]!r}: expected a finite number")
    return cls(**given)


def _typed(name: str, value: Any, hint: Any) -> Any:
    """An option's value checked against its field's type. A part built here (a multimodal
    trigger's image trigger) is one already; a lone string is a tuple of one (one rare token, one
    phrase), as the classes themselves take it."""
    if isinstance(hint, type) and hint not in (int, float, bool, str) and isinstance(value, hint):
        return value
    if typing.get_origin(hint) is tuple and isinstance(value, str):
        value = [value]
    return checked_value(name, value, hint)


def build_attack(trigger: str, target: str, /, **options: Any) -> Attack:
    """The attack `trigger`+`target`, each configured by the options named like its fields.

    A multimodal trigger takes `image` and `text` (registry names, default badnets and rare_token)
    and configures them with prefixed options: image_size, text_tokens, ...
    """
    trigger_cls = _lookup(TRIGGERS, trigger, "attack")
    target_cls = _lookup(TARGETS, target, "attack target")
    remaining, valid = dict(options), []
    if trigger_cls is MultimodalTrigger:
        for part, table, default in (("image", IMAGE_TRIGGERS, "badnets"), ("text", TEXT_TRIGGERS, "rare_token")):
            part_cls = _lookup(table, remaining.get(part, default), f"{part} trigger")
            remaining[part] = _take(part_cls, remaining, valid, prefix=f"{part}_")
    built = _take(trigger_cls, remaining, valid)
    modifier = _take(target_cls, remaining, valid)
    if remaining:
        raise ValueError(f"Unknown option(s) {', '.join(map(repr, remaining))} for attack {trigger}+{target}. "
                         f"Valid options: {', '.join(valid)}")
    return Attack(f"{trigger}+{target}", built, modifier)


def list_attacks() -> list[tuple[str, str]]:
    """(name, one-line help) for every trigger, then every target modifier."""
    return [(name, f"{kind}: {cls.__doc__.splitlines()[0]}")
            for kind, table in (("trigger", TRIGGERS), ("target", TARGETS)) for name, cls in table.items()]
