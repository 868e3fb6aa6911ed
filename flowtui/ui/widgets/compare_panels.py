"""The compare screen's areas: one side (an analysis' question, answer, map and sweep) and the
shares of both on one scale with their difference. Texts are built from `flowtui.compare`'s
numbers; nothing here computes a comparison."""

from __future__ import annotations

import numpy as np
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical

from flowtui.compare import Comparison, paired_layer
from flowtui.engine.analysis import GROUPS, Analysis
from flowtui.render.sparkline import BLOCKS, spark_rows
from flowtui.textsafe import signed, visible
from flowtui.ui.widgets.answer_panel import answer_text, first_fit
from flowtui.ui.widgets.cam_view import CamView
from flowtui.ui.widgets.flow_panel import GROUP_COLORS, axis_text, layer_columns
from flowtui.ui.widgets.pixel_view import map_view
from flowtui.ui.widgets.sweep_chart import logp_scale
from flowtui.ui.widgets.text_view import TextView

LABEL = 5
MAX_COLS = 4  # cells per layer at most: wider rows read worse, not better


def info_text(a: Analysis) -> Text:
    """Question and answer, one line each (cut with an ellipsis where the side is narrow)."""
    q = Text.assemble(("Q ", "bold"), visible(a.question), no_wrap=True, overflow="ellipsis")
    ans = Text.assemble(("A ", "bold"), answer_text(a), no_wrap=True, overflow="ellipsis")
    return Text("\n", no_wrap=True, overflow="ellipsis").join([q, ans])


def cliff_label(a: Analysis, relative: bool) -> str:
    if a.sweep_same is None:
        return "cliff unknown (not swept)"
    if a.cliff_layer is None:
        return "no cliff"
    rel = f" (K/L {a.cliff_layer / a.num_layers:.3f})" if relative else ""
    return f"cliff {a.cliff_layer}{rel}"


def logp_bottom(c: Comparison) -> float:
    """The bottom of both sides' log p rows: one scale for A and B (the explorer's ladder)."""
    lows = [float(np.nanmin(np.minimum(an.sweep_logprob, 0.0))) for an in (c.a, c.b)
            if an.sweep_same is not None and an.sweep_logprob is not None
            and len(an.sweep_logprob)]
    return logp_scale(min(lows) if lows else 0.0)


def sweep_text(c: Comparison, side: str, width: int, layer: int, logp: bool = False) -> Text:
    """One side's sweep K = 0..L as rows: with `logp` the log p of the baseline answer (one
    scale for both sides, 0 nats at the top), ● same answer as the baseline or ✗ differs, the K
    axis with this side's cliff ▲ and the other side's △ (at the same relative depth), then the
    cliffs in words."""
    a, other = (c.a, c.b) if side == "a" else (c.b, c.a)
    out = Text(no_wrap=True, overflow="crop")
    if a.sweep_same is None:
        out.append("no sweep in this snapshot: cliff unknown", "dim")
        return out
    same = np.asarray(a.sweep_same, dtype=bool)
    n = len(same)
    cw = layer_columns(n, width - LABEL, MAX_COLS)
    if logp:
        bottom = logp_bottom(c)
        lp = np.minimum(np.asarray(a.sweep_logprob, dtype=np.float64), 0.0)
        out.append(f"{'logp':<{LABEL}}", "dim")
        for k, level in enumerate(spark_rows(lp, bottom, 0.0, 1)[0]):
            out.append(BLOCKS[max(1, level)] * cw,
                       Style(color="#3d8fe0", bgcolor="grey30" if k == layer else None))
        out.append(f" 0..{bottom:g}".replace("-", "−"), "dim")
        out.append("\n")
    out.append(f"{'ans':<{LABEL}}", "dim")
    for k in range(n):
        style = Style(color="green" if same[k] else "red", bold=not same[k],
                      bgcolor="grey30" if k == layer else None)
        out.append(("●" if same[k] else "✗").ljust(cw), style)
    out.append("\n")
    out.append(f"{'K':<{LABEL}}", "dim")
    marks: dict[int, str] = {}
    theirs = paired_layer(c, "b" if side == "a" else "a", other.cliff_layer)
    if theirs is not None:
        marks[theirs] = "△"
    if a.cliff_layer is not None:
        marks[a.cliff_layer] = "▲"
    out.append_text(axis_text(n, cw, layer, marks))
    out.append("\n")
    mine = f"▲ {cliff_label(a, c.relative_depth)}"
    other_tag = "B" if side == "a" else "A"
    theirs_text = f"△ {other_tag}'s {cliff_label(other, c.relative_depth)}"
    out.append_text(first_fit([Text(f"{mine} · {theirs_text}", "dim"), Text(mine, "dim")],
                              width))
    return out


