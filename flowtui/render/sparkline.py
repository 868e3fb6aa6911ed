"""Sparklines as plain strings of block characters, on a caller-chosen shared scale."""

from __future__ import annotations

import numpy as np

BLOCKS = " ▁▂▃▄▅▆▇█"


def spark_levels(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Block level 0..8 for each value on the scale [lo, hi]; a non-zero value gets at least 1."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=lo)
    span = hi - lo
    if span <= 0:
        return np.where(v > lo, 8, 0).astype(np.int64)
    levels = np.clip(np.rint((v - lo) / span * 8), 0, 8).astype(np.int64)
    return np.where((levels == 0) & (v > lo), 1, levels)


def sparkline(values: np.ndarray, lo: float, hi: float, width: int = 1) -> str:
    """One block character per value (repeated `width` times) on the shared scale [lo, hi]."""
    return "".join(BLOCKS[level] * width for level in spark_levels(values, lo, hi))
