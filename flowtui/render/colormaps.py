"""Heatmap colormaps as 256-entry uint8 lookup tables, built from a few anchor colours.

No matplotlib: the anchors below are the published 11-step values of each map, linearly
interpolated, which is visually indistinguishable at terminal resolution.
"""

from __future__ import annotations

from functools import cache

import numpy as np

# viridis is the default (perceptually uniform); jet is what the paper's figures use.
COLORMAPS: tuple[str, ...] = ("viridis", "jet", "magma", "grey")

_HEX_ANCHORS: dict[str, tuple[str, ...]] = {
    "viridis": (
        "#440154", "#482475", "#414487", "#355f8d", "#2a788e", "#21918c",
        "#22a884", "#44bf70", "#7ad151", "#bddf26", "#fde725",
    ),
    "magma": (
        "#000004", "#140e36", "#3b0f70", "#641a80", "#8c2981", "#b73779",
        "#de4968", "#f7705c", "#fe9f6d", "#fecf92", "#fcfdbf",
    ),
}

# matplotlib's jet segment data: (position, value) per channel.
_JET = {
    "r": ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    "g": ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    "b": ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
}


def _hex(h: str) -> tuple[int, int, int]:
    return int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)


@cache
def colormap_lut(name: str) -> np.ndarray:
    """The colormap as a read-only uint8 [256, 3] table. Raises ValueError for unknown names."""
    x = np.linspace(0.0, 1.0, 256)
    if name in _HEX_ANCHORS:
        anchors = np.array([_hex(h) for h in _HEX_ANCHORS[name]], dtype=np.float64)
        pos = np.linspace(0.0, 1.0, len(anchors))
        lut = np.stack([np.interp(x, pos, anchors[:, c]) for c in range(3)], axis=1)
    elif name == "jet":
        lut = np.stack(
            [np.interp(x, [p for p, _ in _JET[c]], [v for _, v in _JET[c]]) * 255.0
             for c in "rgb"], axis=1
        )
    elif name in ("grey", "gray"):
        lut = np.repeat(x[:, None] * 255.0, 3, axis=1)
    else:
        raise ValueError(f"unknown colormap {name!r} (choose from {', '.join(COLORMAPS)})")
    out = np.clip(np.rint(lut), 0, 255).astype(np.uint8)
    out.flags.writeable = False
    return out


def apply_colormap(values: np.ndarray, name: str) -> np.ndarray:
    """Map values in [0, 1] (any shape) to uint8 RGB (shape + (3,))."""
    idx = np.clip(np.rint(np.nan_to_num(values, nan=0.0) * 255.0), 0, 255).astype(np.uint8)
    return colormap_lut(name)[idx]


def next_colormap(name: str) -> str:
    """The colormap after `name` in COLORMAPS (wrapping), for the cycle key."""
    i = COLORMAPS.index(name) if name in COLORMAPS else -1
    return COLORMAPS[(i + 1) % len(COLORMAPS)]


def logprob_rgb(logprob: float) -> tuple[int, int, int]:
    """Colour for a token's log-prob: red (unlikely) -> amber -> green (certain).

    Mapped on probability, so 0 nats is green and anything below ~-3 nats is red.
    """
    p = float(np.exp(np.clip(logprob, -50.0, 0.0)))
    stops = np.array([[224, 27, 36], [229, 165, 10], [46, 194, 126]], dtype=np.float64)
    pos = (0.0, 0.5, 1.0)
    return tuple(int(round(np.interp(p, pos, stops[:, c]))) for c in range(3))  # type: ignore[return-value]
