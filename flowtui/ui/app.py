"""The flowtui explorer: one screen with the image, flow, answer and truncation panels.

All model work goes through the Engine protocol in thread workers that post messages; the
event loop never waits on the model. Worker threads are daemons, so quitting never waits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from functools import partial
from pathlib import Path

import numpy as np
from textual import events, work
from textual.actions import parse as parse_action
from textual.app import App, ComposeResult, SystemCommand
from textual.containers import Horizontal, Vertical
from textual.geometry import Size
from textual.screen import Screen
from textual.widgets import Footer
from textual.worker import Worker, WorkerState

from flowtui.engine.analysis import Analysis, Progress, ProgressFn
from flowtui.engine.errors import Cancelled, ConnectionLost, FlowtuiError, InputError
from flowtui.engine.interface import Engine
from flowtui.render.cells import DISPLAY_MODES
from flowtui.render.colormaps import COLORMAPS, next_colormap
from flowtui.render.maps import MAP_MODES, map_threshold
from flowtui.textsafe import visible
from flowtui.ui.keys import HELP_NOTES, KEY_BINDINGS
from flowtui.ui.messages import (
    AnalysisReady,
    EngineProgress,
    EngineReady,
    ExportDone,
    ImagePreview,
    SweepDone,
    TruncationDone,
    TruncationRequested,
    TruncationToken,
    WorkFailed,
    WorkFinished,
)
from flowtui.ui.screens import HelpScreen, PathPrompt
from flowtui.ui.state import THRESHOLD_STEP, ViewState
from flowtui.ui.themes import DEFAULT_THEME, load_themes
from flowtui.ui.widgets.answer_panel import AnswerPanel
from flowtui.ui.widgets.flow_panel import FlowPanel
from flowtui.ui.widgets.image_panel import (
    ImagePanel,
    analysis_map,
    map_key,
    peak_token,
    sinks_text,
)
from flowtui.ui.widgets.status_line import StatusLine, progress_text
from flowtui.ui.widgets.truncation_panel import TruncationPanel

EngineFactory = Callable[[ProgressFn], Engine]

class _DaemonExecutor(ThreadPoolExecutor):
    """Runs each thread worker on a fresh daemon thread and never waits for them on shutdown.

    The default executor is joined when the event loop closes, so an engine call still running
    would hold up quitting; engine calls also poll a cancel flag, but a single forward pass
    cannot be interrupted.
    """

    def submit(self, fn, /, *args, **kwargs) -> Future:  # type: ignore[override]
        future: Future = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the future
                future.set_exception(exc)
            else:
                future.set_result(result)

        threading.Thread(target=run, daemon=True, name="flowtui-worker").start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        return None


def one_line(exc: BaseException) -> str:
    """A one-line reason for any exception (FlowtuiErrors already are one line), with control
    characters made visible. Only a newline ends the line: a carriage return or other line
    separator quoted from outside is shown, not obeyed."""
    text = str(exc).strip()
    if isinstance(exc, FlowtuiError):
        return visible(text.split("\n")[0].rstrip()) if text else type(exc).__name__
    if isinstance(exc, MemoryError) or "out of memory" in text.lower():
        return "out of memory (try a smaller --dtype, a smaller model or --device cpu)"
    first = visible(text.split("\n")[0].rstrip()) if text else ""
    line = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "…"


def default_stem(image: str | None, snapshot_path: str | None) -> str:
    # Shown in the export prompts: a file name must not drive the terminal either.
    for p in (image, snapshot_path):
        if p:
            return visible(Path(p).stem) or "flowtui"
    return "flowtui"


class FlowtuiApp(App[int]):
    """The explorer. Live mode: `engine_factory` + `image` + `question`. Open mode: `analysis`
    (from a snapshot), with `engine_factory` only if reruns should work."""

    # Absolute, so subclasses defined elsewhere (tests, bench) still find it.
    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "flowtui"
    BINDINGS = KEY_BINDINGS
    # Nothing focused at start: the layer keys work at once, no cursor blinks in snapshots.
    AUTO_FOCUS = None

    def __init__(
        self,
        *,
        analysis: Analysis | None = None,
        image: str | None = None,
        question: str | None = None,
        engine_factory: EngineFactory | None = None,
        max_new_tokens: int = 32,
        theme: str | None = None,
        snapshot_path: str | None = None,
        self_check: bool = True,
    ) -> None:
        super().__init__()
        self.analysis: Analysis | None = None
        self._initial_analysis = analysis
        self.image_path = image
        self.question = question
        self.engine_factory = engine_factory
        self.max_new_tokens = max_new_tokens
        self.snapshot_path = snapshot_path
        self.self_check = self_check
        self.stem = default_stem(image, snapshot_path)
        self.view = ViewState(threshold=analysis.cam_settings.threshold if analysis else 0.5)
        self.engine: Engine | None = None
        self.busy: str | None = None
        self._cancel = threading.Event()
        self._failed: WorkFailed | None = None  # the last job's failure, until it finishes
        self._applicable: tuple = ()  # what check_action depends on, when bindings last refreshed
        self._disconnected = False  # a remote engine's connection dropped
        self._theme_errors: list[str] = []
        for t in load_themes(self._theme_errors):
            self.register_theme(t)
        self._wanted_theme = theme or DEFAULT_THEME
        self.theme = (
            self._wanted_theme if self._wanted_theme in self.available_themes else DEFAULT_THEME
        )

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: str = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Every notification quotes text from outside (answers, paths, errors): it is shown
        with control characters made visible (newlines stay line breaks) and, unless asked,
        never parsed as markup."""
        super().notify(
            visible(message, keep_newlines=True), title=visible(title), severity=severity,  # type: ignore[arg-type]
            timeout=timeout, markup=markup,
        )

    # --- layout ---------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield ImagePanel(id="image-panel")
                yield AnswerPanel(id="answer-panel")
            with Vertical(id="right"):
                yield FlowPanel(id="flow-panel")
                yield TruncationPanel(id="truncation-panel")
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
        import asyncio

        asyncio.get_running_loop().set_default_executor(_DaemonExecutor())
        self._apply_size_classes()
        if self._wanted_theme not in self.available_themes:
            self.notify(
                f"unknown theme {self._wanted_theme!r}; using {DEFAULT_THEME}", severity="warning"
            )
        for err in self._theme_errors:
            self.notify(err, severity="warning")
        if self._initial_analysis is not None:
            self._show_analysis(self._initial_analysis)
            self.status.set_activity(
                self._ready_text(
                    f"opened {Path(self.snapshot_path).name}" if self.snapshot_path else "ready"
                ),
                "ready",
            )
            if self.engine_factory is None:
                self.truncation_panel.set_enabled(
                    False,
                    "Truncation needs a model: this snapshot was opened without one. "
                    "Reopen with `flowtui open FILE --model M` to rerun.",
                )
        elif self.engine_factory is not None and self.image_path is not None:
            # The image and a progress line come first; the engine worker's first act is the
            # heavy import (torch, transformers), never on the path to this first frame.
            self.answer_panel.set_pending(self.question, "loading model…")
            self.image_panel.set_message("loading model…")
            self.status.set_activity("loading model…")
            self._preview_worker(self.image_path)
            self._start(
                "analyze",
                self._analyze_worker,
                self.image_path,
                self.question or "",
                self.max_new_tokens,
            )
        else:
            self.image_panel.set_message("nothing to show: give an image and a question")
            self.status.set_activity("idle", "ready")

    def on_resize(self, event: events.Resize) -> None:
        self._apply_size_classes(event.size)

    def _apply_size_classes(self, size: Size | None = None) -> None:
        w, h = size or self.size
        self.screen.set_class(w < 100, "-narrow")
        self.screen.set_class(h < 30, "-short")
        # Ctrl+P still opens the palette (and ? lists it): its footer entry costs the room
        # the explorer's own keys need at 80 columns.
        for footer in self.screen.query(Footer):
            if footer.show_command_palette != (w >= 100):
                footer.show_command_palette = w >= 100

    # --- view state ------------------------------------------------------------------------
    def _set_view(self, **changes) -> None:
        self.view = replace(self.view, **changes)
        for panel in (self.image_panel, self.flow_panel, self.truncation_panel):
            panel.set_view(self.view)
        self._update_where()
        # The footer shows only the keys that apply (check_action); it recomposes on every
        # refresh, so refresh only when that set changes, not on every layer step.
        applicable = (self.view.map_mode, self.analysis is not None and len(self.analysis.views))
        if applicable != self._applicable:
            self._applicable = applicable
            self.refresh_bindings()

    def _update_where(self) -> None:
        v, a = self.view, self.analysis
        if a is None:
            self.status.set_where("")
            return
        parts = [f"layer {v.layer}/{a.num_layers - 1}"]
        if len(a.views) > 1:
            parts.append(f"{a.views[v.view]} {v.view + 1}/{len(a.views)}")
        if v.map_mode == "cam":
            parts.append(f"thr {v.threshold:.2f}")
        else:
            parts.append("attention, sinks excluded" if v.exclude_sinks else "attention")
        self.status.set_where(" · ".join([*parts, v.colormap, v.mode]) + self._remote_where())

    def _remote_where(self) -> str:
        """Where the model runs, when that is not this process (a remote engine)."""
        host = getattr(self.engine, "location", None) or getattr(
            self.engine_factory, "location", None
        )
        if not host:
            return ""
        return f" · model on {host}" + (" (disconnected: r reconnects)" if self._disconnected else "")

    def _ready_text(self, what: str = "ready") -> str:
        """The status line at rest: `what`, and the analysis' notes (how the image was read,
        what the model could not take in) in short; the answer panel lists them all."""
        notes = self.analysis.notes if self.analysis is not None else []
        failed = self.analysis.failed_checks if self.analysis is not None else []
        if failed:
            return f"{what} · ✗ self-check failed: {failed[0].name}"
        if not notes:
            return what
        more = f" (+{len(notes) - 1} more)" if len(notes) > 1 else ""
        return f"{what} · ⚠ {notes[0]}{more}"

    def _show_analysis(self, analysis: Analysis) -> None:
        self.analysis = analysis
        self.image_panel.set_analysis(analysis)
        self.flow_panel.set_analysis(analysis)
        self.answer_panel.set_analysis(analysis)
        self.truncation_panel.set_analysis(analysis)
        layer = min(self.view.layer, analysis.num_layers - 1)
        view = self.view.view if self.view.view < len(analysis.views) else 0
        map_mode = self.view.map_mode if analysis.attention_tokens is not None else "cam"
        self._set_view(
            layer=layer,
            threshold=float(analysis.cam_settings.threshold),
            view=view,
            map_mode=map_mode,
        )
        if analysis.notes:
            # In full once, whatever the terminal's size; the panel and status line keep them.
            self.notify("\n".join(analysis.notes), title="note", severity="warning", timeout=8)
        if analysis.failed_checks:
            # The numbers may be wrong: said loudly, and kept in the answer panel.
            self.notify("\n".join(visible(c.describe()) for c in analysis.failed_checks),
                        title="self-check failed: these numbers may be wrong",
                        severity="error", timeout=20)

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
            self.notify(
                "this analysis has no attention map (snapshots before version 2 store only "
                "the CAM); re-analyze to get it",
                severity="warning",
            )
            return
        i = MAP_MODES.index(self.view.map_mode)
        self._set_view(map_mode=MAP_MODES[(i + 1) % len(MAP_MODES)])

    def action_toggle_sinks(self) -> None:
        self._set_view(exclude_sinks=not self.view.exclude_sinks)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # False hides a key from the footer and the palette and makes it inert: only the keys
        # that do something for this analysis and map are offered.
        if action == "cycle_view":
            return self.analysis is not None and len(self.analysis.views) > 1
        if action == "toggle_sinks":
            return self.view.map_mode == "attention"
        if action == "threshold":
            return self.view.map_mode == "cam"
        if action == "reconnect":  # only a remote engine (--remote) has a connection
            return getattr(self.engine_factory, "location", None) is not None
        return True

    def action_toggle_heads(self) -> None:
        self._set_view(show_heads=not self.view.show_heads)

    def action_toggle_per_token(self) -> None:
        self._set_view(per_token=not self.view.per_token)

    def action_focus_truncation(self) -> None:
        self.query_one("#trunc-k").focus()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(KEY_BINDINGS, HELP_NOTES))

    async def action_quit(self) -> None:
        self._cancel.set()  # running engine calls stop at their next callback
        self._close_engine()
        self.exit(0)

    def on_unmount(self) -> None:
        self._close_engine()

    def _close_engine(self) -> None:
        # A remote engine ends its ssh session (the server stops its work); local: nothing.
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()

    def action_reconnect(self) -> None:
        if self.busy is not None:
            self.notify(f"busy with {self.busy}; x cancels it", severity="warning")
            return
        self._close_engine()
        self.engine = None
        self._start("connect", self._connect_worker)

    def action_cancel(self) -> None:
        if self.busy is None:
            self.notify("nothing is running")
            return
        self._cancel.set()
        self.status.set_activity(f"cancelling {self.busy}…")

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for b in KEY_BINDINGS:
            _, name, params = parse_action(b.action)
            if b.id != "app.quit" and self.check_action(name, params) is not False:
                key = b.key_display or b.key
                yield SystemCommand(
                    b.description, f"{key} · {b.tooltip}", partial(self.run_action, b.action)
                )

    # --- engine work -----------------------------------------------------------------------
    def _start(self, task: str, worker: Callable[..., Worker], *args) -> bool:
        """Start one engine job; the model runs one at a time."""
        if self.busy is not None:
            self.notify(f"busy with {self.busy}; x cancels it", severity="warning")
            return False
        self.busy = task
        self._cancel = threading.Event()
        worker(*args, cancel=self._cancel)
        return True

    def _can_rerun(self) -> bool:
        if self.analysis is None:
            self.notify("no analysis yet", severity="warning")
            return False
        if self.engine is None and self.engine_factory is None:
            self.notify(
                "truncation needs a model: reopen with `flowtui open FILE --model M`",
                severity="warning",
            )
            return False
        return True

    def on_truncation_requested(self, message: TruncationRequested) -> None:
        message.stop()
        if self._can_rerun() and self._start(
            "truncation",
            self._truncate_worker,
            self.analysis,
            message.layer,
            message.strategy,
            message.keep,
        ):
            self.truncation_panel.show_running(message.layer, message.strategy, message.keep)

    def action_sweep(self) -> None:
        if self._can_rerun():
            if self._start("sweep", self._sweep_worker, self.analysis):
                self.truncation_panel.set_sweep_progress(0, self.analysis.num_layers + 1)

    def _progress_fn(self, task: str, cancel: threading.Event) -> ProgressFn:
        def progress(p: Progress) -> None:
            if cancel.is_set():
                raise Cancelled(f"{task} cancelled")
            self.post_message(EngineProgress(task, p))

        return progress

    @contextmanager
    def _guard(self, task: str) -> Iterator[None]:
        """Any failure in a worker becomes a one-line WorkFailed message, never a crash."""
        try:
            yield
        except Cancelled:
            self.post_message(WorkFailed(task, f"{task} cancelled", cancelled=True))
        except ConnectionLost as exc:
            self.post_message(WorkFailed(task, f"{one_line(exc)} · r reconnects", lost=True))
        except BaseException as exc:  # noqa: BLE001 - the app must survive anything
            self.post_message(WorkFailed(task, one_line(exc)))
        finally:
            self.post_message(WorkFinished(task))

    def _ensure_engine(self, cancel: threading.Event) -> Engine:
        if self.engine is None:
            assert self.engine_factory is not None
            self.engine = self.engine_factory(self._progress_fn("load", cancel))
            if hasattr(self.engine, "on_log"):  # a remote server's log lines
                self.engine.on_log = self._remote_log
            self.post_message(
                EngineReady(getattr(getattr(self.engine, "info", None), "name", "model"))
            )
        return self.engine

    def _remote_log(self, line: str) -> None:
        host = getattr(self.engine, "location", "remote")
        self.notify(line, title=host, timeout=5, markup=False)  # thread-safe: posts a message

    @work(thread=True, exit_on_error=False, group="engine")
    def _connect_worker(self, cancel: threading.Event) -> None:
        with self._guard("connect"):
            self._ensure_engine(cancel)

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
            self.post_message(ImagePreview(np.asarray(rgb)))
        except Exception:  # noqa: BLE001 - the engine reports bad images properly
            pass

    @work(thread=True, exit_on_error=False, group="engine")
    def _analyze_worker(
        self, image: str, question: str, max_new_tokens: int, cancel: threading.Event
    ) -> None:
        with self._guard("analysis"):
            engine = self._ensure_engine(cancel)
            analysis = engine.analyze(
                image,
                question,
                max_new_tokens=max_new_tokens,
                progress=self._progress_fn("analysis", cancel),
                self_check=self.self_check,
            )
            self.post_message(AnalysisReady(analysis))

    @work(thread=True, exit_on_error=False, group="engine")
    def _truncate_worker(
        self,
        analysis: Analysis,
        layer: int,
        strategy: str,
        keep: int | None,
        cancel: threading.Event,
    ) -> None:
        def on_token(text: str) -> None:
            if cancel.is_set():
                raise Cancelled("truncation cancelled")
            self.post_message(TruncationToken(text))

        with self._guard("truncation"):
            engine = self._ensure_engine(cancel)
            run = engine.truncate(
                analysis,
                layer,
                strategy=strategy,
                keep=keep,
                seed=0,
                on_token=on_token,
                progress=self._progress_fn("truncation", cancel),
            )
            self.post_message(TruncationDone(run))

    @work(thread=True, exit_on_error=False, group="engine")
    def _sweep_worker(self, analysis: Analysis, cancel: threading.Event) -> None:
        with self._guard("sweep"):
            engine = self._ensure_engine(cancel)
            sweep = engine.sweep(
                analysis, progress=self._progress_fn("sweep", cancel), cancel=cancel.is_set
            )
            self.post_message(SweepDone(sweep))

    # --- messages from workers (main thread) -----------------------------------------------
    def on_engine_progress(self, message: EngineProgress) -> None:
        p = message.progress
        self.status.set_activity(progress_text(p))
        if message.task == "sweep" and p.stage == "sweep":
            self.truncation_panel.set_sweep_progress(p.done, p.total)
        if message.task == "analysis" and self.analysis is None:
            self.image_panel.set_message(progress_text(p))
            self.answer_panel.set_pending(self.question, progress_text(p))

    def on_image_preview(self, message: ImagePreview) -> None:
        self.image_panel.set_preview(message.image)

    def on_engine_ready(self, message: EngineReady) -> None:
        self._disconnected = False
        host = getattr(self.engine, "location", None)
        self.status.set_activity(f"{message.name} loaded" + (f" on {host}" if host else ""))
        self._update_where()

    def on_analysis_ready(self, message: AnalysisReady) -> None:
        self._show_analysis(message.analysis)

    def on_truncation_token(self, message: TruncationToken) -> None:
        if self.busy == "truncation":
            layer, strategy, keep = self.truncation_panel.chosen()
            self.truncation_panel.show_running(layer, strategy, keep, message.text)

    def on_truncation_done(self, message: TruncationDone) -> None:
        # The engine already recorded the run on the analysis (Engine.truncate's contract).
        self.truncation_panel.show_done(message.run)
        self.notify(f"K={message.run.layer}: {message.run.answer!r}", timeout=3)

    def on_sweep_done(self, message: SweepDone) -> None:
        if self.analysis is None:
            return
        self.analysis.set_sweep(message.sweep)
        self.truncation_panel.sweep_stopped()
        self.answer_panel.refresh_content()
        self.flow_panel.refresh()
        cliff = message.sweep.cliff_layer
        self.notify(
            f"sweep done: cliff layer {cliff}" if cliff is not None else "sweep done: no cliff",
            timeout=4,
        )

    def on_work_failed(self, message: WorkFailed) -> None:
        if message.cancelled:
            self.notify(message.reason, timeout=3)
        else:
            self.notify(
                message.reason, title=f"{message.task} failed", severity="error", timeout=10
            )
        if message.task == "analysis" and self.analysis is None:
            self.image_panel.set_message(f"✗ {message.reason}")
            self.answer_panel.set_pending(self.question, f"✗ {message.reason}")
        if message.task == "truncation":
            self.truncation_panel.show_idle(f"✗ {message.reason}")
        if message.lost:
            # The analysis on screen stays; the next rerun or `r` connects again.
            self._close_engine()
            self.engine = None
            self._disconnected = True
            self._update_where()
        self.status.set_activity(message.reason, "busy" if message.cancelled else "error")
        self._failed = message

    def on_work_finished(self, message: WorkFinished) -> None:
        self.busy = None
        if message.task == "sweep":
            self.truncation_panel.sweep_stopped()  # no stale progress after a cancel
        # A cancel was said in its notification; the status line goes back to ready.
        if self._failed is None or self._failed.cancelled:
            if self.status.kind != "error":
                self.status.set_activity(self._ready_text(), "ready")
        self._failed = None

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # Backstop: workers catch their own errors, but nothing may ever crash the app.
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.notify(one_line(event.worker.error), severity="error")

    # --- exports ---------------------------------------------------------------------------
    def _timestamp(self) -> str:
        return datetime.now().strftime("%Y%m%d-%H%M%S")

    def action_export(self) -> None:
        if self.analysis is None:
            self.notify("nothing to export yet", severity="warning")
            return
        default = f"{self.stem}-{self._timestamp()}.flowtui"
        self.push_screen(
            PathPrompt("Export snapshot (.flowtui, includes the screen as SVG)", default),
            self._export_to,
        )

    def _export_to(self, path: str | None) -> None:
        if not path or self.analysis is None:
            return
        svg = self.export_screenshot(title=f"flowtui · {self.stem}")
        self._save_worker(self.analysis, path, svg)

    @work(thread=True, exit_on_error=False, group="export")
    def _save_worker(self, analysis: Analysis, path: str, svg: str) -> None:
        try:
            # Never over the input image, nor over any file that is not a snapshot.
            written = analysis.save(path, screen_svg=svg, inputs=[self.image_path])
            self.post_message(ExportDone("snapshot", str(written)))
        except Exception as exc:  # noqa: BLE001
            self.post_message(WorkFailed("export", one_line(exc)))

    def action_export_pngs(self) -> None:
        if self.analysis is None:
            self.notify("nothing to export yet", severity="warning")
            return
        a, v = self.analysis, self.view
        what = "the CAM" if v.map_mode == "cam" else "the attention map"
        if v.map_mode == "attention" and v.exclude_sinks:
            what += " (sinks excluded)"
        each = "layer and view: layer-NN-VIEW.png" if len(a.views) > 1 else "layer: layer-NN.png"
        settings = "colormap, threshold and mode" if v.map_mode == "cam" else "colormap and mode"
        default = f"{self.stem}-{v.map_mode}-{self._timestamp()}"
        self.push_screen(
            PathPrompt(
                f"Export {what} as PNGs into folder",
                default,
                f"one PNG per {each}\ncurrent {settings} · Enter saves · Esc cancels",
            ),
            self._pngs_to,
        )

    def _pngs_to(self, folder: str | None) -> None:
        if folder and self.analysis is not None:
            self._pngs_worker(self.analysis, folder, self.view)

    @work(thread=True, exit_on_error=False, group="export")
    def _pngs_worker(self, analysis: Analysis, folder: str, view: ViewState) -> None:
        from flowtui.render.png import save_cam_pngs

        try:
            mode = view.mode if view.mode != "image" else "overlay"
            key = map_key(view)
            tmap = analysis_map(analysis, key)
            layers, nviews = tmap.values.shape[0], len(analysis.views)
            marks = np.full((layers, nviews), -1, np.int64)
            notes = [[""] * nviews for _ in range(layers)]
            for layer in range(layers):
                for v in range(nviews):
                    peak = peak_token(analysis, tmap, layer, v)
                    marks[layer, v] = -1 if peak is None else peak
                    if tmap.exclude_sinks:
                        count = tmap.sink_count(layer, analysis.view_tokens(v))
                        notes[layer][v] = f"{sinks_text(count)} (drawn in the top colour)"
            cam = key[0] == "cam"
            paths = save_cam_pngs(
                analysis.image, tmap.values, analysis.token_regions,
                folder, analysis.token_views, analysis.views, mode,
                map_threshold(key[0], view.threshold), view.colormap,
                what="LLaVA-CAM" if cam else "attention of the answer",
                vmax=None if cam else tmap.vmax, marks=marks, notes=notes,
            )
            self.post_message(ExportDone(f"{len(paths)} PNGs", folder))
        except Exception as exc:  # noqa: BLE001
            self.post_message(WorkFailed("export", one_line(exc)))

    def on_export_done(self, message: ExportDone) -> None:
        self.notify(f"saved {message.what} to {message.path}", timeout=5)


def run_explorer(
    *,
    analysis: Analysis | None = None,
    image: str | None = None,
    question: str | None = None,
    engine_factory: EngineFactory | None = None,
    max_new_tokens: int = 32,
    theme: str | None = None,
    snapshot_path: str | None = None,
    self_check: bool = True,
) -> int:
    """Live mode: engine_factory + image + question (the app loads the engine in a worker via
    engine_factory(progress), then analyzes). Open mode: analysis (from a snapshot), and
    engine_factory only if --model was given (then reruns work; the engine is loaded lazily in
    a worker on first rerun). Returns the exit code."""
    app = FlowtuiApp(
        analysis=analysis,
        image=image,
        question=question,
        engine_factory=engine_factory,
        max_new_tokens=max_new_tokens,
        theme=theme,
        snapshot_path=snapshot_path,
        self_check=self_check,
    )
    result = app.run()
    return int(result) if isinstance(result, int) else (app.return_code or 0)


__all__ = ["COLORMAPS", "KEY_BINDINGS", "FlowtuiApp", "run_explorer"]