def _spark(values: np.ndarray, lo: float, hi: float, width: int, current: int,
           color: str) -> Text:
    """A one-row sparkline of `values` in `width` cells (sampled where there are more values
    than cells), the current value's cell highlighted."""
    n = len(values)
    cols = max(1, min(n, width))
    cw = max(1, width // cols) if n <= width else 1
    idx = [min(n - 1, c * n // cols) for c in range(cols)]
    cur = min(range(cols), key=lambda c: abs(idx[c] - current))
    levels = spark_rows(values[idx], lo, hi, 1)[0]
    out = Text()
    for c, level in enumerate(levels):
        style = Style(color=color, bgcolor="grey30" if c == cur else None, bold=c == cur)
        out.append((BLOCKS[level] if level else "·") * cw, style)
    return out


def shares_text(c: Comparison, index: int, width: int) -> Text:
    """Per group: A's and B's shares over the compared layers as sparklines on one scale, and at
    the compared layer `index` the two shares and A − B."""
    sa = np.array([lc.shares_a for lc in c.layers])
    sb = np.array([lc.shares_b for lc in c.layers])
    lo = float(min(sa.min(), sb.min())) if sa.size else 0.0
    hi = float(max(sa.max(), sb.max())) if sa.size else 1.0
    lc = c.layers[index]
    nums = 27  # " A 0.000 B 0.000 A−B +0.000"
    label = 7
    spark_w = min(max(4, (width - label - nums - 2) // 2), len(c.layers) * MAX_COLS)
    out = Text(no_wrap=True, overflow="crop")
    out.append(f"{'group':<{label}}", "dim")
    out.append(f"{'A':<{spark_w + 1}}{'B':<{spark_w + 1}}", "bold")
    out.append(f"{'A':>7} {'B':>7} {'A−B':>9}", "bold")
    for g, name in enumerate(GROUPS):
        colour = GROUP_COLORS[name]
        out.append("\n")
        out.append(f"{name:<{label}}", Style(color=colour, bold=True))
        for values in (sa[:, g], sb[:, g]):
            spark = _spark(values, lo, hi, spark_w, index, colour)
            spark.append(" " * max(1, spark_w + 1 - spark.cell_len))
            out.append_text(spark)
        d = float(lc.shares_diff[g])
        out.append(f"{lc.shares_a[g]:>7.3f} {lc.shares_b[g]:>7.3f} ", Style(color=colour))
        out.append(f"{signed(d):>9}", Style(color="red" if abs(d) >= 0.05 else colour, bold=True))
    return out


def layer_title(c: Comparison, index: int, width: int) -> str:
    """Which layers are on screen: 'layer 3/7' at the same depth, else both layers and their
    relative depths, 'by relative depth l/L'."""
    lc = c.layers[index]
    if not c.relative_depth:
        return first_fit([Text(f"Shares A vs B · layer {lc.layer_a}/{c.a.num_layers - 1} · "
                               "one scale · A − B"), Text(f"layer {lc.layer_a}")], width).plain
    ra, rb = lc.layer_a / c.a.num_layers, lc.layer_b / c.b.num_layers
    forms = [
        f"Shares · A layer {lc.layer_a}/{c.a.num_layers - 1} ↔ B layer "
        f"{lc.layer_b}/{c.b.num_layers - 1} · by relative depth l/L {ra:.3f} ≈ {rb:.3f}",
        f"A L{lc.layer_a} ↔ B L{lc.layer_b} · by relative depth l/L {ra:.2f}≈{rb:.2f}",
        f"A L{lc.layer_a} ↔ B L{lc.layer_b} · by relative depth l/L",
    ]
    return first_fit([Text(f) for f in forms], width).plain


class SidePanel(Vertical):
    """One side of the comparison: question and answer, its map, its sweep."""

    DEFAULT_CSS = """
    SidePanel { width: 1fr; height: 1fr; }
    SidePanel > .side-info { height: auto; padding: 0 1; }
    SidePanel > CamView { height: 1fr; }
    SidePanel > .side-sweep { height: auto; padding: 0 1; }
    """

    def __init__(self, tag: str, file: str, analysis: Analysis, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tag, self.analysis = tag, analysis
        # Text, not str: a str title is parsed as markup, and file names come from outside.
        self.border_title = Text(f"{tag} · {visible(file)}")

    def compose(self) -> ComposeResult:
        yield TextView(info_text(self.analysis), classes="side-info")
        yield map_view(self.app, classes="side-map")
        yield TextView(classes="side-sweep")

    @property
    def cam_view(self) -> CamView:
        return self.query_one(CamView)

    @property
    def sweep(self) -> TextView:
        return self.query_one(".side-sweep", TextView)
