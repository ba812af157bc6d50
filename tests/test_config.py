"""byorn.config: typed configs from YAML plus key=value overrides; every bad input is a ConfigError
that names the source and the field."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from byorn.config import (
    ConfigError,
    PretrainConfig,
    TrainConfig,
    describe,
    from_dict,
    load_config,
    read_yaml,
    save_config,
)

TRAIN_KEYS = [f.name for f in dataclasses.fields(TrainConfig)]


def write(tmp_path: Path, text: str, name: str = "train.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file_or_overrides():
    assert load_config(TrainConfig) == TrainConfig()
    assert TrainConfig().lora is True and TrainConfig().batch_size == 16


def test_unknown_key_is_an_error_listing_every_valid_key(tmp_path):
    path = write(tmp_path, "epochs: 2\nlearnig_rate: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, path)
    message = str(info.value)
    assert message.startswith(f"{path}: unknown key(s) 'learnig_rate'. Valid keys: ")
    assert message.endswith("Valid keys: " + ", ".join(TRAIN_KEYS))
    with pytest.raises(ConfigError, match=r"^config: unknown key\(s\) 'a', 'b'\. Valid keys: model, lora, "):
        load_config(TrainConfig, overrides=["b=1", "a=2"])


@pytest.mark.parametrize("override, field, got", [
    ("batch_size=big", "batch_size", "str 'big'"),
    ("batch_size=2.5", "batch_size", "float 2.5"),
    ("batch_size=true", "batch_size", "bool True"),  # bool is an int subclass: still refused
    ("lora=1", "lora", "int 1"),
    ("learning_rate=fast", "learning_rate", "str 'fast'"),
    ("model=3", "model", "int 3"),
])
def test_wrong_type_names_the_field(override, field, got):
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, overrides=[override])
    expected = {"batch_size": "int", "lora": "bool", "learning_rate": "float", "model": "str"}[field]
    assert str(info.value) == f"config: field {field!r}: expected {expected}, got {got}"


@pytest.mark.parametrize("override, message", [
    ("lora_dropout=1.5", "field 'lora_dropout': 1.5 is above the maximum 1.0"),
    ("lora_dropout=-0.1", "field 'lora_dropout': -0.1 is below the minimum 0.0"),
    ("batch_size=0", "field 'batch_size': 0 is below the minimum 1"),
    ("lora_r=0", "field 'lora_r': 0 is below the minimum 1"),
    ("learning_rate=-1", "field 'learning_rate': -1.0 is below the minimum 0.0"),
    # NaN compares false with any bound; infinity passes a lower one
    ("learning_rate=.nan", "field 'learning_rate': expected a number, got nan"),
    ("learning_rate=.inf", "field 'learning_rate': expected a finite number, got inf"),
    ("epochs=.inf", "field 'epochs': expected a finite number, got inf"),
])
def test_out_of_range_names_the_field(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, overrides=[override])
    assert str(info.value) == f"config: {message}"


def test_a_config_made_in_python_is_checked_as_a_file_would_be():
    assert TrainConfig(epochs=1).epochs == 1.0 and isinstance(TrainConfig(epochs=1).epochs, float)
    with pytest.raises(ConfigError, match="TrainConfig: field 'batch_size': 0 is below the minimum 1"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="TrainConfig: field 'epochs': expected float, got str '1'"):
        TrainConfig(epochs="1")
    with pytest.raises(ConfigError, match="field 'learning_rate': expected a finite number"):
        dataclasses.replace(TrainConfig(), learning_rate=float("inf"))


def test_out_of_range_in_a_file_names_the_file_and_field(tmp_path):
    path = write(tmp_path, "batch_size: 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, path)
    assert str(info.value) == f"{path}: field 'batch_size': 0 is below the minimum 1"


def test_yaml_file_then_overrides(tmp_path):
    path = write(tmp_path, "epochs: 2\nbatch_size: 8\nlora: true\nlora_target: '.*q_proj'\n")
    config = load_config(TrainConfig, path, ["batch_size=4", "lora=false", "learning_rate=0.01", "seed=7"])
    assert config == dataclasses.replace(TrainConfig(), epochs=2.0, batch_size=4, lora=False, learning_rate=0.01,
                                         seed=7, lora_target=".*q_proj")
    assert isinstance(config.epochs, float)  # an int in YAML becomes the float the field declares


def test_a_key_given_twice_is_an_error_naming_it_and_its_line(tmp_path):
    path = write(tmp_path, "epochs: 2\nbatch_size: 8\nepochs: 3\n")
    with pytest.raises(ConfigError, match="key 'epochs' is given twice") as info:
        load_config(TrainConfig, path)
    assert str(path) in str(info.value) and "line 3" in str(info.value)
    # a merge key's values may be overridden: that is what it is for
    assert read_yaml("base: &b {epochs: 2, seed: 1}\ntrain: {<<: *b, seed: 5}")["train"] == {"epochs": 2, "seed": 5}
    with pytest.raises(yaml.YAMLError):  # an unhashable key stays a YAML error, not a TypeError
        read_yaml("? [a, b]\n: 1\n")


def test_an_override_that_is_not_yaml_is_taken_as_text():
    assert load_config(TrainConfig, overrides=["lora_target=.*[qv]_proj"]).lora_target == ".*[qv]_proj"
    assert load_config(TrainConfig, overrides=["lora_target='[qv]_proj'"]).lora_target == "[qv]_proj"
    with pytest.raises(ConfigError, match="not valid YAML; quote text"):  # a list with a typo
        load_config(TrainConfig, overrides=["lora_target=[q_proj, v_proj"])
    with pytest.raises(ConfigError, match="not valid YAML"):  # \. is no escape in double quotes: not the text meant
        load_config(TrainConfig, overrides=['lora_target=".*\\.(q_proj)"'])
    assert load_config(TrainConfig, overrides=["lora_target="]).lora_target == ""  # KEY= is the empty text
    with pytest.raises(ConfigError, match="key 'b' is given twice"):
        load_config(TrainConfig, overrides=["lora_target={b: 1, b: 2}"])


def test_exponent_floats_without_a_dot_are_floats(tmp_path):
    # PyYAML (YAML 1.1) reads `2e-4` as a string; a learning rate is commonly written that way.
    path = write(tmp_path, "learning_rate: 2e-4\nweight_decay: 1E-2\n")
    config = load_config(TrainConfig, path, ["warmup=5e+1"])
    assert (config.learning_rate, config.weight_decay, config.warmup) == (2e-4, 1e-2, 50.0)


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(TrainConfig, write(tmp_path, "")) == TrainConfig()


@pytest.mark.parametrize("text, kind", [("- epochs: 2\n", "list"), ("just a string\n", "str"), ("3\n", "int")])
def test_non_mapping_top_level_names_the_file(tmp_path, text, kind):
    path = write(tmp_path, text, name="bad.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, path)
    assert str(info.value) == f"{path}: top level must be a mapping of key: value, got {kind}"


def test_unreadable_files_name_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="^" + re.escape(f"{missing}: cannot read config")):
        load_config(TrainConfig, missing)
    broken = write(tmp_path, "epochs: [1, 2\n", name="broken.yaml")
    with pytest.raises(ConfigError, match="^" + re.escape(f"{broken}: cannot read config")):
        load_config(TrainConfig, broken)


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match=r"^override 'epochs': expected KEY=VALUE$"):
        load_config(TrainConfig, overrides=["epochs"])


def test_save_then_load_round_trips(tmp_path):
    config = TrainConfig(lora=False, epochs=0.5, lora_target=r".*\.(q|v)_proj", learning_rate=3e-5)
    save_config(config, tmp_path / "c.yaml")
    assert load_config(TrainConfig, tmp_path / "c.yaml") == config
    pretrain = PretrainConfig(steps=10)
    save_config(pretrain, tmp_path / "p.yaml")
    assert load_config(PretrainConfig, tmp_path / "p.yaml") == pretrain


def test_from_dict_and_describe():
    assert from_dict(PretrainConfig, {"steps": 3}).steps == 3
    with pytest.raises(ConfigError, match=r"^x: field 'tokenizer_corpus': 5 is below the minimum 100$"):
        from_dict(PretrainConfig, {"tokenizer_corpus": 5}, source="x")
    lines = describe(TrainConfig).splitlines()
    assert len(lines) == len(TRAIN_KEYS)
    assert lines[0] == "  model (default 'byorn-tiny'): model directory, or 'byorn-tiny' for the built-in model"


def test_the_options_pages_tables_are_the_configs():
    from pathlib import Path

    from byorn.config import options_table
    from byorn.defenses.byorn_config import ByornConfig

    page = (Path(__file__).parent.parent / "docs" / "options.md").read_text(encoding="utf-8")
    for config in (TrainConfig, ByornConfig):
        table = options_table(config)
        assert table in page, f"docs/options.md's table of {config.__name__} is stale; it should read:\n{table}"
