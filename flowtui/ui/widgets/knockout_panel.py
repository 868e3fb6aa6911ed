"""The knockout view: one curve per flow over layers, the relative change of the answer's
first-token probability when the flow is knocked out in the window centred on each layer
(docs/definitions.md, "Knockout positions and flows"), on one fixed printed scale."""

from __future__ import annotations

import numpy as np
from rich.style import Style
from rich.text import Text
from textual.reactive import var
from textual.widget import Widget

from flowtui.engine.analysis import Analysis
from flowtui.engine.knockout_flows import STANDARD_FLOWS, KnockoutResult, default_window
from flowtui.render.sparkline import BLOCKS, spark_levels
from flowtui.ui.state import Rerun, ViewState
from flowtui.ui.widgets.answer_panel import first_fit
from flowtui.ui.widgets.flow_panel import axis_text, layer_columns

FLOW_STYLES = ("#4c9be8", "#f08c3a", "#5cc46e", "#c77dde", "#e8596b", "#d4c94a")
# Fixed scale: a bar's height is the drop of p, 0 (nothing) to −100% (gone); a rise shows as
# "+" so the one printed scale holds for every analysis.
SCALE = 100.0
VALUE_WIDTH = 8


def _label_width(names: list[str], width: int) -> int:
    return max(6, min(max(len(n) for n in names) + 1, width // 3))


def knockout_text(k: KnockoutResult, width: int, current: int) -> Text:
    """Every flow's curve over layers (or, for one layer range, its value), the current layer
    highlighted and its value printed, the scale and baseline under them."""
    out = Text(no_wrap=True, overflow="crop")
    lw = _label_width(k.flows, width)
    if k.is_sweep:
        n = k.rel_change.shape[1]
        cw = layer_columns(n, width - lw - VALUE_WIDTH, 3)
        for f, name in enumerate(k.flows):
            rel = k.rel_change[f].astype(np.float64)
            color = FLOW_STYLES[f % len(FLOW_STYLES)]
            out.append(name[: lw - 1].ljust(lw), Style(color=color, bold=True))
            drop = np.clip(-rel, 0, SCALE)
            # Under half a percent is no drop at all on this scale: shown as "·", not a sliver.
            levels = np.where(drop < 0.5, 0, spark_levels(drop, 0.0, SCALE))
            for c, level in enumerate(levels):
                style = Style(color=color, bgcolor="grey30" if c == current else None)
                cell = BLOCKS[level] if level else ("+" if rel[c] > 0.5 else "·")
                out.append(cell * cw if level else cell.ljust(cw), style)
            here = rel[min(current, n - 1)]
            out.append(f"{here:+7.1f}%".replace("-", "−"), "bold red" if here < -50 else "")
            out.append("\n")
        out.append(" " * lw)
        out.append_text(axis_text(n, cw, current))
        out.append("\n")
        lo, hi = (int(x) for x in _window_at(current, k.window or 1, n))
        out.append(f"window of {k.window} at layer {current}: layers {lo}..{hi}", "dim")
    else:
        a, b = k.layers  # type: ignore[misc]
        out.append(f"layers {a}..{b - 1}\n", "bold")
        for f, name in enumerate(k.flows):
            out.append(name[: lw - 1].ljust(lw), Style(color=FLOW_STYLES[f % 6], bold=True))
            out.append(f"{k.rel_change[f, 0]:+7.1f}%".replace("-", "−"))
            out.append(f"  log p {k.logprob[f, 0]:+.2f}\n".replace("-", "−"), "dim")
    out.append("\n")
    p0 = f"baseline p {k.baseline_first_prob:.3f}"
    out.append_text(first_fit([
        Text(f"bars: drop of p(first answer token), scale 0 to −{SCALE:g}% (fixed) · + rise · "
             f"{p0}", "dim"),
        Text(f"bars: drop of p, 0 to −{SCALE:g}% (fixed) · {p0}", "dim"),
        Text(f"0 to −{SCALE:g}% (fixed) · {p0}", "dim"),
    ], width))
    return out


def _window_at(center: int, width: int, n: int) -> tuple[int, int]:
    from flowtui.engine.knockout_flows import window_layers

    lo, hi = window_layers(center, width, n)
    return lo, hi - 1


class KnockoutPanel(Widget):
    """Attention knockout per flow and layer window (K shows it, and runs it if needed)."""

    DEFAULT_CSS = """
    KnockoutPanel {
        height: auto; padding: 0 1; display: none;
        border: round $panel-lighten-2; border-title-color: $primary; border-title-style: bold;
        border-subtitle-color: $text-muted; background: $surface;
    }
    """

    analysis: var[Analysis | None] = var(None, always_update=True, init=False)
    view: var[ViewState] = var(ViewState, init=False)
    rerun: var[Rerun | None] = var(None, init=False)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.border_title = "Knockout · relative change of p"
        self.border_subtitle = "K hide · x cancel"

    def watch_analysis(self) -> None:
        self.refresh(layout=True)

    def watch_view(self, old: ViewState, view: ViewState) -> None:
        self.refresh(layout=view.knockout != old.knockout)

    def watch_rerun(self) -> None:
        self.refresh(layout=True)

    def render(self) -> Text:
        a = self.analysis
        if a is None:
            return Text("waiting for the analysis…", style="dim")
        width = max(20, self.content_region.width or self.size.width)
        r = self.rerun
        if r is not None and r.task == "knockout":
            done = f"{r.done}/{r.total} windows" if r.total else "starting"
            return Text(f"knocking out {', '.join(STANDARD_FLOWS)} … {done} · x cancels",
                        style="dim")
        if a.knockout is None:
            return Text(f"no knockout yet: K runs {', '.join(STANDARD_FLOWS)} in windows of "
                        f"{default_window(a.num_layers)} layers", style="dim")
        return knockout_text(a.knockout, width, min(self.view.layer, a.num_layers - 1))
