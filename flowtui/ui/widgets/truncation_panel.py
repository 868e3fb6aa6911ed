"""Truncation panel: K / strategy / R controls, the live truncated answer beside the baseline,
the list of runs of this session, and the sweep K = 0..L with its curve and the cliff layer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.reactive import var
from textual.widgets import Button, Input, Label, ProgressBar, Select, Static

from flowtui.engine.analysis import Analysis
from flowtui.textsafe import visible
from flowtui.ui.state import Rerun, ViewState
from flowtui.ui.widgets.flow_panel import layer_columns
from flowtui.ui.widgets.sweep_chart import (
    LABEL_WIDTH,
    LOGP_SCALES,
    changed_words,
    logp_scale,
    many_words,
    quoted,
    run_line,
    sweep_text,
)
from flowtui.ui.widgets.text_view import TextView

# The chart's helpers are imported from here by callers that predate the split.
__all__ = ["LABEL_WIDTH", "LOGP_SCALES", "DigitsInput", "TruncationPanel", "layer_columns",
           "logp_scale", "run_line", "sweep_text"]


class DigitsInput(Input):
    """A compact number field that leaves non-digit keys to the app, so q, s, h, l… still work."""

    def check_consume_key(self, key: str, character: str | None) -> bool:
        return character is not None and character.isdigit()

    async def _on_key(self, event) -> None:
        if event.is_printable and event.character is not None and not event.character.isdigit():
            # Not ours: run the app binding for it (the Input would swallow it otherwise).
            event.stop()
            event.prevent_default()
            active = self.screen.active_bindings.get(event.key)
            if active is not None and active.enabled:
                await self.app.run_action(active.binding.action, active.node)
            return
        await super()._on_key(event)


STRATEGIES = (("all", "all"), ("top-R", "top"), ("random-R", "random"))
# Cells the controls row needs besides the "follows layer" label (widths in DEFAULT_CSS):
# "K" 2, K 6, strategy 14, Run 8 (with its margin); "R" 3 and R 7 with a top/random strategy.
CONTROLS_BASE, CONTROLS_R = 30, 10
FOLLOW_TEXT, FIXED_TEXT = "follows layer", "fixed (clear: follow)"


class TruncationPanel(VerticalScroll):
    """Reruns with the image cut off: it asks for them (Requested); the explorer owns the
    engine, and the panel follows the explorer's `rerun` as it goes."""

    @dataclass
    class Requested(Message):
        """Run a truncation at `layer` with `strategy` (keeping `keep` image tokens)."""

        layer: int
        strategy: str
        keep: int | None

    BINDINGS = [
        Binding("escape", "leave", "Back to layers", id="truncation.leave"),
    ]

    DEFAULT_CSS = """
    TruncationPanel { height: 1fr; padding: 0 1; }
    TruncationPanel #trunc-controls { height: 1; }
    TruncationPanel #trunc-controls Label { padding: 0 1 0 0; }
    TruncationPanel #trunc-controls .gap { padding: 0 1 0 1; }
    TruncationPanel #trunc-k { width: 6; }
    TruncationPanel #trunc-r { width: 7; }
    TruncationPanel #trunc-strategy { width: 14; }
    TruncationPanel #trunc-run { min-width: 7; margin-left: 1; }
    TruncationPanel Static { text-wrap: nowrap; text-overflow: ellipsis; }
    TruncationPanel #trunc-disabled { text-wrap: wrap; }
    TruncationPanel #trunc-live { height: auto; margin-top: 1; }
    TruncationPanel #trunc-results { height: auto; }
    TruncationPanel #trunc-disabled { height: auto; color: $warning; }
    TruncationPanel #sweep-row { height: 1; margin-top: 1; }
    TruncationPanel #sweep-progress { width: 1fr; }
    TruncationPanel #sweep-label { width: auto; padding-right: 1; }
    TruncationPanel #sweep-curve { height: auto; }
    """

    # Bound to the explorer's state (data_bind).
    analysis: var[Analysis | None] = var(None, always_update=True, init=False)
    view: var[ViewState] = var(ViewState, init=False)
    rerun: var[Rerun | None] = var(None, init=False)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.enabled = True
        self.border_title = "Truncation · t focus · ⏎ run · s sweep"
        self._sweeping = False  # the progress row shows a running sweep

    def compose(self) -> ComposeResult:
        yield Static("", id="trunc-disabled")
        with Horizontal(id="trunc-controls"):
            yield Label("K")
            yield DigitsInput(id="trunc-k", compact=True, restrict=r"\d*", placeholder="0", tooltip="Cut the image from layer K on (empty: follow the current layer)")
            yield Label(FOLLOW_TEXT, id="trunc-follow", classes="gap")
            yield Select(STRATEGIES, value="all", allow_blank=False, compact=True, id="trunc-strategy")
            yield Label("R", id="trunc-r-label", classes="gap")
            yield DigitsInput(id="trunc-r", compact=True, restrict=r"\d*", placeholder="R", tooltip="Image tokens kept by top-R / random-R")
            yield Button("Run", id="trunc-run", compact=True)
        yield Static("", id="trunc-live")
        yield Static("", id="trunc-results")
        with Horizontal(id="sweep-row"):
            yield Label("sweep K=0..L", id="sweep-label")
            yield ProgressBar(id="sweep-progress", show_eta=False)
        yield TextView(Text("no sweep yet · s runs one (x cancels)", style="dim"), id="sweep-curve")

    def on_mount(self) -> None:
        self.query_one("#trunc-disabled").display = False
        # Hidden while idle: an indeterminate bar animates forever.
        self.query_one("#sweep-progress").display = False
        self._fit_controls()

    def on_resize(self) -> None:
        self._fit_controls()
        # The sweep is drawn to the panel's width, which is known only once it is laid out.
        if self.analysis is not None and self.analysis.sweep_logprob is not None:
            self.refresh_sweep()

    # --- the explorer's state -------------------------------------------------------------
    def watch_analysis(self, old: Analysis | None, analysis: Analysis | None) -> None:
        if analysis is None:
            return
        if analysis is old:  # an edit: a run or a sweep was recorded on it
            self.refresh_results()
            self.refresh_sweep()
            return
        n_img = int(analysis.image_positions.size)
        self.query_one("#trunc-r", Input).placeholder = str(max(1, n_img // 8))
        self.refresh_results()
        self.refresh_sweep()
        self._sync_k()
        self.show_idle()

    def set_enabled(self, enabled: bool, reason: str = "") -> None:
        """Open mode without a model: show why reruns are unavailable."""
        self.enabled = enabled
        msg = self.query_one("#trunc-disabled", Static)
        msg.update(reason)
        msg.display = not enabled and bool(reason)
        self.query_one("#trunc-run", Button).disabled = not enabled

    def watch_rerun(self, old: Rerun | None, rerun: Rerun | None) -> None:
        if rerun is None:  # it ended: the live line back to the baseline, no stale progress
            if old is not None and old.task == "truncation":
                self.show_idle(f"✗ {old.failed}" if old.failed else "")
            if old is not None and old.task == "sweep":
                self.sweep_stopped()
        elif rerun.task == "truncation":
            if rerun.failed:
                self.show_idle(f"✗ {rerun.failed}")
            else:
                self.show_running(rerun.layer, rerun.strategy, rerun.keep, rerun.text)
        elif rerun.task == "sweep" and not rerun.failed:
            self.set_sweep_progress(rerun.done, rerun.total)

    def watch_view(self) -> None:
        self._sync_k()
        if self.analysis is not None and self.analysis.sweep_logprob is not None:
            self.refresh_sweep()

    def _sync_k(self) -> None:
        k_input = self.query_one("#trunc-k", Input)
        k_input.placeholder = str(self.view.layer)
        follow = self.query_one("#trunc-follow", Label)
        text = FOLLOW_TEXT if not k_input.value else FIXED_TEXT
        if str(follow.content) != text:  # a Label update relayouts the whole screen
            follow.update(text)
            self._fit_controls()

    def _fit_controls(self) -> None:
        """R only for the strategies that keep R tokens; the follow label only where the row
        still has room for the Run button."""
        with_r = self.query_one("#trunc-strategy", Select).value != "all"
        for widget_id in ("#trunc-r-label", "#trunc-r"):
            widget = self.query_one(widget_id)
            if widget.display != with_r:
                widget.display = with_r
        follow = self.query_one("#trunc-follow", Label)
        width = self.content_region.width
        needed = CONTROLS_BASE + CONTROLS_R * with_r + len(str(follow.content)) + 2
        fits = not width or needed <= width
        if follow.display != fits:
            follow.display = fits

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self._fit_controls()

    # --- the values the user chose --------------------------------------------------------
    def chosen(self) -> tuple[int, str, int | None]:
        """(K, strategy, R) from the controls; K follows the current layer unless typed."""
        k_text = self.query_one("#trunc-k", Input).value.strip()
        layer = int(k_text) if k_text else self.view.layer
        if self.analysis is not None:
            layer = max(0, min(layer, self.analysis.num_layers))
        strategy = str(self.query_one("#trunc-strategy", Select).value)
        keep = None
        if strategy != "all":
            r_input = self.query_one("#trunc-r", Input)
            keep = int(r_input.value or r_input.placeholder or 1)
        return layer, strategy, keep

    def request_run(self) -> None:
        k_text = self.query_one("#trunc-k", Input).value.strip()
        if self.analysis is not None and k_text and int(k_text) > self.analysis.num_layers:
            L = self.analysis.num_layers
            self.app.notify(f"K must be 0..{L} (K = {L} leaves the model untouched)",
                            severity="warning")
            return
        layer, strategy, keep = self.chosen()
        self.post_message(self.Requested(layer, strategy, keep))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.request_run()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "trunc-k":
            self._sync_k()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.request_run()

    def action_leave(self) -> None:
        self.screen.set_focus(None)

    # --- live run and results -------------------------------------------------------------
    def _baseline(self) -> float:
        return float(np.sum(self.analysis.answer_logprobs)) if self.analysis is not None else 0.0

    def _baseline_line(self) -> Text:
        """The first line of the live view: the baseline answer and its log-prob."""
        live = Text(no_wrap=True, overflow="ellipsis")
        if self.analysis is not None:
            live.append("baseline  ", "dim")
            live.append(quoted(self.analysis.answer), "bold")
            live.append(f"  log p {self._baseline():+.2f}", "dim")
        return live

    def show_running(self, layer: int, strategy: str, keep: int | None, text: str = "") -> None:
        live = self._baseline_line()
        strat = strategy if keep is None else f"{strategy}-{keep}"
        live.append(f"\nK={layer} {strat}  ", "bold")
        live.append(quoted(text) if text else "…", "italic")
        live.append(" ▌", "blink")
        self.query_one("#trunc-live", Static).update(live)

    def show_idle(self, note: str = "") -> None:
        live = self._baseline_line()
        a = self.analysis
        if a is not None and a.truncations and many_words(a.answer):
            # The latest run's answer under the baseline, its changed words marked.
            run = a.truncations[-1]
            strat = run.strategy if run.keep is None else f"{run.strategy}-{run.keep}"
            live.append(f"\nK={run.layer} {strat}  ", "bold")
            live.append_text(changed_words(a.answer, run.answer))
        if note:
            live.append("\n" + visible(note), "red")
        self.query_one("#trunc-live", Static).update(live)

    def refresh_results(self) -> None:
        a = self.analysis
        results = self.query_one("#trunc-results", Static)
        if a is None or not a.truncations:
            results.update(Text("no runs yet · t then ⏎ truncates at K", style="dim"))
            return
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"runs this session ({len(a.truncations)})", "bold")
        text.append("  answer · log p of baseline answer (Δ)", "dim")
        for i, run in enumerate(reversed(a.truncations[-8:])):
            text.append("\n")
            line = run_line(run, self._baseline())
            if i == 0:
                line.stylize("reverse", 0, len(f"K={run.layer:<3}"))  # the latest run
            text.append_text(line)
        results.update(text)

    def set_sweep_progress(self, done: int, total: int) -> None:
        self._sweeping = True
        bar = self.query_one("#sweep-progress", ProgressBar)
        bar.display = True
        bar.update(total=max(1, total), progress=done)
        self.query_one("#sweep-label", Label).update(f"sweep K {min(done, max(0, total - 1))}/{max(0, total - 1)}")

    def sweep_stopped(self) -> None:
        """A sweep ended (done, cancelled or failed): no progress left on screen, and the
        curve is the analysis' sweep, if it has one."""
        self._sweeping = False
        self.refresh_sweep()

    def refresh_sweep(self) -> None:
        a = self.analysis
        curve = self.query_one("#sweep-curve", TextView)
        if not self._sweeping:
            bar = self.query_one("#sweep-progress")
            if bar.display:
                bar.display = False
            label = self.query_one("#sweep-label", Label)
            text = "sweep K=0..L" if a is None else f"sweep K=0..{a.num_layers}"
            if str(label.content) != text:  # updates relayout: only when it changes
                label.update(text)
        if a is None or a.sweep_logprob is None or a.sweep_same is None:
            curve.set_text(Text("no sweep yet · s runs one (x cancels)", style="dim"))
            return
        width = max(20, self.content_region.width)
        curve.set_text(sweep_text(a, width, self.view.layer))
