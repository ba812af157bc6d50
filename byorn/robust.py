"""Robust statistics for scores: the median and the median absolute deviation (MAD) follow the
bulk of a data set whatever a few outliers (the poisons) do."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAD_TO_SIGMA = 1.4826  # 1.4826 x MAD estimates the standard deviation of normal data


def mad_z(values: Sequence[float], guests: int = 0) -> np.ndarray:
    """(value - median) / (1.4826 * MAD): robust z-scores; no spread (MAD 0) divides by a tiny number.
    guests: the last values are measured on the others' median and MAD (all of them when there are no others)."""
    values = np.asarray(values, dtype=float)
    fit = values[:len(values) - guests] if guests < len(values) else values
    median = np.median(fit)
    return (values - median) / max(MAD_TO_SIGMA * float(np.median(np.abs(fit - median))), 1e-12)
