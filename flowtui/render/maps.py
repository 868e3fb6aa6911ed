"""Per-token maps ready to paint: the LLaVA-CAM and the answer's attention, scaled to 0..1.

Plain numpy. The CAM is already normalised over the feature tokens of all views (docs/definitions.md),
so it is drawn as stored, 0..1. The attention map has no natural scale: it is drawn per layer
and view over 0..max of that view's tokens. Qwen-family models put very large attention on a
few "sink" tokens (often at the image's edges), which would squash every other token into the
lowest colour; with sinks excluded the max is taken over the other tokens and the sinks are
clipped to the top colour.

A **sink token** of one view at one layer: a token whose attention is above
`SINK_FACTOR` (10) times the median attention of the view's tokens, keeping at most the
largest ⌈`SINK_MAX_FRACTION` (2%) × the view's token count⌉ of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# "cam": the stored LLaVA-CAM; "attention": the answer's attention on each feature token;
# "lens": the logit lens's chosen word's probability on each feature token; "words": the same map
# with each token's top lens word listed (docs/definitions.md, "Logit lens on image tokens").
MAP_MODES: tuple[str, ...] = ("cam", "attention", "lens", "words")
MAP_TITLES: dict[str, str] = {"cam": "CAM", "attention": "Attention", "lens": "Lens",
                              "words": "Lens words"}
# The maps that need the logit lens computed first.
LENS_MODES: tuple[str, ...] = ("lens", "words")
SINK_FACTOR = 10.0
SINK_MAX_FRACTION = 0.02


def sink_mask(
    values: np.ndarray, factor: float = SINK_FACTOR, max_fraction: float = SINK_MAX_FRACTION
) -> np.ndarray:
    """bool [n] over one view's values at one layer: which tokens are sinks (module docstring).

    Non-finite values are never sinks and do not count toward the median."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    mask = np.zeros(v.shape, dtype=bool)
    finite = np.isfinite(v)
    if not finite.any():
        return mask
    median = float(np.median(v[finite]))
    candidates = np.flatnonzero(finite & (v > 0) & (v > factor * median))
    cap = int(np.ceil(max_fraction * v.size))
    if len(candidates) > cap:
        # Only the largest few: a broad bright area is part of the map, not a sink.
        order = np.argsort(-v[candidates], kind="stable")
        candidates = candidates[order[:cap]]
    mask[candidates] = True
    return mask


@dataclass(frozen=True)
class TokenMap:
    """One map mode's per-token values over all layers, ready for `CamRenderer`.

    `values` float32 [L, N] in [0, 1] is what is painted; `raw` [L, N] the unscaled values;
    `vmax` float32 [L, V] the raw value drawn as the top colour in each layer and view;
    `sinks` bool [L, N] the tokens left out of the scale (clipped to the top colour).
    """

    name: str
    values: np.ndarray
    raw: np.ndarray
    vmax: np.ndarray
    sinks: np.ndarray
    exclude_sinks: bool = False

    def sink_count(self, layer: int, tokens: np.ndarray) -> int:
        return int(np.count_nonzero(self.sinks[layer, tokens]))

    def peak(self, layer: int, tokens: np.ndarray) -> int | None:
        """The token (an index into N) of `tokens` with the largest non-sink value at `layer`,
        or None when all of them are zero (an all-zero map has no peak)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        tokens = tokens[~self.sinks[layer, tokens]]
        if not len(tokens):
            return None
        vals = np.nan_to_num(self.raw[layer, tokens].astype(np.float64), nan=0.0)
        i = int(np.argmax(vals))
        return int(tokens[i]) if vals[i] > 0 else None


def _views(token_views: np.ndarray | None, n: int, num_views: int | None) -> tuple[np.ndarray, int]:
    tv = np.zeros(n, dtype=np.int64) if token_views is None else np.asarray(token_views)
    count = int(tv.max()) + 1 if tv.size else 1
    return tv, max(count, num_views or 1)


def cam_map(
    cam_tokens: np.ndarray, token_views: np.ndarray | None = None, num_views: int | None = None
) -> TokenMap:
    """The CAM as stored: already 0..1 over all views, so every layer and view's max is 1."""
    cam = np.asarray(cam_tokens, dtype=np.float32)
    L, n = cam.shape
    _, V = _views(token_views, n, num_views)
    return TokenMap(
        name="cam",
        values=cam,
        raw=cam,
        vmax=np.ones((L, V), dtype=np.float32),
        sinks=np.zeros((L, n), dtype=bool),
    )


def attention_map(
    attention: np.ndarray,
    token_views: np.ndarray | None = None,
    num_views: int | None = None,
    exclude_sinks: bool = False,
) -> TokenMap:
    """The answer's attention [L, N] scaled per layer and view to 0..max of the view's tokens;
    with `exclude_sinks` the max skips the view's sink tokens, which are clipped to 1."""
    raw = np.asarray(attention, dtype=np.float32)
    L, n = raw.shape
    tv, V = _views(token_views, n, num_views)
    values = np.zeros((L, n), dtype=np.float32)
    vmax = np.zeros((L, V), dtype=np.float32)
    sinks = np.zeros((L, n), dtype=bool)
    for v in range(V):
        idx = np.flatnonzero(tv == v)
        if not len(idx):
            continue
        for layer in range(L):
            vals = raw[layer, idx]
            rest = vals
            if exclude_sinks:
                mask = sink_mask(vals)
                sinks[layer, idx[mask]] = True
                rest = vals[~mask]
            finite = rest[np.isfinite(rest)]
            top = float(finite.max()) if finite.size else 0.0
            vmax[layer, v] = top
            if top > 0:
                values[layer, idx] = np.clip(np.nan_to_num(vals / top, nan=0.0), 0.0, 1.0)
    return TokenMap("attention", values, raw, vmax, sinks, exclude_sinks)


def lens_map(word_prob: np.ndarray, token_views: np.ndarray | None = None,
             num_views: int | None = None, name: str = "lens") -> TokenMap:
    """The lens word's probability [L, N], drawn on its own scale: 0..1 (a probability)."""
    p = np.clip(np.nan_to_num(np.asarray(word_prob, dtype=np.float32), nan=0.0), 0.0, 1.0)
    L, n = p.shape
    _, V = _views(token_views, n, num_views)
    return TokenMap(name, p, p, np.ones((L, V), dtype=np.float32), np.zeros((L, n), dtype=bool))


def map_threshold(name: str, threshold: float) -> float:
    """The display threshold to draw `name` with: the paper's threshold belongs to the CAM;
    the attention map is drawn in full (0), its scale being relative anyway."""
    return threshold if name == "cam" else 0.0
