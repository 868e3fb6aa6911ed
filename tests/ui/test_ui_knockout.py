"""The explorer's knockout view: K shows it in place of the shares and runs the four standard
flows through the engine jobs (progress, x cancels); the curves follow the layer cursor; SVG
snapshots at 80×24 and 200×60 (update with `pytest --snapshot-update`)."""

from __future__ import annotations

import pytest
from support.fake_engine import FakeEngine, fake_factory, make_analysis

from flowtui.engine.knockout_flows import STANDARD_FLOWS
from flowtui.ui.app import FlowtuiApp
from flowtui.ui.widgets.flow_panel import FlowPanel
from flowtui.ui.widgets.knockout_panel import KnockoutPanel, knockout_text


def _notes(app) -> list[str]:
    return [n.message for n in app._notifications]


async def _settle(app, pilot) -> None:
    await app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


def with_knockout(num_layers: int = 12):
    a = make_analysis(num_layers=num_layers)
    FakeEngine(num_layers=num_layers).knockout(a, ",".join(STANDARD_FLOWS))
    return a


async def test_k_runs_the_standard_flows_and_shows_them_in_place_of_the_shares():
    engine = FakeEngine(num_layers=8, delay=0.01)
    app = FlowtuiApp(analysis=make_analysis(num_layers=8), engine_factory=fake_factory(engine))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert not app.query_one(KnockoutPanel).display and app.query_one(FlowPanel).display
        await pilot.press("K")
        await _settle(app, pilot)
        assert "knockout" in engine.calls
        k = app.analysis.knockout
        assert k is not None and k.flows == list(STANDARD_FLOWS) and k.rel_change.shape == (4, 8)
        assert app.query_one(KnockoutPanel).display and not app.query_one(FlowPanel).display
        assert any("knockout done" in n for n in _notes(app))
        await pilot.press("K")  # hides it again, and runs nothing more
        await _settle(app, pilot)
        assert engine.calls.count("knockout") == 1
        assert app.query_one(FlowPanel).display and not app.query_one(KnockoutPanel).display


async def test_the_knockout_can_be_cancelled():
    engine = FakeEngine(num_layers=8, delay=0.1)
    app = FlowtuiApp(analysis=make_analysis(num_layers=8), engine_factory=fake_factory(engine))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("K")
        await pilot.pause(0.25)
        assert app.busy == "knockout"
        assert "windows" in str(app.query_one(KnockoutPanel).render())
        await pilot.press("x")
        await _settle(app, pilot)
        assert app.busy is None and app.analysis.knockout is None
        assert any("cancelled" in n for n in _notes(app))


async def test_without_a_model_k_says_so():
    app = FlowtuiApp(analysis=make_analysis(num_layers=8))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("K")
        await pilot.pause()
        assert any("needs a model" in n for n in _notes(app))


def test_the_curves_follow_the_layer_and_print_a_fixed_scale():
    k = with_knockout(12).knockout
    at3 = knockout_text(k, 100, 3).plain
    at7 = knockout_text(k, 100, 7).plain
    assert "scale 0 to −100% (fixed)" in at3
    for f, name in enumerate(k.flows):
        assert name in at3
        assert f"{k.rel_change[f, 7]:+7.1f}%".replace("-", "−") in at7
    assert "at layer 3" in at3 and "at layer 7" in at7


@pytest.mark.parametrize("size", [(80, 24), (200, 60)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_knockout_view_at_each_size(snap_compare, size):
    app = FlowtuiApp(analysis=with_knockout(12), snapshot_path="knockout.flowtui")
    assert snap_compare(app, terminal_size=size, press=["K", "right", "right", "right", "right",
                                                        "right", "right"])
