"""Status line: what the engine is doing, and where the view is."""

from __future__ import annotations

from rich.text import Text

from flowtui.engine.analysis import Progress
from flowtui.textsafe import visible
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


class StatusLine(TextView):
    DEFAULT_CSS = """
    StatusLine { height: 1; padding: 0 1; background: $panel; color: $foreground; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.activity = "starting…"
        self.kind = "busy"  # busy | ready | error
        self.where = ""

    def set_activity(self, text: str, kind: str = "busy") -> None:
        # Activities quote file names, model names and errors: drawn with escapes made visible.
        self.activity, self.kind = visible(text), kind
        self._redraw()

    def set_where(self, text: str) -> None:
        self.where = visible(text)
        self._redraw()

    def _redraw(self) -> None:
        dot = {"busy": ("●", "bold yellow"), "ready": ("●", "bold green"), "error": ("●", "bold red")}[self.kind]
        left = Text.assemble(dot, " ", (self.activity, "bold" if self.kind != "ready" else ""))
        right = Text(self.where, style="dim")
        width = max(0, self.content_region.width or self.size.width)
        gap = width - left.cell_len - right.cell_len
        if gap >= 2:
            left.append(" " * gap)
            left.append_text(right)
        left.truncate(max(1, width), overflow="ellipsis")
        self.set_text(left)

    def on_resize(self) -> None:
        self._redraw()
