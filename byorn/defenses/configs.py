"""Every defense's name and options (its config dataclass), without the defenses themselves, which
import torch: a command checks `--defense` and its `-d` options before anything heavy loads.
BYORn's own options are in byorn_config.py; tests/test_baselines.py keeps CONFIGS the registry's list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from byorn.config import ConfigError, from_dict, option
from byorn.defenses.byorn_config import ByornConfig, JudgeConfig, PaperConfig


@dataclass
class ProbeConfig:
    """The options BYE and TCAP share: their probe fine-tune, attention batches, mixtures' seed."""

    probe_epochs: float = option(0.0, "epochs of the probe fine-tune on the poisoned data; 0: as the real one",
                                 min=0.0)
    batch_size: int = option(32, "samples per attention batch", min=1)
    seed: int = option(0, "seed of the Gaussian mixtures")
    cache_dir: str = option("", "a folder of fine-tunes already run (byorn bench gives its grid's): a fine-tune of the "
                                "same weights on the same samples with the probe's settings is loaded from it, not "
                                "trained again (full fine-tuning only); empty: always train the probe")


@dataclass
class ByeConfig(ProbeConfig):
    separation: float = option(2.0, "keep a layer when its two entropy clusters' means differ by more than "
                                    "this times the sum of their standard deviations", min=0.0)


@dataclass
class TcapConfig(ProbeConfig):
    layers: float = option(0.5, "share of the language model's layers, counted from the last, whose heads may vote",
                           min=0.0, max=1.0)
    heads: int = option(8, "the most separated heads that vote", min=1)
    vote: float = option(0.5, "a head votes for a sample when the sample's posterior of the head's target "
                              "components is above this", min=0.0, max=1.0)


@dataclass
class OnionConfig:
    threshold: float = option(0.0, "delete a word when its suspicion (perplexity drop without it) is above this")
    lm: str = option("auto", "language model for the perplexities: a causal LM directory, byorn-tiny-lm, 'vlm' "
                             "(the VLM's own), or auto (the VLM's own; byorn-tiny-lm for byorn-tiny)")
    batch_size: int = option(64, "sentences per language-model batch", min=1)


@dataclass
class ReferenceRatioConfig:
    # CleanGen's alpha is a threshold on the same ratio; 20 is a middle value of the range it studies.
    alpha: float = option(20.0, "replace a token when the fine-tuned model's probability of it is more than "
                                "alpha times the reference's", min=1.0)
    batch_size: int = option(32, "answers per teacher-forced check", min=1)


@dataclass
class RandomDropConfig(JudgeConfig):
    """BYORn's judgement (to count what it flags), the draw's seed, or a fixed count."""

    count: int = option(-1, "drop this many samples; -1: as many as BYORn's judgement flags (scores the data)",
                        min=-1)
    seed: int = option(0, "seed of the random choice")


# name -> its options' dataclass (None: it takes none)
CONFIGS: dict[str, type | None] = {
    "bye": ByeConfig, "byorn": ByornConfig, "byorn_paper": PaperConfig, "none": None, "onion": OnionConfig,
    "oracle": None, "random_drop": RandomDropConfig, "reference_ratio": ReferenceRatioConfig, "score_drop": JudgeConfig,
    "tcap": TcapConfig,
}
DEFENSE_NAMES = tuple(CONFIGS)


def defense_config(name: str, options: dict[str, Any]) -> Any:
    """The config of defense `name` made from `options` (None for a defense that takes none); an
    unknown name or key, or a bad value, is an error that says which."""
    if name not in CONFIGS:
        raise ValueError(f"Unknown defense {name!r}. Available: {', '.join(sorted(CONFIGS))}")
    config_class = CONFIGS[name]
    if config_class is None:
        if options:
            raise ConfigError(f"defense {name!r} takes no options; got {', '.join(map(repr, options))}")
        return None
    return from_dict(config_class, options, source=f"defense {name!r}")
