"""The dataset compare screen (`flowtui dataset compare RUN ...` on a terminal): one panel per
run on one K cursor, by relative depth when depths differ, `e` writing the CSV and PNG."""

from __future__ import annotations

import pytest
from support.dataset_helpers import fake_run
from support.pilot import notes

from flowtui.dataset.compare import load_curves
from flowtui.ui.app import DatasetCompareApp
from flowtui.ui.dataset_compare_screen import DatasetCompareScreen, paired_k
from flowtui.ui.widgets.text_view import TextView


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("dcmp")
    return {name: str(fake_run(root / name, layers, n=8, seed=i))
            for i, (name, layers) in enumerate((("four", 4), ("eight", 8), ("eight2", 8)))}


def _text(app, wid: str) -> str:
    return app.screen.query_one(wid, TextView).text.plain


async def test_one_depth_shares_k_and_marks_each_cliff(runs):
    curves = load_curves([runs["eight"], runs["eight2"]])
    app = DatasetCompareApp(curves, 0.01)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DatasetCompareScreen) and not screen.relative
        assert screen.step == 8  # the cursor starts on the unmodified model
        cursor = _text(app, "#dcmp-cursor")
        assert cursor.startswith("cursor K = 8")
        for c in curves:  # each run's accuracy at K = 8 is its baseline
            assert f"K=8 acc {c.accuracy[8]:.3f}" in cursor
            assert f"{c.accuracy[8]:.3f}" == f"{c.baseline_accuracy:.3f}"
        await pilot.press("left", "left")
        cursor = _text(app, "#dcmp-cursor")
        assert cursor.startswith("cursor K = 6")
        lo, hi = curves[1].ci95[6]
        assert f"K=6 acc {curves[1].accuracy[6]:.3f} [{lo:.3f}, {hi:.3f}]" in cursor
        await pilot.press("home")
        assert _text(app, "#dcmp-cursor").startswith("cursor K = 0")
        await pilot.press("left")  # no step below 0
        assert screen.step == 0
        for i, c in enumerate(curves):
            panel = screen.query_one(f"#dcmp-run-{i}", TextView)
            axis = panel.text.plain.splitlines()[-1]
            if c.dataset_cliff is not None:
                assert "▲" in axis
            assert f"baseline {c.baseline_accuracy:.3f}" in str(panel.border_subtitle)


async def test_different_depths_follow_by_relative_depth(runs):
    curves = load_curves([runs["four"], runs["eight"]])
    app = DatasetCompareApp(curves, 0.01)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert screen.relative and screen.steps == 8
        assert "relative depth K/L" in screen.sub_title
        await pilot.press("left", "left")  # K/L = 6/8
        cursor = _text(app, "#dcmp-cursor")
        assert cursor.startswith("cursor K/L 0.75")
        assert f"{runs['four']}: K=3 " in cursor and f"{runs['eight']}: K=6 " in cursor
        assert paired_k(curves[0], 0.75) == 3


async def test_export_writes_the_csv_and_png_and_refuses_a_run_folder(runs, tmp_path):
    curves = load_curves([runs["four"], runs["eight"]])
    app = DatasetCompareApp(curves, 0.01)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await pilot.press("e")
        await pilot.pause()
        prompt = app.screen.query_one("Input")
        prompt.value = str(tmp_path / "figs")
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert (tmp_path / "figs" / "compare.csv").read_text().startswith("run,model,num_layers")
        assert (tmp_path / "figs" / "compare.png").read_bytes().startswith(b"\x89PNG")
        assert any("saved the curves" in n for n in notes(app))
        await pilot.press("e")
        await pilot.pause()
        app.screen.query_one("Input").value = runs["four"]
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert any("own folder" in n for n in notes(app)), notes(app)
        assert isinstance(app.screen, DatasetCompareScreen)


@pytest.mark.parametrize("size", [(80, 24), (200, 60)], ids=["80x24", "200x60"])
def test_dataset_compare_screen_at_each_size(runs, size, snap_compare):
    curves = load_curves([runs["four"], runs["eight"]])
    for c in curves:  # the temporary folders' names differ per session: show stable ones
        c.run = c.run.split("dcmp")[-1].lstrip("0123456789/")
    assert snap_compare(DatasetCompareApp(curves, 0.01), terminal_size=size,
                        press=["left", "left"])


def test_readme_lists_every_dataset_compare_key():
    from pathlib import Path

    from flowtui.ui.keys import DATASET_COMPARE_BINDINGS

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    for b in DATASET_COMPARE_BINDINGS:
        assert f"| `{b.id}` |" in readme, b.id
