"""The logit lens in dataset runs (docs/definitions.md, "Logit lens on image tokens"): per
sample and layer, the lens probability of the answer's first token averaged over the image's
feature tokens, and over the tokens of the asked object's region where the data gives one;
summary.json averages them over samples.

A feature token is in the object's region when its region's centre lies inside the box.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from flowtui.engine.analysis import Analysis


def region_tokens(analysis: Analysis, box: Sequence[float]) -> np.ndarray:
    """Indices of the feature tokens whose region's centre lies inside `box` (x0, y0, x1, y1,
    original-image pixels); tokens with no region never do."""
    r = np.asarray(analysis.token_regions, dtype=np.float64)
    cx, cy = (r[:, 0] + r[:, 2]) / 2, (r[:, 1] + r[:, 3]) / 2
    x0, y0, x1, y1 = (float(v) for v in box)
    with np.errstate(invalid="ignore"):
        inside = (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
    return np.flatnonzero(inside)


def lens_record(analysis: Analysis, box: Sequence[float] | None) -> dict[str, Any]:
    """A sample's lens entry: the word, and per layer its mean probability over the image
    tokens (`image`) and over the region's tokens (`region`: null without a box, or where no
    token's centre falls in it)."""
    lens = analysis.lens
    assert lens is not None, "engine.lens(analysis) first"
    rec: dict[str, Any] = {
        "word": lens.word,
        "image": [float(v) for v in lens.word_prob.mean(axis=1)],
        "region": None,
    }
    if box is not None:
        idx = region_tokens(analysis, box)
        if idx.size:
            rec["region"] = [float(v) for v in lens.word_prob[:, idx].mean(axis=1)]
            rec["region_tokens"] = int(idx.size)
    return rec


def lens_summary(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """summary.json's `lens`: per layer, the mean over samples of each sample's mean lens
    probability of its answer's first token, over the image (`image`) and over the object's
    region (`region`, over the samples that have one); None where no sample has a lens."""
    have = [r["lens"] for r in records if "error" not in r and r.get("lens")]
    if not have:
        return None
    image = np.array([h["image"] for h in have], dtype=np.float64)
    regions = [h["region"] for h in have if h.get("region") is not None]
    out: dict[str, Any] = {
        "word": "the answer's first token",
        "samples": len(have),
        "image": [float(v) for v in image.mean(axis=0)],
        "region_samples": len(regions),
        "region": None,
    }
    if regions:
        out["region"] = [float(v) for v in np.array(regions, dtype=np.float64).mean(axis=0)]
    return out
