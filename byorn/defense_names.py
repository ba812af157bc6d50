"""The defenses' registry names, without importing them (they import torch): a command checks a
name before anything heavy loads. tests/test_baselines.py keeps this the registry's own list."""

DEFENSE_NAMES = ("bye", "byorn", "none", "onion", "oracle", "random_drop", "reference_ratio", "score_drop", "tcap")
