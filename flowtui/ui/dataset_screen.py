"""The dataset results browser (`flowtui dataset show RUN_DIR`).

The `dataset` mode of the app: the accuracy curves per strategy with the baseline as a line and
the dataset cliff marked, and a table of samples (sortable; filterable by correctness, per-sample
cliff, baseline log-prob or text). Enter opens a sample in the app's explorer, from its stored
snapshot or by analysing it through the app's engine jobs; `d` in the explorer comes back.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
from rich.text import Text
from textual import work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static
from textual.worker import Worker

from flowtui.dataset.browse import SORTS, RunView, correct, hallucinated, parse_filter
from flowtui.engine.analysis import Analysis, Sweep, cliff_layer
from flowtui.engine.errors import FlowtuiError
from flowtui.textsafe import visible
from flowtui.ui.app import FlowtuiApp
from flowtui.ui.explorer import ExplorerScreen
from flowtui.ui.jobs import EngineFactory, one_line, report_worker_error
from flowtui.ui.keys import HELP_NOTES, KEY_BINDINGS
from flowtui.ui.screens import HelpScreen
from flowtui.ui.widgets.curves import CurvesView, curves_text

__all__ = ["DatasetApp", "DatasetScreen", "SampleExplorer", "curves_text", "run_dataset_browser"]

# The app's own keys, kept here as everywhere: ? lists the explorer's keys, q quits.
_APP_KEYS = [b for b in KEY_BINDINGS if b.id in ("app.help", "app.quit")]

COLUMNS = (("index", "#"), ("id", "id"), ("question", "question"), ("reference", "ref"),
           ("answer", "baseline answer"), ("correct", "✓"), ("cliff", "cliff"),
           ("logp", "log p"), ("drop", "Δ log p K=0"))
SORT_ORDER = ("index", "correct", "cliff", "logp")


def _short(value: Any, n: int) -> Text:
    """A cell from the results file: one line, at most `n` characters, escapes made visible,
    and a Text (a str cell would be parsed as markup)."""
    text = value if isinstance(value, str) else "" if value is None else str(value)
    text = visible(" ".join(text.split()))
    return Text(text if len(text) <= n else text[: n - 1] + "…")


def answer_cell(rec: dict[str, Any]) -> Text:
    """The baseline answer; a caption (chair runs) longer, its hallucinated words in red."""
    caption = "chair" in rec["baseline"]
    cell = _short(rec["baseline"]["answer"], 40 if caption else 24)
    words = hallucinated(rec)
    if words:
        cell.highlight_words(words, "bold red underline", case_sensitive=False)
    return cell


def table_row(rec: dict[str, Any]) -> tuple:
    idx, sid = Text(str(rec["index"]), "dim"), _short(rec.get("id"), 12)
    q, ref = _short(rec.get("question"), 48), _short(rec.get("reference"), 10)
    if "error" in rec:
        error = _short(f"✗ {rec['error']}", 40)
        error.stylize("red")
        return (idx, sid, q, ref, error, Text("!", "red"), "", "", "")
    ok = correct(rec)
    score = rec["baseline"]["score"]
    mark = Text("✓", "green") if ok else Text("✗" if score == 0 else f"{score:.2f}", "red")
    cliff = rec.get("cliff")
    lp = rec["baseline"]["logprob"]
    drop = rec["strategies"]["all"]["logprob"][0] - lp
    return (idx, sid, q, ref, answer_cell(rec), mark,
            Text("none" if cliff is None else str(cliff), "bold" if cliff else ""),
            f"{lp:.3g}", Text(f"{drop:+.2f}", "red" if drop < -1 else "dim"))


class DatasetScreen(Screen):
    """The results of one run: header, curves, filter and the table of samples."""

    BINDINGS = [
        *_APP_KEYS,
        Binding("slash", "focus_filter", "Filter", key_display="/", id="dataset.filter",
                tooltip="Filter: correct wrong error cliff>=5 logp<-1 or any text"),
        Binding("s", "cycle_sort", "Sort", id="dataset.sort",
                tooltip="Sort by index, correctness, cliff, baseline log-prob"),
        Binding("r", "reverse", "Reverse", id="dataset.reverse", tooltip="Reverse the order"),
        Binding("escape", "leave_filter", "Table", show=False, id="dataset.table",
                tooltip="Back to the table"),
    ]
    DEFAULT_CSS = """
    DatasetScreen { layout: vertical; }
    DatasetScreen #ds-header { height: auto; padding: 0 1; background: $boost; }
    DatasetScreen #ds-curves { height: 45%; min-height: 12; border: round $primary; padding: 0 1; }
    DatasetScreen #ds-filter { height: 3; border: round $secondary; }
    DatasetScreen #ds-table { height: 1fr; border: round $primary; }
    """

    class SampleChosen(Message):
        def __init__(self, record: dict[str, Any]) -> None:
            super().__init__()
            self.record = record

    def __init__(self, run: RunView) -> None:
        super().__init__(name="dataset")
        self.run = run
        self.sort = "index"
        self.reverse = False
        self.predicate = parse_filter("")
        self.shown: list[dict[str, Any]] = []
        # Looked up by Textual row keys, whose value is typed Optional
        self._by_key: dict[str | None, dict[str, Any]] = {str(r["index"]): r for r in run.records}
        self._cells: dict[str, tuple] = {}  # each record's row, built once (records never change)

    def compose(self) -> ComposeResult:
        yield Static(self._header(), id="ds-header")
        curves = CurvesView(self.run.summary, id="ds-curves")
        curves.border_title = "accuracy against K (truncate the image from layer K on)"
        yield curves
        yield Input(placeholder="filter: correct wrong error cliff>=5 cliff=none logp<-1 text…",
                    id="ds-filter")
        table: DataTable = DataTable(id="ds-table", cursor_type="row", zebra_stripes=True)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        yield table
        yield Footer(compact=True)

    def _header(self) -> Text:
        s, c = self.run.summary, self.run.config
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(f"{visible(c.model.get('name'))} ", "bold")
        t.append(f"on {visible(self.run.path.name)} · data {_short(c.data.get('path'), 60)}\n",
                 "dim")
        t.append(f"{s['samples']} scored", "bold")
        t.append(f" · {s['errors']} errors · {s['skipped']} not run · scoring {c.scoring}")
        if s.get("baseline_accuracy") is not None:
            t.append(f" · baseline {s['baseline_accuracy']:.3f}")
        if s.get("baseline_chair_i") is not None:
            t.append(f" · CHAIR_i {s['baseline_chair_i']:.3f} · CHAIR_s "
                     f"{s['baseline_chair_s']:.3f} (hallucinated words in red)")
        if s.get("dataset_cliff") is not None:
            t.append(" · dataset cliff ")
            t.append(f"K={s['dataset_cliff']}", "bold #e03131")
        return t

    def on_mount(self) -> None:
        self.refresh_table()
        self.query_one(DataTable).focus()

    @property
    def table(self) -> DataTable:
        return self.query_one(DataTable)

    def refresh_table(self) -> None:
        """Filter, sort, and fill the table, keeping the cursor on the same sample if shown."""
        table = self.table
        current = None
        if table.row_count:
            current = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        rows = [r for r in self.run.records if self.predicate(r)]
        key = SORTS[self.sort]
        # Failed samples and missing values stay last in either direction.
        present = [r for r in rows if not key(r)[0]]
        missing = [r for r in rows if key(r)[0]]
        self.shown = sorted(present, key=key, reverse=self.reverse) + sorted(missing, key=key)
        table.clear()
        for rec in self.shown:
            row_key = str(rec["index"])
            if row_key not in self._cells:
                self._cells[row_key] = table_row(rec)
            table.add_row(*self._cells[row_key], key=row_key)
        table.border_title = (f"samples: {len(self.shown)} of {len(self.run.records)} · sorted by "
                              f"{self.sort}{' (reversed)' if self.reverse else ''} · "
                              "⏎ opens in the explorer")
        if current is not None and current in {str(r["index"]) for r in self.shown}:
            table.move_cursor(row=table.get_row_index(current), animate=False)

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        box = self.query_one("#ds-filter", Input)
        try:
            self.predicate = parse_filter(event.value)
        except FlowtuiError as exc:
            box.border_subtitle = str(exc)
            return
        box.border_subtitle = ""
        self.refresh_table()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.table.focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        rec = self._by_key.get(event.row_key.value)
        if rec is not None:
            self.post_message(self.SampleChosen(rec))

    # --- a sample in the explorer ------------------------------------------------------------
    @property
    def _app(self) -> FlowtuiApp:
        return cast(FlowtuiApp, self.app)

    def on_dataset_screen_sample_chosen(self, message: SampleChosen) -> None:
        rec, jobs = message.record, self._app.jobs
        if "error" in rec:
            self.app.notify(f"sample {rec['id']} failed ({rec.get('stage', '?')}): "
                            f"{rec['error']}", severity="warning", timeout=8)
            return
        if jobs.refuse_if_busy():
            return
        snapshot = self.run.snapshot_path(rec)
        if snapshot is None and not jobs.can_load:
            self.app.notify(f"sample {rec['id']} has no snapshot (the run had no --snapshots); "
                            "pass --model M or --run-model to analyse it", severity="warning",
                            timeout=8)
            return
        self._read_sample_worker(rec, snapshot)

    @work(thread=True, exit_on_error=False, group="sample", exclusive=True)
    def _read_sample_worker(self, rec: dict[str, Any], snapshot: Path | None) -> None:
        # Reading a snapshot (zip, arrays, PNG) or a dataset row (the dataset opened, its image
        # decoded) takes time: off the UI thread, then back to it to show the result.
        app = self.app
        if snapshot is not None:
            from flowtui.engine.snapshot import load_snapshot

            try:
                analysis = load_snapshot(snapshot)
            except Exception as exc:  # noqa: BLE001 - the browser must survive a bad file
                app.call_from_thread(app.notify, one_line(exc),
                                     title="cannot open the snapshot", severity="error")
                return
            app.call_from_thread(self._open_stored, rec, snapshot, analysis)
            return
        try:
            image, question = self.run.sample_input(rec)
        except FlowtuiError as exc:
            app.call_from_thread(app.notify, one_line(exc), title="cannot read the sample",
                                 severity="error")
            return
        app.call_from_thread(self._analyse_sample, rec, image, question)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        report_worker_error(self.app, event)

    def _open_stored(self, rec: dict[str, Any], snapshot: Path, analysis: Analysis) -> None:
        explorer = self._to_explorer(rec)
        explorer.show_analysis(analysis)
        explorer.set_activity(f"sample {rec['id']} from {snapshot.name} · d: back to the "
                              "dataset", "ready")

    def _analyse_sample(self, rec: dict[str, Any], image: Any, question: str) -> None:
        if self._app.jobs.refuse_if_busy():  # something started while the sample was read
            return
        self._to_explorer(rec).analyze(image, question,
                                       label=f"analysing sample {rec['id']}…",
                                       prepare=partial(attach_stored_sweep, rec))

    def _to_explorer(self, rec: dict[str, Any]) -> ExplorerScreen:
        explorer = self._app.explorer
        self.app.switch_mode("explorer")
        explorer.stem = visible(f"sample-{rec['id']}")
        if self._app.jobs.can_load:
            explorer.allow_reruns(True)
        else:
            explorer.allow_reruns(False, "Truncation needs a model: reopen with `flowtui "
                                  "dataset show RUN_DIR --run-model` (or --model M) to rerun.")
        return explorer

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        key = {"index": "index", "id": "index", "correct": "correct", "cliff": "cliff",
               "logp": "logp"}.get(str(event.column_key.value))
        if key is None:
            return
        self.reverse = not self.reverse if key == self.sort else False
        self.sort = key
        self.refresh_table()

    def action_focus_filter(self) -> None:
        self.query_one("#ds-filter", Input).focus()

    def action_leave_filter(self) -> None:
        self.table.focus()

    def action_cycle_sort(self) -> None:
        self.sort = SORT_ORDER[(SORT_ORDER.index(self.sort) + 1) % len(SORT_ORDER)]
        self.reverse = False
        self.refresh_table()

    def action_reverse(self) -> None:
        self.reverse = not self.reverse
        self.refresh_table()

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(KEY_BINDINGS, HELP_NOTES))

    async def action_quit(self) -> None:
        await self.app.action_quit()

    def key_commands(self) -> Iterable[SystemCommand]:
        """The palette's entries for this screen (the app adds its own)."""
        yield SystemCommand(_APP_KEYS[0].description, f"? · {_APP_KEYS[0].tooltip}",
                            self.action_help)

    @property
    def cursor_record(self) -> dict[str, Any] | None:
        table = self.table
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self._by_key.get(key)


