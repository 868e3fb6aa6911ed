"""Flow panel: one sparkline per token group across all layers (shared scale), the current
layer marked with its four shares, and an optional per-head heat table of that layer."""

from __future__ import annotations

import numpy as np
from rich.style import Style
from rich.text import Text
from textual.reactive import var
from textual.widget import Widget

from flowtui.engine.analysis import GROUPS, Analysis
from flowtui.render.colormaps import apply_colormap
from flowtui.render.sparkline import BLOCKS, spark_rows
from flowtui.ui.state import ViewState, focused, has_token_cursor
from flowtui.ui.widgets.answer_panel import token_label

# Fixed mid-luminance hues that read on dark and light themes alike.
GROUP_COLORS = {"system": "#9a9996", "image": "#e5a50a", "user": "#3d8fe0", "output": "#2ec27e"}
LABEL_WIDTH = 7
VALUE_WIDTH = 7


def layer_columns(num: int, width: int, max_cols: int | None = None) -> int:
    """Characters per layer so `num` layers fill `width` (at least 1; at most `max_cols` if
    given): a wide panel gets wide columns rather than an empty right side."""
    cols = width // max(1, num)
    return max(1, cols if max_cols is None else min(max_cols, cols))


def axis_text(num: int, cw: int, current: int, marks: dict[int, str] | None = None) -> Text:
    """Layer numbers under a sparkline row: ticks every few layers and the current layer."""
    line = [" "] * (num * cw)
    step = max(1, int(np.ceil(6 / cw)))
    for k in range(0, num, step):
        label = str(k)
        if k * cw + len(label) <= len(line) and all(c == " " for c in line[k * cw : k * cw + len(label)]):
            line[k * cw : k * cw + len(label)] = list(label)
    text = Text("".join(line), style="dim")
    if 0 <= current < num:
        text.stylize(Style(reverse=True, bold=True), current * cw, current * cw + cw)
    for k, ch in (marks or {}).items():
        if 0 <= k < num:
            # Wide columns keep their layer number beside the mark.
            cell = f"{k}{ch}" if cw > len(str(k)) else ch.center(cw)
            text = text[: k * cw] + Text(cell.ljust(cw), "bold red") + text[k * cw + cw :]
    return text


def spark_text(values: np.ndarray, lo: float, hi: float, cw: int, color: str, current: int, height: int = 1) -> list[Text]:
    """The sparkline rows (top first); the current layer's column gets a highlight."""
    lines = []
    for r, levels in enumerate(spark_rows(values, lo, hi, height)):
        text = Text()
        bottom = r == height - 1
        for k, level in enumerate(levels):
            style = Style(color=color, bgcolor="grey30" if k == current else None, bold=k == current)
            if level:
                text.append(BLOCKS[level] * cw, style)
            else:
                text.append(("·" if bottom else " ").ljust(cw), style)
        lines.append(text)
    return lines


def per_token_shares(a: Analysis) -> np.ndarray:
    """Each group's share divided by its number of tokens ([L, 4]; an empty group gives 0)."""
    sizes = a.group_sizes().astype(np.float64)
    return np.where(sizes > 0, a.shares / np.maximum(sizes, 1), 0.0)


