"""Typed run configs: dataclasses whose fields carry their help text, loaded from YAML.

Unknown keys are an error that lists the valid ones (a typo must never be silently ignored),
and every run writes its resolved config next to its results.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from byorn.fileio import atomic_write_text

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says where and why."""


def option(default: Any, help: str, *, min: float | None = None, max: float | None = None) -> Any:
    """A config field with its --help text and, for numbers, the range it must lie in."""
    bounds = {name: value for name, value in (("min", min), ("max", max)) if value is not None}
    return field(default=default, metadata={"help": help, **bounds})


def redefault(cls: type, name: str, default: Any) -> Any:
    """Option `name` of config dataclass `cls` with another default, its help and range kept: a
    subclass that presets some options (a named recipe) declares each with this."""
    parent = next((f for f in fields(cls) if f.name == name), None)
    if parent is None:
        raise AttributeError(f"{cls.__name__} has no option {name!r}")
    return field(default=default, metadata=parent.metadata)


def check_choice(name: str, value: object, choices: Iterable[object]) -> None:
    """Raise a ConfigError naming the allowed values when `value` is not one of them."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


@dataclass
class TrainConfig:
    """Fine-tuning a VLM on a data set (LoRA by default)."""

    model: str = option("byorn-tiny", "model directory, or 'byorn-tiny' for the built-in model")
    lora: bool = option(True, "train a LoRA adapter (False: full fine-tuning)")
    lora_r: int = option(8, "LoRA rank", min=1)
    lora_alpha: int = option(16, "LoRA scaling numerator", min=1)
    lora_dropout: float = option(0.0, "dropout on the LoRA input", min=0.0, max=1.0)
    lora_target: str = option("", "regex of module names to adapt; empty: the language model's attention projections")
    epochs: float = option(3.0, "passes over the training set", min=0.0)
    max_steps: int = option(-1, "stop after this many optimizer steps (-1: use epochs)")
    batch_size: int = option(16, "samples per optimizer step", min=1)
    gradient_accumulation_steps: int = option(1, "forward/backward passes an optimizer step is split into (each "
                                                 "on batch_size / (this x processes) samples): less memory", min=1)
    learning_rate: float = option(2e-3, "peak learning rate (cosine schedule)", min=0.0)
    warmup: float = option(0.05, "warmup: a share of the steps if < 1, else a step count", min=0.0)
    weight_decay: float = option(0.0, "AdamW weight decay", min=0.0)
    seed: int = option(0, "seed for data order, LoRA init and everything random", min=0, max=2**32 - 1)
    logging_steps: int = option(10, "log the loss every this many steps", min=1)
    save_steps: int = option(0, "checkpoint every this many steps, for `byorn train --resume` (0: never)", min=0)
    bf16: bool = option(False, "bfloat16 mixed precision (GPUs that have it; on CPU it works but is slow)")
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass: less memory, "
                                                 "about a third more compute")
    report_to: str = option("none", "where the Trainer reports metrics: none, or what TrainingArguments' report_to "
                                    "takes (tensorboard, wandb, ..., installed separately)")
    trust_remote_code: bool = option(False, "allow model code from the model directory (off: safer)")

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class PretrainConfig:
    """Pretraining byorn-tiny (or byorn-tiny-flickr) from scratch on a world's pretraining mix."""

    steps: int = option(0, "optimizer steps (0: the world's default, 7500 for shapes, 5000 for flickr8k)", min=0)
    batch_size: int = option(32, "samples per step", min=1)
    # Measured: at 1e-3 and above the tiny model never learns to read the image (VQA at chance
    # after 500 steps); at 5e-4 shape-only VQA reaches 95 % in 600 steps.
    learning_rate: float = option(5e-4, "peak learning rate (cosine schedule)", min=0.0)
    warmup: float = option(0.03, "warmup share of the steps", min=0.0)
    focus_steps: int = option(-1, "then this many steps of the position-focus phase, mostly 'where is the <colour> "
                                  "<shape>?' about scenes of several objects (-1: the world's default, 2500 for "
                                  "shapes, 0 for flickr8k, which has no such phase)", min=-1)
    focus_learning_rate: float = option(5e-4, "peak learning rate of the position-focus phase (cosine schedule)",
                                        min=0.0)
    seed: int = option(0, "seed for weights, tokenizer corpus and scenes", min=0, max=2**32 - 1)
    tokenizer_corpus: int = option(20000, "pretraining samples the tokenizer is trained on", min=100)
    logging_steps: int = option(100, "log the loss every this many steps", min=1)
    world: str = option("shapes", "shapes: fresh synthetic scenes (byorn-tiny); flickr8k: the photos and captions of "
                                  "Flickr8k's train split (byorn-tiny-flickr; needs data)")
    data: str = option("", "world=flickr8k: the Flickr8k folder (caption file, Images/, split files)")

    def __post_init__(self) -> None:
        check_fields(self)


