"""The explorer screen: the image, flow, answer and truncation panels over one analysis.

The screen holds what is shown as reactive state: `analysis` and `view` (layer, map, view,
threshold, …). The panels are bound to it (data_bind) and redraw themselves when it changes; an
edit of the analysis in place (a sweep, a run) is announced with mutate_reactive. Engine work
goes through the app's one job owner (`app.jobs`), which reports back here with messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from textual import events, work
from textual.actions import parse as parse_action
from textual.app import ComposeResult, SystemCommand
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import var
from textual.widgets import Footer
from textual.worker import Worker

from flowtui.engine.analysis import Analysis
from flowtui.engine.errors import InputError
from flowtui.render.cells import DISPLAY_MODES
from flowtui.render.colormaps import next_colormap
from flowtui.render.maps import LENS_MODES
from flowtui.textsafe import visible
from flowtui.ui.ask import AskActions
from flowtui.ui.exports import ExportActions, ExportFailed, default_stem
from flowtui.ui.jobs import EngineJobs, report_worker_error
from flowtui.ui.keys import HELP_NOTES, KEY_BINDINGS
from flowtui.ui.knockout_actions import KnockoutActions
from flowtui.ui.lens_actions import LensActions
from flowtui.ui.messages import (
    AnalysisReady,
    EngineProgress,
    EngineReady,
    SweepDone,
    TruncationDone,
    TruncationToken,
    WorkFailed,
    WorkFinished,
)
from flowtui.ui.pin import PinActions
from flowtui.ui.screens import HelpScreen
from flowtui.ui.state import THRESHOLD_STEP, Rerun, ViewState, has_token_cursor
from flowtui.ui.token_actions import TokenActions
from flowtui.ui.widgets.answer_panel import AnswerPanel
from flowtui.ui.widgets.flow_panel import FlowPanel
from flowtui.ui.widgets.image_panel import ImagePanel
from flowtui.ui.widgets.knockout_panel import KnockoutPanel
from flowtui.ui.widgets.status_line import (
    StatusLine,
    pixels_label,
    progress_text,
    ready_text,
    where_text,
)
from flowtui.ui.widgets.truncation_panel import TruncationPanel

if TYPE_CHECKING:
    from flowtui.ui.app import FlowtuiApp


class ExplorerScreen(ExportActions, PinActions, LensActions, AskActions, TokenActions,
                     KnockoutActions):
    """One analysis, explored. Live: `image` + `question` are analysed on mount. Open: the
    `analysis` given (from a snapshot) is shown at once."""

    # cast: lists are invariant, though every Binding is a BindingType
    BINDINGS = cast(list[BindingType], KEY_BINDINGS)
    # Size classes for app.tcss, set by Textual on every resize: -narrow below 100 columns,
    # -short below 30 rows.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (30, "-tall")]

    # What is shown; the panels are bound to these.
    analysis: var[Analysis | None] = var(None, always_update=True, init=False)
    view: var[ViewState] = var(ViewState, init=False)
    # The truncation or sweep running for this screen (None: none).
    rerun: var[Rerun | None] = var(None, init=False)

    @dataclass
    class ImagePreview(Message):
        """The input image, decoded before the model is ready, so the panel is not empty."""

        image: np.ndarray

    def __init__(
        self,
        *,
        analysis: Analysis | None = None,
        image: str | None = None,
        question: str | None = None,
        max_new_tokens: int = 32,
        snapshot_path: str | None = None,
    ) -> None:
        super().__init__(name="explorer")
        self._initial_analysis = analysis
        self.image_path = image
        self.question = question
        self.max_new_tokens = max_new_tokens
        self.snapshot_path = snapshot_path
        self.stem = default_stem(image, snapshot_path)
        self.set_reactive(
            ExplorerScreen.view,
            ViewState(threshold=analysis.cam_settings.threshold if analysis else 0.5),
        )
        self._failed: WorkFailed | None = None  # the last job's failure, until it finishes
        self._applicable: tuple = ()  # what check_action depends on, when bindings last refreshed
        self._prepare: Callable[[Analysis], None] | None = None  # for the analysis on its way

    @property
    def jobs(self) -> EngineJobs:
        return cast("FlowtuiApp", self.app).jobs

    # --- layout ---------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        state = (ExplorerScreen.analysis, ExplorerScreen.view)
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield ImagePanel(id="image-panel").data_bind(*state)
                yield AnswerPanel(id="answer-panel").data_bind(*state)
            with Vertical(id="right"):
                yield FlowPanel(id="flow-panel").data_bind(*state)
                yield KnockoutPanel(id="knockout-panel").data_bind(*state, ExplorerScreen.rerun)
                yield TruncationPanel(id="truncation-panel").data_bind(
                    *state, ExplorerScreen.rerun
                )
        yield StatusLine(id="status")
        yield Footer(compact=True)

    @property
    def image_panel(self) -> ImagePanel:
        return self.query_one(ImagePanel)

    @property
    def flow_panel(self) -> FlowPanel:
        return self.query_one(FlowPanel)

    @property
    def answer_panel(self) -> AnswerPanel:
        return self.query_one(AnswerPanel)

    @property
    def truncation_panel(self) -> TruncationPanel:
        return self.query_one(TruncationPanel)

    @property
    def status(self) -> StatusLine:
        return self.query_one(StatusLine)

    def on_mount(self) -> None:
        if self._initial_analysis is not None:
            self.show_analysis(self._initial_analysis)
            self.set_activity(
                self._ready_text(
                    f"opened {Path(self.snapshot_path).name}" if self.snapshot_path else "ready"
                ),
                "ready",
            )
            if self.jobs.engine_factory is None:
                self.allow_reruns(
                    False,
                    "Truncation needs a model: this snapshot was opened without one. "
                    "Reopen with `flowtui open FILE --model M` to rerun.",
                )
        elif self.jobs.engine_factory is not None and self.image_path is not None:
            # The image and a progress line come first; the engine worker's first act is the
            # heavy import (torch, transformers), never on the path to this first frame.
            self.answer_panel.set_pending(self.question, "loading model…")
            self.image_panel.set_message("loading model…")
            self.set_activity("loading model…")
            self._preview_worker(self.image_path)
            self.jobs.analyze(self.image_path, self.question or "", self.max_new_tokens, to=self)
        else:
            self.image_panel.set_message("nothing to show: give an image and a question")
            self.set_activity("idle", "ready")

    def on_resize(self, event: events.Resize) -> None:
        # Ctrl+P still opens the palette (and ? lists it): its footer entry costs the room
        # the explorer's own keys need at 80 columns.
        wide = event.size.width >= 100
        for footer in self.query(Footer):
            if footer.show_command_palette != wide:
                footer.show_command_palette = wide

    # --- what others may ask of the explorer (the app, the dataset screen) ------------------
    def show_analysis(self, analysis: Analysis) -> None:
        """Show `analysis`, keeping the layer, view and map where they still apply."""
        self.analysis = analysis
        self._set_view(
            layer=min(self.view.layer, analysis.num_layers - 1),
            threshold=float(analysis.cam_settings.threshold),
            view=self.view.view if self.view.view < len(analysis.views) else 0,
            map_mode=self.view.map_mode if analysis.attention_tokens is not None and (
                analysis.lens is not None or self.view.map_mode not in LENS_MODES) else "cam",
            answer_token=None,  # a new answer: the panels show all of it first
        )
        if analysis.notes:
            # In full once, whatever the terminal's size; the panel and status line keep them.
            self.app.notify("\n".join(analysis.notes), title="note", severity="warning",
                            timeout=8)
        if analysis.failed_checks:
            # The numbers may be wrong: said loudly, and kept in the answer panel.
            self.app.notify("\n".join(visible(c.describe()) for c in analysis.failed_checks),
                            title="self-check failed: these numbers may be wrong",
                            severity="error", timeout=20)
        self.compare_with_pinned(analysis)

    def analyze(
        self,
        image: Any,
        question: str,
        *,
        label: str = "analysing…",
        prepare: Callable[[Analysis], None] | None = None,
    ) -> bool:
        """Analyse `image` + `question` with the model and show the result; `prepare` sees the
        new analysis first. False (with a note) when the model is busy."""
        if self.jobs.busy is not None:
            self.jobs.refuse_if_busy()
            return False
        self._prepare = prepare
        self.analysis = None  # progress shows in the panels until the new analysis is ready
        self.question = question
        self.image_path = image if isinstance(image, str) else None
        self.answer_panel.set_pending(question, "analysing…")
        self.image_panel.set_message(label)
        return self.jobs.analyze(image, question, self.max_new_tokens, to=self)

    def set_activity(self, text: str, kind: str = "busy") -> None:
        self.status.set_activity(text, kind)

    def allow_reruns(self, enabled: bool, reason: str = "") -> None:
        """Whether truncations and sweeps can run here, and why not."""
        self.truncation_panel.set_enabled(enabled, reason)

    # --- state ------------------------------------------------------------------------------
    def _set_view(self, **changes: Any) -> None:
        self.view = replace(self.view, **changes)

    def watch_analysis(self) -> None:
        self._state_changed()

    def watch_view(self, old: ViewState, new: ViewState) -> None:
        if old.knockout != new.knockout:  # not on every layer step: only K swaps the panels
            self.show_knockout_panel(new.knockout)
        self._state_changed()

    def _state_changed(self) -> None:
        self._update_where()
        # The footer shows only the keys that apply (check_action); it recomposes on every
        # refresh, so refresh only when that set changes, not on every layer step.
        a = self.analysis
        applicable = (self.view.map_mode, a is not None and len(a.views), has_token_cursor(a))
        if applicable != self._applicable:
            self._applicable = applicable
            self.refresh_bindings()

    def _update_where(self) -> None:
        host = self.jobs.location
        where = short = where_text(self.analysis, self.view, host, self.jobs.disconnected)
        graphics = getattr(self.app, "graphics", None)
        if where and graphics is not None:  # how the map is drawn (render/terminal.py)
            where += f" · {pixels_label(graphics, getattr(self.app, 'map_style', 'regions'))}"
        self.status.set_where(where, short)

    def _ready_text(self, what: str = "ready") -> str:
        return ready_text(self.analysis, what)

    # --- actions ---------------------------------------------------------------------------
    def action_layer(self, delta: int) -> None:
        if self.analysis is not None:
            layer = max(0, min(self.analysis.num_layers - 1, self.view.layer + delta))
            if layer != self.view.layer:
                self._set_view(layer=layer)

    def action_layer_edge(self, last: int) -> None:
        if self.analysis is not None:
            self._set_view(layer=self.analysis.num_layers - 1 if last else 0)

    def action_threshold(self, direction: int) -> None:
        thr = round(min(0.95, max(0.0, self.view.threshold + direction * THRESHOLD_STEP)), 2)
        if self.analysis is not None:
            self.analysis.cam_settings.threshold = thr  # exported with the snapshot
        self._set_view(threshold=thr)

    def action_cycle_colormap(self) -> None:
        self._set_view(colormap=next_colormap(self.view.colormap))

    def action_cycle_mode(self) -> None:
        i = DISPLAY_MODES.index(self.view.mode)
        self._set_view(mode=DISPLAY_MODES[(i + 1) % len(DISPLAY_MODES)])

    def action_cycle_view(self) -> None:
        if self.analysis is not None and len(self.analysis.views) > 1:
            self._set_view(view=(self.view.view + 1) % len(self.analysis.views))

    def action_cycle_map(self) -> None:
        if self.analysis is None:
            return
        if self.analysis.attention_tokens is None:
            self.app.notify(
                "this analysis has no attention map (snapshots before version 2 store only "
                "the CAM); re-analyze to get it",
                severity="warning",
            )
            return
        self._set_view(map_mode=self.next_map())

    def action_toggle_sinks(self) -> None:
        self._set_view(exclude_sinks=not self.view.exclude_sinks)

    def action_toggle_map_style(self) -> None:
        """Regions <-> smooth at real pixels (render/overlay.py); half-blocks have one style."""
        app = cast("FlowtuiApp", self.app)
        if app.graphics is None or not app.graphics.pixels:
            return
        style = "smooth" if app.map_style == "regions" else "regions"
        app.map_style = style
        self.image_panel.set_map_style(style)
        self._update_where()

    def action_toggle_heads(self) -> None:
        self._set_view(show_heads=not self.view.show_heads)

    def action_toggle_per_token(self) -> None:
        self._set_view(per_token=not self.view.per_token)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # False hides a key from the footer and the palette and makes it inert: only the keys
        # that do something for this analysis and map are offered.
        if action == "cycle_view":
            return self.analysis is not None and len(self.analysis.views) > 1
        if action == "toggle_map_style":
            graphics = getattr(self.app, "graphics", None)
            return graphics is not None and graphics.pixels
        if action == "toggle_sinks":
            return self.view.map_mode == "attention"
        if action == "threshold":
            return self.view.map_mode == "cam"
        if action in ("answer_token", "whole_answer"):
            return has_token_cursor(self.analysis)
        if action == "reconnect":  # only a remote engine (--remote) has a connection
            return self.jobs.remote
        return True

    def key_commands(self) -> Iterable[SystemCommand]:
        """The palette's entries for this screen: every key that applies now, but quit."""
        for b in KEY_BINDINGS:
            _, name, params = parse_action(b.action)
            if b.id != "app.quit" and self.check_action(name, params) is not False:
                key = b.key_display or b.key
                yield SystemCommand(
                    b.description,
                    f"{key} · {b.tooltip}",
                    partial(self.app.run_action, b.action, self),
                )

    def action_focus_truncation(self) -> None:
        self.query_one("#trunc-k").focus()

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(KEY_BINDINGS, HELP_NOTES))

    async def action_quit(self) -> None:
        await self.app.action_quit()

    def action_reconnect(self) -> None:
        self.jobs.reconnect(to=self)

    def action_cancel(self) -> None:
        if self.jobs.cancel():
            self.set_activity(f"cancelling {self.jobs.busy}…")

    # --- reruns ------------------------------------------------------------------------------
    def _can_rerun(self) -> bool:
        if self.analysis is None:
            self.app.notify("no analysis yet", severity="warning")
            return False
        if not self.jobs.can_load:
            self.app.notify(
                "truncation needs a model: reopen with `flowtui open FILE --model M`",
                severity="warning",
            )
            return False
        return True

    def on_truncation_panel_requested(self, message: TruncationPanel.Requested) -> None:
        message.stop()
        if self._can_rerun() and self.analysis is not None and self.jobs.truncate(
            self.analysis, message.layer, message.strategy, message.keep, to=self
        ):
            self.rerun = Rerun("truncation", message.layer, message.strategy, message.keep)

    def action_sweep(self) -> None:
        if self._can_rerun() and self.analysis is not None and self.jobs.sweep(
                self.analysis, to=self):
            self.rerun = Rerun("sweep", total=self.analysis.num_layers + 1)

    @work(thread=True, exit_on_error=False, group="preview")
    def _preview_worker(self, image: str) -> None:
        try:
            from flowtui.engine.images import open_bounded, regular_file, to_rgb

            # The engine's checks and conversion (no FIFO opened, EXIF applied, 16-bit scaled),
            # so the preview is the image the analysis will show.
            regular_file(Path(image), "image", InputError)
            with open_bounded(image, image, InputError) as im:
                im.thumbnail((512, 512))
                rgb, _ = to_rgb(im)
            self.post_message(self.ImagePreview(np.asarray(rgb)))
        except Exception:  # noqa: BLE001 - the engine reports bad images properly
            pass

    # --- what the jobs report (main thread) --------------------------------------------------
    def on_engine_progress(self, message: EngineProgress) -> None:
        p = message.progress
        self.set_activity(progress_text(p))
        if message.task == "sweep" and p.stage == "sweep" and self.rerun is not None:
            self.rerun = replace(self.rerun, done=p.done, total=p.total)
        if message.task == "knockout" and p.stage == "knockout":
            self.knockout_progress(p.done, p.total)
        if message.task == "analysis" and self.analysis is None:
            self.image_panel.set_message(progress_text(p))
            self.answer_panel.set_pending(self.question, progress_text(p))

    def on_explorer_screen_image_preview(self, message: ImagePreview) -> None:
        self.image_panel.set_preview(message.image)

    def on_engine_ready(self, message: EngineReady) -> None:
        host = self.jobs.engine.location if self.jobs.engine is not None else None
        self.set_activity(f"{message.name} loaded" + (f" on {host}" if host else ""))
        self._update_where()

    def on_analysis_ready(self, message: AnalysisReady) -> None:
        prepare, self._prepare = self._prepare, None
        if prepare is not None:
            prepare(message.analysis)
        self.show_analysis(message.analysis)

    def on_truncation_token(self, message: TruncationToken) -> None:
        if self.rerun is not None and self.rerun.task == "truncation":
            self.rerun = replace(self.rerun, text=message.text)

    def on_truncation_done(self, message: TruncationDone) -> None:
        # The engine already recorded the run on the analysis (Engine.truncate's contract):
        # the panels see the edit; the live line goes back to the baseline.
        self.mutate_reactive(ExplorerScreen.analysis)
        self.rerun = None
        self.app.notify(f"K={message.run.layer}: {message.run.answer!r}", timeout=3)

    def on_sweep_done(self, message: SweepDone) -> None:
        if self.analysis is None:
            return
        self.analysis.set_sweep(message.sweep)
        self.mutate_reactive(ExplorerScreen.analysis)
        cliff = message.sweep.cliff_layer
        self.app.notify(
            f"sweep done: cliff layer {cliff}" if cliff is not None else "sweep done: no cliff",
            timeout=4,
        )

    def on_work_failed(self, message: WorkFailed) -> None:
        # The notification is the job owner's (the message goes on to the app).
        if message.task == "analysis" and self.analysis is None:
            self.image_panel.set_message(f"✗ {message.reason}")
            self.answer_panel.set_pending(self.question, f"✗ {message.reason}")
        if self.rerun is not None and message.task == self.rerun.task:
            self.rerun = replace(self.rerun, failed=message.reason)
        if message.lost:
            self._update_where()
        self.set_activity(message.reason, "busy" if message.cancelled else "error")
        self._failed = message

    def on_work_finished(self, message: WorkFinished) -> None:
        if self.rerun is not None and message.task == self.rerun.task:
            self.rerun = None
        # A cancel was said in its notification; the status line goes back to ready.
        if self._failed is None or self._failed.cancelled:
            if self.status.kind != "error":
                self.set_activity(self._ready_text(), "ready")
        self._failed = None

    def on_export_failed(self, message: ExportFailed) -> None:
        self.app.notify(message.reason, title="export failed", severity="error", timeout=10)
        self.set_activity(message.reason, "error")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        report_worker_error(self.app, event)
