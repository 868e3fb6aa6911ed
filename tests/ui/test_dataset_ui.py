"""The dataset browser under Textual's Pilot: curves, table, filter and sort, and Enter opening a
sample in the explorer from its snapshot or by analysing it (fake engine: no model)."""

from __future__ import annotations

import numpy as np
import pytest
from support.dataset_helpers import write_pope
from support.fake_engine import FakeEngine, fake_factory

from flowtui.cli import main
from flowtui.dataset.browse import RunView
from flowtui.dataset.readers import open_dataset
from flowtui.dataset.runner import build_config, run_dataset
from flowtui.ui.dataset_screen import DatasetApp, DatasetScreen, curves_text

N = 6


class VaryingFake(FakeEngine):
    """A fake whose cliff depends on the question, so samples differ."""

    def analyze(self, image, question, max_new_tokens=32, progress=None, cam=True,
                    self_check=True, per_token=False):
        self.cliff = len(question) % 4
        return super().analyze(image, question, max_new_tokens, progress, cam)


def _make_run(tmp_path, snapshots: bool):
    extra = [{"question_id": 99, "image": "img/gone.png", "text": "Is it?", "label": "yes"}]
    data = write_pope(tmp_path / "data", N, extra=extra)
    src = open_dataset(data)
    out = tmp_path / ("snap" if snapshots else "plain")
    engine = VaryingFake(num_layers=4)

    def analyze_checking_image(image, *a, **kw):
        from flowtui.engine.images import load_image

        load_image(image)
        return VaryingFake.analyze(engine, image, *a, **kw)

    engine.analyze = analyze_checking_image
    run_dataset(src, build_config(src, None, snapshots=snapshots, max_new_tokens=4), engine, out)
    return RunView.load(out)


@pytest.fixture
def snap_run(tmp_path):
    return _make_run(tmp_path, snapshots=True)


@pytest.fixture
def plain_run(tmp_path):
    return _make_run(tmp_path, snapshots=False)


def notes(app) -> list[str]:
    return [n.message for n in app._notifications]


async def _ready(app, pilot):
    await pilot.pause()
    await pilot.pause()
    assert isinstance(app.screen, DatasetScreen)
    return app.screen


def _shown(screen) -> list[int]:
    table = screen.table
    return [int(table.coordinate_to_cell_key((r, 0)).row_key.value) for r in range(table.row_count)]


async def test_table_filters_and_sorts(plain_run):
    recs = {r["index"]: r for r in plain_run.records}
    assert len(recs) == N + 1 and "error" in recs[N]
    app = DatasetApp(plain_run)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _ready(app, pilot)
        assert _shown(screen) == list(range(N + 1))
        curves = str(screen.query_one("#ds-curves").render())
        assert "dataset cliff" in curves and "all" in curves
        await pilot.press("slash", *"wrong")
        await pilot.pause()
        wrong = [i for i, r in recs.items() if "error" not in r and r["baseline"]["score"] < 1]
        assert wrong and _shown(screen) == wrong
        box = screen.query_one("#ds-filter")
        box.value = "wrong cliff>=x"  # a bad term keeps the last good filter, and says why
        await pilot.pause()
        assert "is not a number" in box.border_subtitle and _shown(screen) == wrong
        box.value = "cliff>=2"
        await pilot.pause()
        assert box.border_subtitle == ""
        assert _shown(screen) == [i for i, r in recs.items() if (r.get("cliff") or -1) >= 2]
        await pilot.press("ctrl+a", "ctrl+k", "escape")  # clear the filter, back to the table
        await pilot.pause()
        assert screen.table.has_focus and screen.table.row_count == N + 1
        await pilot.press("s", "s")  # index -> correct -> cliff
        await pilot.pause()
        cliffs = [recs[i].get("cliff") for i in _shown(screen)]
        assert screen.sort == "cliff" and cliffs[:-1] == sorted(cliffs[:-1]) and cliffs[-1] is None
        await pilot.press("r")
        await pilot.pause()
        cliffs = [recs[i].get("cliff") for i in _shown(screen)]
        assert cliffs[:-1] == sorted(cliffs[:-1], reverse=True) and cliffs[-1] is None
        # Every explorer key is inert here (its panels are not on this screen).
        from flowtui.ui.app import KEY_BINDINGS

        keys = [b.key.split(",")[0] for b in KEY_BINDINGS if b.action not in ("help", "quit")]
        await pilot.press(*[k for k in keys if k not in ("s", "home", "end")])
        await pilot.pause()
        assert isinstance(app.screen, DatasetScreen) and not notes(app)


async def test_enter_opens_the_snapshot_and_d_comes_back(snap_run):
    app = DatasetApp(snap_run)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _ready(app, pilot)
        await pilot.press("down", "enter")
        await app.workers.wait_for_complete()  # the snapshot is read off the UI thread
        await pilot.pause()
        rec = snap_run.records[1]
        assert not isinstance(app.screen, DatasetScreen)
        assert app.analysis is not None and app.analysis.question == rec["question"]
        assert app.analysis.cliff_layer == rec["cliff"]  # the snapshot holds the sweep
        assert "sample 1001" in app.status.activity
        assert not app.truncation_panel.enabled  # no model: reruns are off, and it says so
        await pilot.press("right")  # the explorer's keys work on the sample
        assert app.view.layer == 1
        await pilot.press("d")
        await pilot.pause()
        assert app.screen is screen and screen.cursor_record["index"] == 1
        await pilot.press(*["down"] * N, "enter")  # the failed sample: a note, no explorer
        await pilot.pause()
        assert isinstance(app.screen, DatasetScreen)
        assert any("failed (input): image not found" in n for n in notes(app))


