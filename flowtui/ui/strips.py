"""The one bridge from render/ cell data to Rich segments / Textual strips."""

from __future__ import annotations

import numpy as np
from rich.cells import cell_len
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from flowtui.render.cells import HALF_BLOCK, CellGrid

_STYLES: dict[tuple[int, int], Style] = {}


def _packed(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _color(packed: int) -> Color:
    return Color.from_rgb(packed >> 16, (packed >> 8) & 255, packed & 255)


def _style(top: int, bottom: int) -> Style:
    # Few distinct colour pairs repeat across frames, so Styles are shared process-wide.
    key = (top, bottom)
    style = _STYLES.get(key)
    if style is None:
        if len(_STYLES) > 200_000:
            _STYLES.clear()
        if top == bottom:
            style = Style(bgcolor=_color(bottom))
        else:
            style = Style(color=_color(top), bgcolor=_color(bottom))
        _STYLES[key] = style
    return style


def grid_to_segments(grid: CellGrid) -> list[list[Segment]]:
    """One list of segments per cell row; runs of equal cells become one segment."""
    top, bottom = _packed(grid.top), _packed(grid.bottom)
    rows: list[list[Segment]] = []
    for r in range(grid.rows):
        t, b = top[r], bottom[r]
        change = np.flatnonzero((t[1:] != t[:-1]) | (b[1:] != b[:-1])) + 1
        starts = np.concatenate(([0], change))
        ends = np.concatenate((change, [grid.cols]))
        segs = []
        for s, e, tv, bv in zip(starts.tolist(), ends.tolist(), t[starts].tolist(), b[starts].tolist(), strict=True):
            char = " " if tv == bv else HALF_BLOCK
            segs.append(Segment(char * (e - s), _style(tv, bv)))
        rows.append(segs)
    return rows


def grid_to_strips(grid: CellGrid, width: int, height: int, pad: Style) -> list[Strip]:
    """The grid centred in a `width` x `height` box, padded with the widget's own style."""
    left = max(0, (width - grid.cols) // 2)
    top = max(0, (height - grid.rows) // 2)
    blank = Strip([Segment(" " * width, pad)], width)
    strips = [blank] * top
    for segs in grid_to_segments(grid):
        line = [Segment(" " * left, pad)] if left else []
        line += segs
        right = width - left - grid.cols
        if right > 0:
            line.append(Segment(" " * right, pad))
        strips.append(Strip(line, width).crop(0, width))
    strips += [blank] * max(0, height - len(strips))
    return strips[:height]


def _label_style(top: np.ndarray, bottom: np.ndarray) -> Style:
    """Text over a half-block cell: the cell's mean colour behind, black or white in front,
    whichever reads on it."""
    rgb = (top.astype(np.int64) + bottom.astype(np.int64)) // 2
    lum = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    fg = Color.from_rgb(0, 0, 0) if lum > 128 else Color.from_rgb(255, 255, 255)
    return Style(color=fg, bgcolor=Color.from_rgb(*(int(v) for v in rgb)), bold=True)


def label_strips(strips: list[Strip], grid: CellGrid, labels: list[tuple[int, int, str]],
                 width: int, height: int) -> list[Strip]:
    """`strips` (grid_to_strips of `grid` in a `width` x `height` box) with each label's text
    (row, col in grid cells; already control-character safe and fitted) written over its
    cells, one character per cell in that cell's colours."""
    left = max(0, (width - grid.cols) // 2)
    top = max(0, (height - grid.rows) // 2)
    out = list(strips)
    for row, col, text in labels:
        y, x = top + row, left + col
        if not 0 <= y < len(out):
            continue
        segs, cx = [], col
        for ch in text:
            n = cell_len(ch)
            if cx + n > grid.cols or n == 0:
                break
            segs.append(Segment(ch, _label_style(grid.top[row, cx], grid.bottom[row, cx])))
            cx += n
        span = cx - col
        if not span:
            continue
        line = out[y]
        out[y] = Strip.join([line.crop(0, x), Strip(segs, span), line.crop(x + span, width)])
    return out
