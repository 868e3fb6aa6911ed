"""The dataset compare screen: several finished runs' accuracy curves under truncation `all`,
one panel each on one K cursor, each run's dataset cliff marked (docs/definitions.md, "Dataset
cliff"). Every number comes from `flowtui.dataset.compare`; this draws it.

`flowtui dataset compare RUN_A RUN_B ...` opens it on a terminal (no model); `--out DIR` writes
the same curves as compare.csv and compare.png, which `e` here writes too.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import cast

import numpy as np
from rich.style import Style
from rich.text import Text
from textual import events, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer

from flowtui.dataset.compare import RunCurve, by_relative_depth
from flowtui.dataset.plots import COLOURS
from flowtui.render.sparkline import spark_rows
from flowtui.textsafe import signed, visible
from flowtui.ui.exports import ExportDone, ExportFailed
from flowtui.ui.jobs import one_line
from flowtui.ui.keys import DATASET_COMPARE_BINDINGS, DATASET_COMPARE_NOTES
from flowtui.ui.screens import HelpScreen, PathPrompt
from flowtui.ui.widgets.answer_panel import first_fit
from flowtui.ui.widgets.flow_panel import axis_text, layer_columns
from flowtui.ui.widgets.text_view import TextView

CSS = """
DatasetCompareScreen { layout: vertical; }
DatasetCompareScreen #dcmp-runs { height: 1fr; }
DatasetCompareScreen .dcmp-run {
    border: round $panel-lighten-2;
    border-title-color: $primary;
    border-title-style: bold;
    border-subtitle-color: $text-muted;
    background: $surface;
    padding: 0 1;
}
DatasetCompareScreen #dcmp-cursor { height: auto; padding: 0 1; }
"""

LABEL = 4  # "acc " before the curve
MAX_COLS = 10  # characters per K at most, so short runs do not stretch into bars
CURVE_ROWS = 3  # rows of the accuracy curve when the terminal has room; 1 at 24 rows


def paired_k(curve: RunCurve, position: float) -> int:
    """The run's K nearest the relative depth `position` (K/L in [0, 1])."""
    return max(0, min(curve.num_layers, round(position * curve.num_layers)))