async def test_enter_analyses_with_the_model_and_reuses_the_stored_sweep(plain_run):
    engine = FakeEngine(num_layers=4)
    app = DatasetApp(plain_run, engine_factory=fake_factory(engine))
    async with app.run_test(size=(120, 40)) as pilot:
        await _ready(app, pilot)
        await pilot.press("down", "down", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.pause()
        rec = plain_run.records[2]
        assert app.analysis is not None and app.analysis.question == rec["question"]
        assert engine.calls == ["analyze"]  # no new sweep: the run's one is attached
        assert app.analysis.sweep_same.tolist() == rec["strategies"]["all"]["same"]
        assert app.analysis.cliff_layer == rec["cliff"]
        assert app.truncation_panel.enabled and app.stem == "sample-1002"


async def test_enter_without_snapshot_or_model_says_what_to_do(plain_run):
    app = DatasetApp(plain_run)
    async with app.run_test(size=(120, 40)) as pilot:
        await _ready(app, pilot)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, DatasetScreen) and app.analysis is None
        assert any("has no snapshot" in n and "--run-model" in n for n in notes(app))


def test_curves_text_marks_baseline_and_cliff():
    summary = {"num_layers": 3, "baseline_accuracy": 0.9, "baseline_ci95": [0.8, 0.95],
               "dataset_cliff": 2, "delta": 0.01, "strategies": {
                   "all": {"accuracy": [0.5, 0.6, 0.9, 0.9], "dataset_cliff": 2},
                   "random:8": {"accuracy": [0.8, 0.85, 0.9, 0.9], "dataset_cliff": 1}}}
    text = curves_text(summary, width=60, height=8)
    lines = text.plain.splitlines()
    assert len(lines) == 8 + 1 + 2 + 2  # chart, K axis, numbers, legend on two lines
    assert lines[0].lstrip().startswith("1.00") and "0.50" in lines[7]  # from below the min
    assert "┈" in lines[1] and lines[1].count("●") == 2  # baseline 0.9, `all` drawn on top
    assert lines[0][6 + 2 * 13 + 6] == "│"  # the cliff's column, K = 2
    assert "0.60" in lines[9] and lines[10].startswith("◆ ran")
    assert "random:8 cliff 1" in lines[11] and "dataset cliff K=2" in lines[12]
    assert curves_text({"strategies": {}}, 60).plain.startswith("no scored samples")
    assert np.isfinite(len(text))


def test_show_refuses_a_folder_without_a_run(tmp_path, capsys):
    assert main(["dataset", "show", str(tmp_path)]) == 2
    assert "holds no flowtui dataset run" in capsys.readouterr().err


def test_no_attribute_hides_a_textual_method(plain_run):
    """An attribute named like a method of Textual's App or Screen hides it: `self.run = run`
    made `flowtui dataset show` stop with "'RunView' object is not callable", and the Pilot
    never calls App.run(). (Attributes set in __init__; tests/test_smoke_pty.py starts the app
    for real.)"""
    from textual.app import App
    from textual.screen import Screen

    from flowtui.ui.app import FlowtuiApp
    from flowtui.ui.dataset_screen import SampleExplorer
    from flowtui.ui.explorer import ExplorerScreen

    for obj, base in ((DatasetApp(plain_run), App), (FlowtuiApp(), App),
                      (DatasetScreen(plain_run), Screen), (ExplorerScreen(), Screen),
                      (SampleExplorer(), Screen)):
        hidden = [name for name in vars(obj) if callable(getattr(base, name, None))]
        assert hidden == [], f"{type(obj).__name__}: {hidden} hide {base.__name__} methods"


async def test_the_explorer_follows_a_resize_made_on_the_dataset_screen(snap_run):
    """The explorer is another mode's screen: a resize while the dataset is up reaches it
    when it comes back (its size classes and footer)."""
    app = DatasetApp(snap_run)
    async with app.run_test(size=(120, 40)) as pilot:
        await _ready(app, pilot)
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not app.screen.has_class("-narrow")
        await pilot.press("d")
        await pilot.pause()
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.pause()
        assert not isinstance(app.screen, DatasetScreen)
        assert app.screen.has_class("-narrow") and app.screen.has_class("-short")
        assert not app.screen.query_one("Footer").show_command_palette


async def test_pin_a_sample_then_open_another_compares_them(snap_run):
    """The explorer's P on one sample, d, Enter on another: the compare screen, pinned = A;
    Escape comes back to the explorer on the second sample."""
    from flowtui.ui.compare_screen import CompareScreen

    app = DatasetApp(snap_run)
    async with app.run_test(size=(120, 40)) as pilot:
        await _ready(app, pilot)
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        first = app.analysis
        await pilot.press("P", "d")
        await pilot.pause()
        await pilot.press("down", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        assert screen.comparison.a is first
        assert screen.comparison.b.question == snap_run.records[1]["question"]
        assert "sample-1000" in str(screen.sides()[0].border_title)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.explorer and app.analysis is screen.comparison.b
