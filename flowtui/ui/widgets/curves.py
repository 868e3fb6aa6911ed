"""The dataset's accuracy curves (the paper's Fig. 5): accuracy against K per strategy, the
baseline as a line and the dataset cliff marked, drawn to the widget's size."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.style import Style
from rich.text import Text
from textual import events
from textual.widgets import Static

STRATEGY_STYLES = ("#4c9be8", "#f08c3a", "#5cc46e", "#c77dde", "#e8596b", "#d4c94a")
MARKERS = "●◆▲■✚✱"
Y_LABEL = 6


def curves_text(summary: dict[str, Any], width: int, height: int = 10) -> Text:
    """Accuracy against K, one marker colour per strategy: the baseline is a dotted line, the
    dataset cliff a red column; each strategy's numbers follow under the K's when there is
    room. The scale runs from just below the lowest point to 1."""
    out = Text(no_wrap=True, overflow="crop")
    strategies = summary.get("strategies") or {}
    L = summary.get("num_layers")
    if not strategies or L is None:
        out.append("no scored samples yet: no curves", "dim")
        return out
    n = L + 1
    cw = max(1, (width - Y_LABEL) // n)
    height = max(3, height)
    base = summary.get("baseline_accuracy")
    cliff = summary.get("dataset_cliff")
    values = [v for s in strategies.values() for v in s["accuracy"]] + [base or 1.0]
    lo = min(float(np.floor(min(values) * 10) / 10), 0.9)

    def row_of(v: float) -> int:
        return int(round((1.0 - float(np.clip(v, lo, 1))) / (1.0 - lo) * (height - 1)))

    grid: list[list[tuple[str, Style | str]]] = [[(" ", "")] * (n * cw) for _ in range(height)]
    if base is not None:
        grid[row_of(base)] = [("┈", "grey50")] * (n * cw)
    if cliff is not None:
        for r in range(height):
            grid[r][cliff * cw + cw // 2] = ("│", "#e03131")
    # `all` last, so where curves meet the curve the cliff is defined on stays visible.
    for i, s in reversed(list(enumerate(strategies.values()))):
        style: Style | str = Style(color=STRATEGY_STYLES[i % len(STRATEGY_STYLES)], bold=True)
        for k, v in enumerate(s["accuracy"]):
            grid[row_of(v)][k * cw + cw // 2] = (MARKERS[i % len(MARKERS)], style)
    ticks = {0: 1.0, height - 1: lo, (height - 1) // 2: 1.0 - (1.0 - lo) * ((height - 1) // 2)
             / (height - 1)}
    for r in range(height):
        tick = f"{ticks[r]:.2f} " if r in ticks else ""
        out.append(f"{tick:>{Y_LABEL}}", "dim")
        for ch, style in grid[r]:
            out.append(ch, style)
        out.append("\n")
    out.append(f"{'K ':>{Y_LABEL}}", "dim")
    for k in range(n):
        label = str(k) if cw >= len(str(k)) + 1 or k % 5 == 0 else ""
        style = "bold #e03131" if k == cliff else "dim"
        out.append(label.center(cw)[:cw] if cw > 1 else (label[:1] or " "), style)
    out.append("\n")
    if cw >= 5:
        for i, (name, s) in enumerate(strategies.items()):
            colour = STRATEGY_STYLES[i % len(STRATEGY_STYLES)]
            out.append(f"{MARKERS[i % len(MARKERS)]} ", Style(color=colour, bold=True))
            out.append(f"{name[:Y_LABEL - 3]:<{Y_LABEL - 2}}", colour)
            for v in s["accuracy"]:
                out.append(f"{v:.2f}".center(cw)[:cw])
            out.append("\n")
    legend: list[list[tuple[str, Style | str]]] = []
    for i, (name, s) in enumerate(strategies.items()):
        mark = Style(color=STRATEGY_STYLES[i % len(STRATEGY_STYLES)], bold=True)
        legend.append([(f"{MARKERS[i % len(MARKERS)]} {name}", mark),
                       (f" cliff {s['dataset_cliff']}", "dim")])
    if base is not None:
        lo95, hi95 = summary["baseline_ci95"]
        legend.append([("┈ baseline ", "grey50"), (f"{base:.3f} [95% {lo95:.2f}-{hi95:.2f}]",
                                                   "dim")])
    if cliff is not None:
        legend.append([("│ dataset cliff ", "#e03131"), (f"K={cliff}", "bold #e03131")])
    used = 0
    for item in legend:  # as many items a line as fit the width
        size = sum(len(t) for t, _ in item) + 3
        if used and used + size > width:
            out.append("\n")
            used = 0
        for t, style in item:
            out.append(t, style)
        out.append("   ")
        used += size
    return out


class CurvesView(Static):
    """The curves, redrawn at the widget's width."""

    def __init__(self, summary: dict[str, Any], **kwargs) -> None:
        super().__init__(**kwargs)
        self.summary = summary

    def on_resize(self, _event: events.Resize) -> None:
        self.redraw()

    def on_mount(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        width = self.size.width or 80
        strategies = len(self.summary.get("strategies") or {})
        lines = strategies + 2 + (strategies + 2) * 28 // max(20, width)
        height = max(4, (self.size.height or 16) - lines)
        self.update(curves_text(self.summary, width, height))
