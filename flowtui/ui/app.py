"""The flowtui app: a thin shell of modes over one engine job owner.

The app holds what every screen shares: the themes, notifications that never parse what they
quote, and `jobs` (the engine and its one running job). What is shown lives on the screens, one
per mode: `explorer` (always), from `flowtui.ui.dataset_screen` `dataset`, and from
`flowtui.ui.compare_screen` `compare` (`open_compare`). A new screen is
a mode added with `add_mode` that uses `app.jobs` and, to open an analysis, `app.explorer`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from textual.app import App, SystemCommand
from textual.screen import Screen
from textual.worker import Worker

from flowtui.compare import Comparison
from flowtui.engine.analysis import Analysis
from flowtui.engine.interface import Engine
from flowtui.render.colormaps import COLORMAPS
from flowtui.render.terminal import Graphics
from flowtui.textsafe import visible
from flowtui.ui.explorer import ExplorerScreen
from flowtui.ui.exports import default_stem
from flowtui.ui.jobs import (
    EngineFactory,
    EngineJobs,
    one_line,
    report_worker_error,
    use_daemon_threads,
)
from flowtui.ui.keys import HELP_NOTES, KEY_BINDINGS
from flowtui.ui.messages import WorkFailed, WorkFinished
from flowtui.ui.state import ViewState
from flowtui.ui.themes import DEFAULT_THEME, load_themes
from flowtui.ui.widgets.answer_panel import AnswerPanel
from flowtui.ui.widgets.flow_panel import FlowPanel
from flowtui.ui.widgets.image_panel import ImagePanel
from flowtui.ui.widgets.status_line import StatusLine
from flowtui.ui.widgets.truncation_panel import TruncationPanel


class FlowtuiApp(App[int]):
    """The explorer. Live mode: `engine_factory` + `image` + `question`. Open mode: `analysis`
    (from a snapshot), with `engine_factory` only if reruns should work."""

    # Absolute, so subclasses defined elsewhere (tests, bench) still find it.
    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "flowtui"
    # Nothing focused at start: the layer keys work at once, no cursor blinks in snapshots.
    AUTO_FOCUS = None
    DEFAULT_MODE = "explorer"
    # The explorer screen this app shows (a subclass may add keys, as the dataset's does).
    EXPLORER: type[ExplorerScreen] = ExplorerScreen

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
        per_token: bool = True,
        graphics: Graphics | None = None,
        map_style: str = "regions",
    ) -> None:
        super().__init__()
        # How the map is drawn (render/terminal.py; None: half-blocks, nothing said), and in
        # which style at real pixels (render/overlay.py).
        self.graphics = graphics
        self.map_style = map_style
        self.jobs = EngineJobs(self, engine_factory, self_check=self_check, per_token=per_token)
        self.explorer = self.EXPLORER(
            analysis=analysis,
            image=image,
            question=question,
            max_new_tokens=max_new_tokens,
            snapshot_path=snapshot_path,
        )
        self.add_mode("explorer", lambda: self.explorer)
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

    def on_load(self) -> None:
        # Before any screen starts a worker: quitting never waits for a running model.
        use_daemon_threads()

    def on_mount(self) -> None:
        if self._wanted_theme not in self.available_themes:
            self.notify(
                f"unknown theme {self._wanted_theme!r}; using {DEFAULT_THEME}", severity="warning"
            )
        for err in self._theme_errors:
            self.notify(err, severity="warning")
        g = self.graphics
        if g is not None and g.tmux not in (None, "on", "all"):
            # A fallback the user can act on: tmux's setting.
            self.notify(f"map in half-blocks: {g.reason}" if not g.pixels else g.reason,
                        severity="warning")

    # --- the explorer's state, for scripts and tests -----------------------------------------
    @property
    def analysis(self) -> Analysis | None:
        return self.explorer.analysis

    @property
    def view(self) -> ViewState:
        return self.explorer.view

    @property
    def stem(self) -> str:
        return self.explorer.stem

    @property
    def busy(self) -> str | None:
        return self.jobs.busy

    @property
    def engine(self) -> Engine | None:
        return self.jobs.engine

    @property
    def image_panel(self) -> ImagePanel:
        return self.explorer.image_panel

    @property
    def flow_panel(self) -> FlowPanel:
        return self.explorer.flow_panel

    @property
    def answer_panel(self) -> AnswerPanel:
        return self.explorer.answer_panel

    @property
    def truncation_panel(self) -> TruncationPanel:
        return self.explorer.truncation_panel

    @property
    def status(self) -> StatusLine:
        return self.explorer.status

    def open_compare(self, comparison: Any) -> None:
        """Show `comparison` (flowtui.compare.Comparison) in the `compare` mode; Escape there
        comes back to the explorer."""
        from flowtui.ui.compare_screen import CompareScreen

        if "compare" in self._modes:  # the previous comparison's screen goes
            self.switch_mode("explorer")
            self.remove_mode("compare")
        screen = CompareScreen(comparison, back=True, stem=self.explorer.stem)
        self.add_mode("compare", lambda: screen)
        self.switch_mode("compare")

    # --- shared by every screen ------------------------------------------------------------
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        key_commands = getattr(screen, "key_commands", None)
        if key_commands is not None:
            yield from key_commands()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        report_worker_error(self, event)  # the engine jobs run on the app

    def on_work_failed(self, message: WorkFailed) -> None:
        self.jobs.failed(message)

    def on_work_finished(self, message: WorkFinished) -> None:
        self.jobs.finished(message)

    async def action_quit(self) -> None:
        self.jobs.stop()
        self.exit(0)

    def on_unmount(self) -> None:
        self.jobs.close()


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
    per_token: bool = True,
    graphics: Graphics | None = None,
    map_style: str = "regions",
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
        per_token=per_token,
        graphics=graphics,
        map_style=map_style,
    )
    result = app.run()
    return int(result) if isinstance(result, int) else (app.return_code or 0)


class CompareApp(FlowtuiApp):
    """`flowtui compare A B`: the app opens on the compare screen (no model, no explorer)."""

    DEFAULT_MODE = "compare"

    def __init__(self, comparison: Comparison, theme: str | None = None, **pixels) -> None:
        from flowtui.ui.compare_screen import CompareScreen  # only this app needs it at start

        super().__init__(theme=theme, **pixels)
        self.compare_screen = CompareScreen(comparison, stem=Path(comparison.files[0]).stem)
        self.add_mode("compare", lambda: self.compare_screen)


def run_compare(comparison: Comparison, theme: str | None = None, **pixels) -> int:
    """Show the compare screen until q; the exit code. `pixels`: graphics and map_style."""
    app = CompareApp(comparison, theme=theme, **pixels)
    result = app.run()
    return int(result) if isinstance(result, int) else (app.return_code or 0)


class DatasetCompareApp(FlowtuiApp):
    """`flowtui dataset compare RUN ...` on a terminal: the dataset compare screen alone."""

    DEFAULT_MODE = "dataset-compare"

    def __init__(self, curves: list, delta: float, theme: str | None = None) -> None:
        from flowtui.ui.dataset_compare_screen import DatasetCompareScreen

        super().__init__(theme=theme)
        self.dataset_compare_screen = DatasetCompareScreen(curves, delta)
        self.add_mode("dataset-compare", lambda: self.dataset_compare_screen)


def run_dataset_compare(curves: list, delta: float, theme: str | None = None) -> int:
    """Show the dataset compare screen until q; the exit code."""
    app = DatasetCompareApp(curves, delta, theme=theme)
    result = app.run()
    return int(result) if isinstance(result, int) else (app.return_code or 0)


__all__ = [
    "CompareApp",
    "DatasetCompareApp",
    "run_dataset_compare",
    "run_compare",
    "COLORMAPS",
    "HELP_NOTES",
    "KEY_BINDINGS",
    "EngineFactory",
    "FlowtuiApp",
    "default_stem",
    "one_line",
    "run_explorer",
]
