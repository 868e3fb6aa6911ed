"""Where the logit lens's top words fit on the drawn image: the words display (docs/definitions.md,
"Logit lens on image tokens", "Word area"). Plain numpy, no Rich.

A **word area** at one layer: a 4-connected set of cells of the drawn image whose tokens all have
the same top lens word (a cell belongs to the token whose region holds its centre). One token is
a few cells wide at most terminal sizes, narrower than most words, so a word is written once per
area rather than once per token: a token whose neighbours read the same word shares their label,
and a token that reads a word of its own gets its own area (then the word fits only where the
token's own cells have room, the per-token rule).

Each area's label goes on its widest run of cells in one row (the run nearest the area's middle
row among equally wide ones), centred; a word wider than the run is cut to fit with "…", or left
out where the run has fewer than MIN_CELLS cells (then only the list under the image names it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# A run narrower than this gets no label (three letters and "…" say little less than nothing).
MIN_CELLS = 4
ELLIPSIS = "…"


@dataclass(frozen=True)
class WordArea:
    """One word area: its top word's token id, the tokens (indices into N) it covers, and the
    run its label goes on (`row`, cells `col` .. `col + width - 1`)."""

    word_id: int
    tokens: np.ndarray
    row: int
    col: int
    width: int


def _runs(words: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(row, start, end, word) of each maximal run of equal words (>= 0) within a row."""
    out = []
    for r, line in enumerate(words):
        change = np.flatnonzero(line[1:] != line[:-1]) + 1
        starts = np.concatenate(([0], change))
        ends = np.concatenate((change, [len(line)]))
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            if line[s] >= 0:
                out.append((r, s, e, int(line[s])))
    return out


def word_areas(cell_owner: np.ndarray, top: np.ndarray) -> list[WordArea]:
    """The word areas of a drawn image: `cell_owner` int [rows, cols] is the token under each
    cell (-1: none), `top` int [N] each token's top word at the layer. Largest area first."""
    owner = np.asarray(cell_owner)
    top = np.asarray(top)
    words = np.full(owner.shape, -1, dtype=np.int64)
    if top.size:
        words = np.where(owner >= 0, top[np.maximum(owner, 0)], -1)
    runs = _runs(words)
    parent = list(range(len(runs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Runs of one row touch those of the next that overlap them with the same word.
    by_row: dict[int, list[int]] = {}
    for i, (r, *_rest) in enumerate(runs):
        by_row.setdefault(r, []).append(i)
    for i, (r, s, e, w) in enumerate(runs):
        for j in by_row.get(r + 1, []):
            _, s2, e2, w2 = runs[j]
            if w2 == w and s2 < e and s < e2:
                parent[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(runs)):
        groups.setdefault(find(i), []).append(i)
    areas = []
    for members in groups.values():
        rows = [runs[i][0] for i in members]
        middle = (min(rows) + max(rows)) / 2
        best = max(members, key=lambda i: (runs[i][2] - runs[i][1], -abs(runs[i][0] - middle)))
        r, s, e, w = runs[best]
        cells = np.zeros(owner.shape, dtype=bool)
        for i in members:
            cells[runs[i][0], runs[i][1]:runs[i][2]] = True
        tokens = np.unique(owner[cells])
        areas.append((int(cells.sum()), WordArea(w, tokens[tokens >= 0], r, s, e - s)))
    areas.sort(key=lambda x: -x[0])
    return [a for _, a in areas]


def fit_label(texts: list[str], room: int, width: Callable[[str], int] = len) -> str | None:
    """The first of `texts` (longest form first) that fits `room` cells, else the last one cut
    to fit with "…"; None where `room` is under MIN_CELLS. `width` measures cells."""
    if room < MIN_CELLS or not texts:
        return None
    for text in texts:
        if width(text) <= room:
            return text
    cut = texts[-1]
    while cut and width(cut) + width(ELLIPSIS) > room:
        cut = cut[:-1]
    return cut + ELLIPSIS if cut else None