_YAML11_MISSED_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _check_scalar(name: str, value: Any, expected: type) -> Any:
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is float and isinstance(value, str) and _YAML11_MISSED_FLOAT.fullmatch(value.strip()):
        return float(value)  # PyYAML follows YAML 1.1, which reads `2e-3` (no dot) as a string
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"field {name!r}: expected {expected.__name__}, got {type(value).__name__} {value!r}")
    if expected is float and math.isnan(value):  # compares false with any bound, so no range would catch it
        raise ConfigError(f"field {name!r}: expected a number, got nan")
    return value


def check_fields(config: Any) -> None:
    """A config made in Python (TrainConfig(batch_size=0)) held to what `from_dict` checks in a
    file: each field's type and range, with the same conversions (an int for a float field)."""
    hints, name = typing.get_type_hints(type(config)), type(config).__name__
    for f in fields(config):
        try:
            value = _convert(f.name, getattr(config, f.name), hints[f.name], name)
            _check_range(f.name, value, f.metadata)
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        object.__setattr__(config, f.name, value)


def checked_value(name: str, value: Any, hint: Any) -> Any:
    """`value` checked against the type hint `hint` and converted as a config field's value is
    (int -> float, list -> tuple); a ConfigError names `name`."""
    return _convert(name, value, hint, "")


def _convert(name: str, value: Any, hint: Any, source: str) -> Any:
    """`value` checked against the type hint `hint` (scalars, nested config dataclasses, lists,
    tuples, dicts, optionals), converted where YAML cannot say it (int -> float, list -> tuple)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else from_dict(hint, value, f"{source}: {name}")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for hint_ in inner[:-1]:  # the first type the value fits, in the order written
            try:
                return _convert(name, value, hint_, source)
            except ConfigError:
                continue
        return _convert(name, value, inner[-1], source)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"field {name!r}: expected a list, got {type(value).__name__} {value!r}")
        items = [_convert(f"{name}[{i}]", item, args[0] if args else Any, source) for i, item in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict or hint is dict:
        if not isinstance(value, typing.Mapping):
            raise ConfigError(f"field {name!r}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if hint in (int, float, bool, str):
        return _check_scalar(name, value, hint)
    return value


def _check_range(name: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    if ("min" in meta or "max" in meta) and isinstance(value, float) and math.isinf(value):
        raise ConfigError(f"field {name!r}: expected a finite number, got {value}")
    if "min" in meta and value < meta["min"]:
        raise ConfigError(f"field {name!r}: {value} is below the minimum {meta['min']}")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(f"field {name!r}: {value} is above the maximum {meta['max']}")


# Hugging Face TrainingArguments' names that people type out of habit, answered with byorn's own
# rather than taken silently: batch_size is per optimizer step, not per device, so a value copied
# across would train with another batch
OTHER_NAMES = {"num_train_epochs": ("epochs", "passes over the training set"),
               "per_device_train_batch_size": ("batch_size", "samples per optimizer step, over all devices and "
                                                             "gradient_accumulation_steps together"),
               "train_batch_size": ("batch_size", "samples per optimizer step"),
               "model_name_or_path": ("model", "model directory or name"),
               "output_dir": ("--out", "the run's folder, an option of the command"),
               "lr": ("learning_rate", "peak learning rate")}


def _other_names(unknown: list[str], known: typing.Container[str]) -> str:
    """What byorn calls the unknown keys that are another tool's names, as a sentence (or '')."""
    said = [f"{key} is Hugging Face's name; byorn's is {name} ({meaning})" for key in unknown
            if key in OTHER_NAMES for name, meaning in [OTHER_NAMES[key]] if name in known or name == "--out"]
    return " " + "; ".join(said) + "." if said else ""


