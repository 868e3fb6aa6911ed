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


def spark_rows(values: np.ndarray, lo: float, hi: float, height: int) -> list[list[int]]:
    """A sparkline `height` rows tall: block level 0..8 per value for each row, top row first."""
    height = max(1, height)
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=lo)
    span = hi - lo
    total = np.zeros(v.shape, dtype=np.int64) if span <= 0 else np.clip(np.rint((v - lo) / span * 8 * height), 0, 8 * height).astype(np.int64)
    total = np.where((total == 0) & (v > lo), 1, total)
    return [np.clip(total - 8 * (height - 1 - r), 0, 8).tolist() for r in range(height)]
