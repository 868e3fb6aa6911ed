"""Truncation panel: K / strategy / R controls, the live truncated answer beside the baseline,
the list of runs of this session, and the sweep K = 0..L with its curve and the cliff layer."""

from __future__ import annotations

import numpy as np
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Input, Label, ProgressBar, Select, Static

from flowtui.engine.analysis import Analysis, TruncationRun
from flowtui.render.sparkline import BLOCKS, spark_levels
from flowtui.ui.messages import TruncationRequested
from flowtui.ui.state import ViewState
from flowtui.ui.widgets.flow_panel import axis_text, layer_columns
from flowtui.ui.widgets.text_view import TextView


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
LABEL_WIDTH = 7


def run_line(run: TruncationRun, baseline: float) -> Text:
    strat = run.strategy if run.keep is None or run.strategy == "all" else f"{run.strategy}-{run.keep}"
    delta = run.baseline_logprob - baseline
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(f"K={run.layer:<3}", "bold")
    line.append(f"{strat:<10}", "dim")
    line.append("✓ " if run.same else "✗ ", "green" if run.same else "bold red")
    line.append(f"{run.answer!r:<10} ")
    line.append(f"{run.baseline_logprob:+.2f} ", "dim")
    line.append(f"(Δ{delta:+.2f})", "red" if delta < -0.5 else "dim")
    return line


def sweep_text(a: Analysis, width: int, current: int) -> Text:
    """The sweep curve over K = 0..L: log p of the baseline answer, same/different, the cliff."""
    lp = np.asarray(a.sweep_logprob, dtype=np.float64)
    same = np.asarray(a.sweep_same, dtype=bool)
    n = len(lp)
    cw = layer_columns(n, width - LABEL_WIDTH - 8)
    lo, hi = float(np.min(lp)), float(np.max(lp))
    levels = spark_levels(lp, lo - 1e-6 if hi > lo else lo - 1, hi)
    out = Text(no_wrap=True, overflow="crop")
    out.append(f"{'log p':<{LABEL_WIDTH}}", "dim")
    for k, level in enumerate(levels.tolist()):
        style = Style(color="#3d8fe0", bgcolor="grey30" if k == current else None)
        out.append(BLOCKS[max(1, level)] * cw, style)
    out.append(f" max {hi:+.1f}", "dim")
    out.append("\n")
    out.append(f"{'answer':<{LABEL_WIDTH}}", "dim")
    for k in range(n):
        out.append(("●" if same[k] else "✗").ljust(cw), "green" if same[k] else "bold red")
    out.append(f" min {lo:+.1f}", "dim")
    out.append("\n")
    out.append(f"{'K':<{LABEL_WIDTH}}", "dim")
    marks = {a.cliff_layer: "▲"} if a.cliff_layer is not None else {}
    out.append_text(axis_text(n, cw, current, marks))
    out.append("\n")
    if a.cliff_layer is not None:
        out.append("cliff layer ", "bold")
        out.append(str(a.cliff_layer), "bold red")
        out.append(" · ● same as baseline ✗ differs", "dim")
    else:
        out.append("no cliff: the answer differs at K = L", "dim")
    return out


class TruncationPanel(VerticalScroll):
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

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.analysis: Analysis | None = None
        self.view = ViewState()
        self.enabled = True
        self.border_title = "Truncation · t focus · ⏎ run · s sweep"
        self._live: Text | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="trunc-disabled")
        with Horizontal(id="trunc-controls"):
            yield Label("K")
            yield DigitsInput(id="trunc-k", compact=True, restrict=r"\d*", placeholder="0", tooltip="Cut the image from layer K on (empty: follow the current layer)")
            yield Label("follows layer", id="trunc-follow", classes="gap")
            yield Select(STRATEGIES, value="all", allow_blank=False, compact=True, id="trunc-strategy")
            yield Label("R", classes="gap")
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

    # --- state from the app -------------------------------------------------------------
    def set_analysis(self, analysis: Analysis) -> None:
        self.analysis = analysis
        n_img = int(analysis.image_positions.size)
        self.query_one("#trunc-r", Input).placeholder = str(max(1, n_img // 8))
        self.refresh_results()
        self.refresh_sweep()
        self._sync_k()
        if not analysis.truncations:
            self.show_idle()

    def set_enabled(self, enabled: bool, reason: str = "") -> None:
        """Open mode without a model: show why reruns are unavailable."""
        self.enabled = enabled
        msg = self.query_one("#trunc-disabled", Static)
        msg.update(reason)
        msg.display = not enabled and bool(reason)
        self.query_one("#trunc-run", Button).disabled = not enabled

    def set_view(self, view: ViewState) -> None:
        self.view = view
        self._sync_k()
        if self.analysis is not None and self.analysis.sweep_logprob is not None:
            self.refresh_sweep()

    def _sync_k(self) -> None:
        k_input = self.query_one("#trunc-k", Input)
        k_input.placeholder = str(self.view.layer)
        follow = self.query_one("#trunc-follow", Label)
        text = "follows layer" if not k_input.value else "fixed (clear to follow)"
        if str(follow.content) != text:  # a Label update relayouts the whole screen
            follow.update(text)

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
        self.post_message(TruncationRequested(layer, strategy, keep))

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
            live.append(f"{self.analysis.answer!r}", "bold")
            live.append(f"  log p {self._baseline():+.2f}\n", "dim")
        return live

    def show_running(self, layer: int, strategy: str, keep: int | None, text: str = "") -> None:
        live = self._baseline_line()
        strat = strategy if keep is None else f"{strategy}-{keep}"
        live.append(f"K={layer} {strat}  ", "bold")
        live.append(repr(text) if text else "…", "italic")
        live.append(" ▌", "blink")
        self.query_one("#trunc-live", Static).update(live)

    def show_done(self, run: TruncationRun) -> None:
        live = self._baseline_line()
        live.append_text(run_line(run, self._baseline()))
        self.query_one("#trunc-live", Static).update(live)
        self.refresh_results()

    def show_idle(self, note: str = "") -> None:
        live = Text(no_wrap=True, overflow="ellipsis")
        if self.analysis is not None:
            live.append("baseline  ", "dim")
            live.append(f"{self.analysis.answer!r}", "bold")
            live.append(f"  log p {self._baseline():+.2f}", "dim")
        if note:
            live.append("\n" + note, "red")
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
        for run in reversed(a.truncations[-8:]):
            text.append("\n")
            text.append_text(run_line(run, self._baseline()))
        results.update(text)

    def set_sweep_progress(self, done: int, total: int) -> None:
        bar = self.query_one("#sweep-progress", ProgressBar)
        bar.display = True
        bar.update(total=max(1, total), progress=done)
        self.query_one("#sweep-label", Label).update(f"sweep K {min(done, max(0, total - 1))}/{max(0, total - 1)}")

    def refresh_sweep(self) -> None:
        a = self.analysis
        curve = self.query_one("#sweep-curve", TextView)
        if a is None or a.sweep_logprob is None or a.sweep_same is None:
            curve.set_text(Text("no sweep yet · s runs one (x cancels)", style="dim"))
            self.query_one("#sweep-progress").display = False
            return
        L = a.num_layers
        bar = self.query_one("#sweep-progress", ProgressBar)
        if bar.display:
            bar.display = False
        label = self.query_one("#sweep-label", Label)
        if str(label.content) != f"sweep K=0..{L}":  # updates relayout: only when it changes
            label.update(f"sweep K=0..{L}")
        width = max(20, self.content_region.width)
        curve.set_text(sweep_text(a, width, self.view.layer))