def from_dict(cls: type[T], values: Any, source: str = "config") -> T:
    """Build the config dataclass `cls` from a mapping (nested configs and lists of them too):
    unknown or missing keys, wrong types and out-of-range values are ConfigErrors that say where."""
    if not isinstance(values, typing.Mapping):
        raise ConfigError(f"{source}: expected a mapping of key: value, got {type(values).__name__} {values!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}."
                          f"{_other_names(unknown, known)} Valid keys: {', '.join(known)}")
    required = [name for name, f in known.items() if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING and name not in values]
    if required:
        raise ConfigError(f"{source}: missing key(s) {', '.join(map(repr, required))}")
    hints = typing.get_type_hints(cls)
    checked = {}
    for name, value in values.items():
        try:
            checked[name] = _convert(name, value, hints[name], source)
            _check_range(name, checked[name], known[name].metadata)
        except ConfigError as exc:
            message = str(exc)
            raise ConfigError(message if message.startswith(source) else f"{source}: {message}") from None
    return cls(**checked)


class _UniqueKeys(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error (PyYAML keeps the
    last one silently, so a grid listing poison_rates twice would run only the second list)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # <<: *anchor: keys after it override it on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, typing.Hashable):
                continue  # the base constructor refuses it, as a YAML error
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(text: str) -> Any:
    """YAML text as Python values, safely (no objects constructed) and with no key given twice."""
    return yaml.load(text, Loader=_UniqueKeys)  # a SafeLoader: it builds no Python objects


def parse_overrides(pairs: typing.Iterable[str], source: str = "override") -> dict[str, Any]:
    """`KEY=VALUE` pairs (command-line options and overrides), values read as YAML: numbers,
    booleans, lists, strings. The config's types are checked later, by `from_dict`."""
    values: dict[str, Any] = {}
    for item in pairs:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"{source} {item!r}: expected KEY=VALUE")
        if not raw.strip():  # KEY= : the empty text (an option's "empty: ..." default), not YAML's null
            values[key.strip()] = ""
            continue
        try:
            values[key.strip()] = read_yaml(raw)
        except yaml.constructor.ConstructorError as exc:  # {a: 1, a: 2}
            raise ConfigError(f"{source} {item!r}: {exc.problem}") from None
        except yaml.YAMLError as exc:
            if raw.lstrip()[:1] in ("[", "{", "'", '"'):  # a list, mapping or quoted text with a typo
                raise ConfigError(f"{source} {item!r}: not valid YAML; quote text that starts with a bracket in "
                                  f"single quotes ({key.strip()}=\"'...'\") ({exc})") from None
            values[key.strip()] = raw  # not YAML (a regex such as .*[qv]_proj): the text as given
    return values


def load_config(cls: type[T], path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> T:
    """YAML file (optional) then `key=value` overrides, e.g. `epochs=2 lora=false`."""
    values: dict[str, Any] = {}
    source = str(path) if path else "config"
    if path is not None:
        try:
            loaded = read_yaml(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read config ({exc})") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of key: value, got {type(loaded).__name__}")
        values.update(loaded or {})
    values.update(parse_overrides(overrides))
    return from_dict(cls, values, source)


def save_config(config: Any, path: str | Path) -> None:
    atomic_write_text(Path(path), yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))


def options_table(cls: type) -> str:
    """A Markdown table of a config's fields: name, default and help (README's options tables)."""
    rows = [f"| `{f.name}` | `{f.default!r}` | {f.metadata.get('help', '')} |" for f in fields(cls)]
    return "\n".join(["| option | default | meaning |", "|---|---|---|", *rows])


def describe(cls: type) -> str:
    """One line per field: name, default and help, for --help texts."""
    return "\n".join(f"  {f.name} (default {f.default!r}): {f.metadata.get('help', '')}" for f in fields(cls))


__all__ = ["ConfigError", "TrainConfig", "PretrainConfig", "check_choice", "load_config", "save_config", "from_dict",
           "parse_overrides", "describe", "options_table"]