class FlowPanel(Widget):
    """Attention shares per group and layer."""

    DEFAULT_CSS = """
    FlowPanel { height: auto; padding: 0 1; }
    """

    # Bound to the explorer's state (data_bind).
    analysis: var[Analysis | None] = var(None, always_update=True, init=False)
    view: var[ViewState] = var(ViewState, init=False)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.border_title = "Flow · attention shares"

    def watch_analysis(self, old: Analysis | None, analysis: Analysis | None) -> None:
        if analysis is not None:
            # A new analysis may have another number of groups' rows; an edit (the sweep's
            # cliff) only repaints.
            self.refresh(layout=analysis is not old)

    def watch_view(self, old: ViewState, view: ViewState) -> None:
        self.refresh(layout=view.show_heads != old.show_heads)

    def _title(self) -> None:
        """The title names the answer token shown (docs/definitions.md, "Per-token
        quantities"), where one is chosen."""
        a, token = self.analysis, self.view.answer_token
        title = "Flow · attention shares"
        if token is not None and has_token_cursor(a):
            title = f"{title} · {token_label(a, token)}"
        if self.border_title != title:
            self.border_title = title

    def spark_height(self) -> int:
        """Taller sparklines when the terminal has the rows for them."""
        h = self.app.size.height
        return 3 if h >= 50 else 2 if h >= 36 else 1

    def render(self) -> Text:
        if self.analysis is None:
            return Text("waiting for the analysis…", style="dim")
        self._title()
        a = focused(self.analysis, self.view.answer_token)
        width = max(10, self.content_region.width or self.size.width)
        L, layer = a.num_layers, self.view.layer
        values = per_token_shares(a) if self.view.per_token else a.shares
        vw = VALUE_WIDTH + (2 if self.view.per_token else 0)
        fmt = ".1e" if self.view.per_token else ".3f"
        cw = layer_columns(L, width - LABEL_WIDTH - vw)
        # One scale for all groups (min..max over every group and layer), so heights compare.
        lo = float(np.min(values)) if values.size else 0.0
        hi = float(np.max(values)) if values.size else 1.0
        out = Text(no_wrap=True, overflow="crop")
        out.append(f"{'layer':<{LABEL_WIDTH}}", "dim")
        marks = {a.cliff_layer: "▲"} if a.cliff_layer is not None and a.cliff_layer < L else {}
        out.append_text(axis_text(L, cw, layer, marks))
        out.append(f" {'L' + str(layer):>{vw - 1}}", "bold")
        rows = self.spark_height()
        for g, name in enumerate(GROUPS):
            color = GROUP_COLORS[name]
            lines = spark_text(values[:, g], lo, hi, cw, color, layer, rows)
            for r, line in enumerate(lines):
                bottom = r == len(lines) - 1
                out.append("\n")
                out.append(f"{name if bottom else '':<{LABEL_WIDTH}}", Style(color=color, bold=True))
                out.append_text(line)
                if bottom:
                    out.append(f" {values[layer, g]:>{vw - 1}{fmt}}", Style(color=color, bold=True))
        out.append("\n")
        # The longest form of the scale line that fits one line (the cliff kept to the last).
        cliff = f" · ▲ cliff {a.cliff_layer}" if a.cliff_layer is not None else ""
        if self.view.per_token:
            scale = f"scale {lo:.1e}–{hi:.1e}"
            notes = [f"per token (share ÷ group size) · {scale} shared{cliff}",
                     f"per token · {scale} shared{cliff}", f"per token · {scale}{cliff}"]
        else:
            scale = f"scale {lo:.2f}–{hi:.2f}"
            total = f" · Σ={a.shares[layer].sum():.3f}"
            notes = [f"{scale} shared{total}{cliff}", f"{scale}{total}{cliff}", f"{scale}{cliff}"]
        out.append(next((n for n in notes if len(n) <= width), notes[-1]), "dim")
        if self.view.show_heads:
            out.append("\n")
            out.append_text(self._heads(a, layer, width))
        return out

    def _heads(self, a: Analysis, layer: int, width: int) -> Text:
        """Heat table: a row per group, a cell per head, coloured by head_share (viridis, 0–1)."""
        H = a.num_heads
        hw = 2 if H * 2 <= width - LABEL_WIDTH else 1
        shown = min(H, (width - LABEL_WIDTH) // hw)
        hs = a.head_shares[layer]
        colors = apply_colormap(hs, "viridis")
        out = Text(no_wrap=True, overflow="crop")
        out.append(f"heads @ layer {layer} (viridis 0–1)", "bold")
        if shown < H:
            out.append(f"  first {shown} of {H}", "dim")
        out.append("\n")
        out.append(f"{'head':<{LABEL_WIDTH}}", "dim")
        for h in range(shown):
            out.append(f"{h:<{hw}}"[:hw] if h % (4 if hw == 1 else 2) == 0 else " " * hw, "dim")
        for g, name in enumerate(GROUPS):
            out.append("\n")
            out.append(f"{name:<{LABEL_WIDTH}}", Style(color=GROUP_COLORS[name], bold=True))
            for h in range(shown):
                r, gg, b = (int(c) for c in colors[h, g])
                out.append(" " * hw, Style(bgcolor=f"rgb({r},{gg},{b})"))
        top = np.unravel_index(int(np.argmax(hs[:, 1])), (H,))[0]
        out.append("\n")
        out.append(f"most image-bound head: {top} ({hs[top, 1]:.2f})", "dim")
        return out