def curve_columns(curves: list[RunCurve], width: int, relative: bool) -> list[int]:
    """Characters per K for each run. By relative depth every run spans the same width, so one
    column of the screen is about one relative depth K/L in every panel."""
    if not relative:
        return [layer_columns(len(c.accuracy), width - LABEL, MAX_COLS) for c in curves]
    span = min(width - LABEL, MAX_COLS * max(len(c.accuracy) for c in curves))
    return [max(1, span // len(c.accuracy)) for c in curves]


def curve_text(curve: RunCurve, k: int, cw: int, rows: int, colour: str) -> Text:
    """The run's accuracy over K = 0..L on the fixed scale 0..1 (rows tall, `cw` characters per
    K) and the K axis with the cursor highlighted and the dataset cliff ▲."""
    n = len(curve.accuracy)
    out = Text(no_wrap=True, overflow="crop")
    for r, levels in enumerate(spark_rows(np.asarray(curve.accuracy), 0.0, 1.0, rows)):
        label = "acc " if rows == 1 else ("1.0 " if r == 0 else ("0   " if r == rows - 1 else ""))
        out.append(f"{label:<{LABEL}}", "dim")
        for j, level in enumerate(levels):
            out.append(" ▁▂▃▄▅▆▇█"[level] * cw, Style(color=colour,
                                                      bgcolor="grey30" if j == k else None))
        out.append("\n")
    marks = {} if curve.dataset_cliff is None else {curve.dataset_cliff: "▲"}
    out.append(f"{'K':<{LABEL}}", "dim")
    out.append_text(axis_text(n, cw, k, marks))
    return out


def run_summary(curve: RunCurve, relative: bool) -> str:
    cliff = "none" if curve.dataset_cliff is None else f"K={curve.dataset_cliff}" + (
        f" (K/L {curve.relative(curve.dataset_cliff):.2f})" if relative else "")
    # The cliff first: a narrow border cuts the end.
    return (f"▲ cliff {cliff} · baseline {curve.baseline_accuracy:.3f} · {curve.model} · "
            f"L={curve.num_layers} · {curve.samples} samples · {curve.scoring}")


def cursor_text(curves: list[RunCurve], position: float, relative: bool, width: int) -> Text:
    """Each run's accuracy and 95% interval at the cursor: one line per run."""
    out = Text(no_wrap=True, overflow="ellipsis")
    head = (f"cursor K/L {position:.2f} (depths differ: each run at its nearest K)" if relative
            else f"cursor K = {paired_k(curves[0], position)}")
    out.append_text(first_fit([
        Text.assemble((head, "bold"), (" · accuracy, truncation `all` from layer K (K = L: "
                                       "the unmodified model)", "dim")),
        Text.assemble((head, "bold"), (" · accuracy under truncation `all`", "dim")),
        Text(head, "bold")], width))
    out.append("\n")
    for i, c in enumerate(curves):
        k = paired_k(c, position)
        lo, hi = c.ci95[k]
        diff = c.accuracy[k] - c.baseline_accuracy
        forms = [f"{c.run}: K={k} acc {c.accuracy[k]:.3f} [{lo:.3f}, {hi:.3f}] "
                 f"({signed(diff)} vs baseline)", f"{c.run}: K={k} acc {c.accuracy[k]:.3f}"]
        out.append("■ ", COLOURS[i % len(COLOURS)])
        out.append_text(first_fit([Text(f) for f in forms], max(10, width - 2)))
        if i < len(curves) - 1:
            out.append("\n")
    return out


class DatasetCompareScreen(Screen):
    """Runs on one K cursor; `position` is the relative depth K/L of the cursor, so runs of
    different depths follow it at their nearest K."""

    BINDINGS = cast(list[BindingType], DATASET_COMPARE_BINDINGS)
    DEFAULT_CSS = CSS

    def __init__(self, curves: list[RunCurve], delta: float) -> None:
        super().__init__(name="dataset-compare")
        self.curves = curves
        self.delta = delta
        self.relative = by_relative_depth(curves)
        # The deepest run sets the cursor's steps; all start on the unmodified model (K = L).
        self.steps = max(c.num_layers for c in curves)
        self.step = self.steps

    @property
    def position(self) -> float:
        return self.step / self.steps

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dcmp-runs"):
            for i, c in enumerate(self.curves):
                view = TextView(classes="dcmp-run", id=f"dcmp-run-{i}")
                view.border_title = visible(c.run)
                yield view
        yield TextView(id="dcmp-cursor")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._sync()

    def on_resize(self, event: events.Resize) -> None:
        self._sync()

    def _sync(self) -> None:
        width = max(20, self.size.width - 4)
        rows = CURVE_ROWS if self.size.height >= 30 else 1
        columns = curve_columns(self.curves, width, self.relative)
        for i, c in enumerate(self.curves):
            view = self.query_one(f"#dcmp-run-{i}", TextView)
            view.border_subtitle = visible(run_summary(c, self.relative))
            view.set_text(curve_text(c, paired_k(c, self.position), columns[i], rows,
                                     COLOURS[i % len(COLOURS)]))
        self.query_one("#dcmp-cursor", TextView).set_text(
            cursor_text(self.curves, self.position, self.relative, self.size.width - 2))
        self.sub_title = ("depths differ: runs compared by relative depth K/L" if self.relative
                          else f"L = {self.steps}")

    # --- actions ----------------------------------------------------------------------------
    def action_k(self, delta: int) -> None:
        step = max(0, min(self.steps, self.step + delta))
        if step != self.step:
            self.step = step
            self._sync()

    def action_k_edge(self, last: int) -> None:
        self.step = self.steps if last else 0
        self._sync()

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(DATASET_COMPARE_BINDINGS, DATASET_COMPARE_NOTES))

    async def action_quit(self) -> None:
        await self.app.action_quit()

    def key_commands(self) -> Iterable[SystemCommand]:
        """The palette's entries: every key but quit."""
        for b in DATASET_COMPARE_BINDINGS:
            if b.id != "dataset-compare.quit":
                yield SystemCommand(b.description, f"{b.key_display or b.key} · {b.tooltip}",
                                    partial(self.app.run_action, b.action, self))

    def action_export(self) -> None:
        self.app.push_screen(PathPrompt("Write compare.csv and compare.png into the folder",
                                        "compare"), self._export_to)

    def _export_to(self, folder: str | None) -> None:
        if folder:
            self._export_worker(folder)

    @work(thread=True, exit_on_error=False, group="export")
    def _export_worker(self, folder: str) -> None:
        from flowtui.dataset.compare import write_compare

        try:
            written = write_compare(self.curves, folder)
            self.post_message(ExportDone("the curves", " and ".join(map(str, written))))
        except Exception as exc:  # noqa: BLE001 - any failure is one notification
            self.post_message(ExportFailed(one_line(exc)))

    def on_export_done(self, message: ExportDone) -> None:
        self.app.notify(f"saved {message.what} to {message.path}", timeout=5)

    def on_export_failed(self, message: ExportFailed) -> None:
        self.app.notify(message.reason, title="export failed", severity="error", timeout=10)
