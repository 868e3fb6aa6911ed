"""The explorer's logit-lens map: `m` reaches it after CAM and attention and computes the lens
once through the engine jobs; the words display lists each layer's top words with the layer
each first tops a token; `/` maps another word; without a model the lens maps are refused."""

from __future__ import annotations

from support.fake_engine import FakeEngine, fake_factory, make_analysis, make_lens
from support.pilot import frame_styles, notes, settle

from flowtui.ui.app import FlowtuiApp
from flowtui.ui.screens import PathPrompt


def legend(app) -> str:
    return app.query_one("#image-legend").render().plain


async def test_m_computes_the_lens_once_and_cycles_through_it():
    engine = FakeEngine()
    app = FlowtuiApp(analysis=make_analysis(), engine_factory=fake_factory(engine))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        cam = frame_styles(app)
        await pilot.press("m")  # attention
        await settle(app, pilot)
        assert app.view.map_mode == "attention"
        await pilot.press("m")  # the lens: computed, then shown
        await settle(app, pilot)
        assert engine.calls.count("lens:None") == 1
        assert app.view.map_mode == "lens" and app.analysis.lens is not None
        assert app.image_panel.border_title.startswith("Lens · layer 0/7")
        assert "P('Yes')" in legend(app)
        assert frame_styles(app) != cam
        await pilot.press("m")  # words: no new computation
        await settle(app, pilot)
        assert app.view.map_mode == "words" and engine.calls.count("lens:None") == 1
        assert "the×" in legend(app) and "picture×" in legend(app)
        await pilot.press("end")  # the last layer: the disc reads circle, since layer 5
        await settle(app, pilot)
        assert "circle×" in legend(app) and "(L5)" in legend(app)
        await pilot.press("m")
        await settle(app, pilot)
        assert app.view.map_mode == "cam" and engine.calls.count("lens:None") == 1


async def test_slash_maps_another_word():
    engine = FakeEngine()
    app = FlowtuiApp(analysis=make_analysis(), engine_factory=fake_factory(engine))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("slash")
        await pilot.pause()
        assert isinstance(app.screen, PathPrompt)
        await pilot.press("ctrl+u", *"red", "enter")
        await settle(app, pilot)
        assert "lens:red" in engine.calls
        assert app.view.map_mode == "lens" and app.analysis.lens.word == "red"
        assert "P('red')" in legend(app) and "top from L3" in legend(app)
        await pilot.press("slash")
        await pilot.pause()
        await pilot.press("ctrl+u", *"zebra", "enter")
        await settle(app, pilot)
        assert any("vocabulary" in n for n in notes(app))
        assert app.analysis.lens.word == "red"  # a bad word changes nothing


async def test_without_a_model_the_lens_is_refused_unless_stored():
    app = FlowtuiApp(analysis=make_analysis())
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("m", "m")
        await settle(app, pilot)
        assert app.view.map_mode == "cam"
        assert any("needs a model" in n for n in notes(app))
    a = make_analysis()
    a.lens = make_lens(a)  # as a snapshot made with --lens
    app = FlowtuiApp(analysis=a)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("m", "m")
        await settle(app, pilot)
        assert app.view.map_mode == "lens"