def stored_sweep(rec: dict[str, Any]) -> Sweep:
    """The run's `all` sweep of a sample, as the engine would return it."""
    s = rec["strategies"]["all"]
    same = np.asarray(s["same"], dtype=bool)
    return Sweep(np.asarray(s["logprob"], dtype=np.float32), same, list(s["answers"]),
                 cliff_layer(same))


def attach_stored_sweep(rec: dict[str, Any], a: Analysis) -> None:
    """Give a fresh analysis of `rec` the run's stored sweep when it reproduced the run's
    baseline answer (no need to sweep again)."""
    if a.sweep_same is None and a.answer == rec["baseline"]["answer"] \
            and len(rec["strategies"]["all"]["same"]) == a.num_layers + 1:
        a.set_sweep(stored_sweep(rec))


class SampleExplorer(ExplorerScreen):
    """The explorer of a dataset's samples: its keys, and `d` back to the dataset."""

    BINDINGS = [Binding("d", "dataset", "Dataset", id="dataset.back",
                        tooltip="Back to the dataset results")]

    def action_dataset(self) -> None:
        if not self.jobs.refuse_if_busy():
            self.app.switch_mode("dataset")


class DatasetApp(FlowtuiApp):
    """The app started on a dataset run: a `dataset` mode in front of the explorer. Wiring
    only; what Enter does is the dataset screen's."""

    EXPLORER = SampleExplorer

    def __init__(self, run: RunView, engine_factory: EngineFactory | None = None,
                 theme: str | None = None, **pixels) -> None:
        super().__init__(engine_factory=engine_factory, theme=theme,
                         max_new_tokens=run.config.max_new_tokens, **pixels)
        self.run_view = run  # not `run`: that would hide App.run(), which starts the app
        self.add_mode("dataset", partial(DatasetScreen, run))

    def on_mount(self) -> None:
        # The explorer (the default mode) is mounted by now, so a sample can be shown on it
        # at once; the dataset comes in front of it.
        self.call_later(self.switch_mode, "dataset")


def run_dataset_browser(run: RunView, engine_factory: EngineFactory | None = None,
                        theme: str | None = None, **pixels) -> int:
    """`pixels`: the app's graphics and map_style (FlowtuiApp)."""
    app = DatasetApp(run, engine_factory=engine_factory, theme=theme, **pixels)
    result = app.run()
    return int(result) if isinstance(result, int) else (app.return_code or 0)
