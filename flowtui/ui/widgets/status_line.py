"""Status line: what the engine is doing, and where the view is."""

from __future__ import annotations

from rich.text import Text

from flowtui.engine.analysis import Analysis, Progress
from flowtui.render.terminal import Graphics
from flowtui.textsafe import visible
from flowtui.ui.state import ViewState
from flowtui.ui.widgets.text_view import TextView

STAGE_LABELS = {
    "importing": "importing",
    "loading": "loading model",
    "generating": "generating",
    "capturing": "capturing attention",
    "cam": "computing CAM",
    "checking": "self-checking",
    "truncating": "truncating",
    "sweep": "sweep",
}


def progress_text(p: Progress) -> str:
    label = STAGE_LABELS.get(p.stage, p.stage)
    if p.stage == "sweep" and p.total:
        return f"{label} K {min(p.done, p.total - 1)}/{p.total - 1}"
    if p.total:
        label += f" {p.done}/{p.total}"
    if p.message:
        label += f" · {p.message}"
    return label + "…"


def where_text(
    a: Analysis | None, v: ViewState, host: str | None = None, disconnected: bool = False
) -> str:
    """The right side: where the view is (layer, view, map settings) and where the model runs
    when that is not this process (a remote engine)."""
    if a is None:
        return ""
    parts = [f"layer {v.layer}/{a.num_layers - 1}"]
    if len(a.views) > 1:
        parts.append(f"{a.views[v.view]} {v.view + 1}/{len(a.views)}")
    if v.map_mode == "cam":
        parts.append(f"thr {v.threshold:.2f}")
    else:
        parts.append("attention, sinks excluded" if v.exclude_sinks else "attention")
    where = " · ".join([*parts, v.colormap, v.mode])
    if host:
        where += f" · model on {host}" + (" (disconnected: r reconnects)" if disconnected else "")
    return where


def pixels_label(graphics: Graphics, style: str = "regions") -> str:
    """How the map is drawn, for the status line: 'kitty pixels', 'sixel pixels, smooth',
    'half-blocks', or 'half-blocks (no answer)' after a probe the terminal never answered (tmux
    without passthrough is said once at start: the app notifies)."""
    if graphics.pixels:
        return f"{graphics.protocol} pixels" + (", smooth" if style == "smooth" else "")
    return "half-blocks (no answer)" if "no answer" in graphics.reason else "half-blocks"


def ready_text(a: Analysis | None, what: str = "ready") -> str:
    """The status line at rest: `what`, and the analysis' notes (how the image was read, what
    the model could not take in) in short; the answer panel lists them all."""
    notes = a.notes if a is not None else []
    failed = a.failed_checks if a is not None else []
    if failed:
        return f"{what} · ✗ self-check failed: {failed[0].name}"
    if not notes:
        return what
    more = f" (+{len(notes) - 1} more)" if len(notes) > 1 else ""
    return f"{what} · ⚠ {notes[0]}{more}"


class StatusLine(TextView):
    DEFAULT_CSS = """
    StatusLine { height: 1; padding: 0 1; background: $panel; color: $foreground; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.activity = "starting…"
        self.kind = "busy"  # busy | ready | error
        self.where = ""
        self.where_short: str | None = None

    def set_activity(self, text: str, kind: str = "busy") -> None:
        # Activities quote file names, model names and errors: drawn with escapes made visible.
        self.activity, self.kind = visible(text), kind
        self._redraw()

    def set_where(self, text: str, short: str | None = None) -> None:
        """`short`: the same without what may go first when the line is full (how the map is
        drawn), so the layer and the model's host still show."""
        self.where = visible(text)
        self.where_short = visible(short) if short is not None else None
        self._redraw()

    def _redraw(self) -> None:
        dot = {"busy": ("●", "bold yellow"), "ready": ("●", "bold green"), "error": ("●", "bold red")}[self.kind]
        left = Text.assemble(dot, " ", (self.activity, "bold" if self.kind != "ready" else ""))
        right = Text(self.where, style="dim")
        width = max(0, self.content_region.width or self.size.width)
        gap = width - left.cell_len - right.cell_len
        if gap < 2 and self.where_short is not None:
            right = Text(self.where_short, style="dim")
            gap = width - left.cell_len - right.cell_len
        if gap >= 2:
            left.append(" " * gap)
            left.append_text(right)
        left.truncate(max(1, width), overflow="ellipsis")
        self.set_text(left)

    def on_resize(self) -> None:
        self._redraw()
