"""Pilot tests of the image panel's views and map modes (CAM / attention, sink exclusion)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from support.fake_engine import make_analysis, save_version_1
from support.pilot import frame_styles, notes, settle

from flowtui.engine.snapshot import load_snapshot
from flowtui.ui.app import FlowtuiApp
from flowtui.ui.screens import PathPrompt


def legend(app) -> str:
    return app.query_one("#image-legend").render().plain


def footer_keys(app) -> set[str]:
    return {b.binding.key for b in app.screen.active_bindings.values()}



def subtitle(panel) -> str:
    """The image panel's subtitle as shown (the getter gives markup: the □ is coloured)."""
    return panel._border_subtitle.plain if panel._border_subtitle is not None else ""

async def test_view_key_cycles_views_and_everything_follows():
    app = FlowtuiApp(analysis=make_analysis(layout="tiles"))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        panel = app.image_panel
        assert panel.border_title == "CAM · global (1/2) · layer 0/7"
        assert "global 1/2" in app.status.where
        global_frame, global_peak = frame_styles(app), panel.border_subtitle
        await pilot.press("w", "right")
        await pilot.pause()
        assert app.view.view == 1
        assert panel.border_title == "CAM · tiles (2/2) · layer 1/7"
        assert "tiles 2/2" in app.status.where
        assert panel.cam_view.view.view == 1
        await pilot.press("left")
        await pilot.pause()
        assert frame_styles(app) != global_frame  # the tiles are finer than the global view
        assert subtitle(panel).startswith("□ max at x ")
        assert panel.border_subtitle != global_peak
        await pilot.press("w")
        await pilot.pause()
        assert app.view.view == 0 and frame_styles(app) == global_frame
        assert "w" in footer_keys(app)


async def test_view_key_is_hidden_and_inert_with_one_view():
    app = FlowtuiApp(analysis=make_analysis())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        before = frame_styles(app)
        await pilot.press("w")
        await pilot.pause()
        assert app.view.view == 0 and frame_styles(app) == before
        assert app.image_panel.border_title == "CAM · layer 0/7"
        keys = footer_keys(app)
        assert "w" not in keys and "m" in keys and "k" not in keys


async def test_map_key_switches_to_attention_and_back():
    a = make_analysis(layout="tiles")
    app = FlowtuiApp(analysis=a)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        cam_frame = frame_styles(app)
        assert "CAM" in legend(app) and "threshold 0.50" in legend(app)
        await pilot.press("m")
        await pilot.pause()
        assert app.view.map_mode == "attention"
        assert app.image_panel.border_title == "Attention · global (1/2) · layer 0/7"
        assert frame_styles(app) != cam_frame
        text = legend(app)
        # Scale 0..max of the global view's tokens: its sink (0.2) is the max.
        assert "attention" in text and text.rstrip().endswith("max 0.2")
        assert "attention" in app.status.where and "thr" not in app.status.where
        # The threshold belongs to the CAM: its keys are off the footer and do nothing here.
        keys = footer_keys(app)
        assert "left_square_bracket" not in keys and "k" in keys
        await pilot.press("left_square_bracket")
        assert app.view.threshold == pytest.approx(0.5)
        await pilot.press("right")
        await pilot.pause()
        assert app.image_panel.border_title.endswith("layer 1/7")
        assert legend(app).rstrip().endswith("max 0.2")
        await pilot.press("left", "m")
        await pilot.pause()
        assert app.view.map_mode == "cam" and frame_styles(app) == cam_frame


async def test_sink_toggle_rescales_and_counts():
    a = make_analysis(layout="tiles")
    app = FlowtuiApp(analysis=a)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("m", "w")
        await pilot.pause()
        panel = app.image_panel
        with_sinks = frame_styles(app)
        assert legend(app).rstrip().endswith("max 0.3")  # the largest tiles sink
        assert "sink" not in panel.border_subtitle
        await pilot.press("k")
        await pilot.pause()
        assert app.view.exclude_sinks
        tiles = a.view_tokens(1)
        rest = np.delete(a.attention_tokens[0, tiles], [0, 64, 128])
        assert legend(app).rstrip().endswith(f"max {rest.max():.3g}")
        assert "3 sinks excluded" in legend(app)
        # The outlined peak and the count (the longest form that fits the panel).
        assert subtitle(panel).endswith(("· 3 sink tokens excluded", "· 3 sinks excluded"))
        assert "sinks excluded" in app.status.where
        assert frame_styles(app) != with_sinks  # the rest of the map is no longer squashed
        await pilot.press("w")
        await pilot.pause()
        assert subtitle(panel).endswith(("· 1 sink token excluded", "· 1 sink excluded"))
        assert "1 sink excluded" in legend(app)
        # The peak skips the sinks: it is not the global view's top-left sink token.
        assert not subtitle(panel).startswith("□ max at x 0-16, y 0-12")
        await pilot.press("m")  # back to the CAM: the toggle does not apply, k is inert
        await pilot.pause()
        assert "sink" not in panel.border_subtitle and "k" not in footer_keys(app)
        await pilot.press("k")
        assert app.view.exclude_sinks


async def test_version_1_snapshot_opens_and_shows_as_before(tmp_path):
    a = make_analysis()
    save_version_1(a, tmp_path / "v1.flowtui")
    old = load_snapshot(tmp_path / "v1.flowtui")
    assert old.attention_tokens is None and old.views == ["image"]
    frames = []
    for analysis in (a, old):
        app = FlowtuiApp(analysis=analysis, snapshot_path="v1.flowtui")
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("right", "right")
            await pilot.pause()
            assert app.image_panel.border_title == "CAM · layer 2/7"
            assert subtitle(app.image_panel).startswith("□ max patch (")
            frames.append((frame_styles(app), legend(app), app.image_panel.border_subtitle))
            if analysis is old:
                await pilot.press("m", "w", "k")
                await pilot.pause()
                assert app.view.map_mode == "cam" and app.view.view == 0
                assert any("no attention map" in n for n in notes(app))
                assert app.image_panel.border_title == "CAM · layer 2/7"
    assert frames[0] == frames[1]


async def test_png_export_writes_the_map_on_screen_per_layer_and_view(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = FlowtuiApp(analysis=make_analysis(num_layers=3, layout="tiles"), image="shapes.png")
    async with app.run_test(size=(120, 40)) as pilot:
        for keys in (("p",), ("m", "k", "p")):
            await pilot.press(*keys)
            await pilot.pause()
            assert isinstance(app.screen, PathPrompt)
            title, hint = (str(label.render()) for label in app.screen.query("Label"))
            assert "one PNG per layer and view: layer-NN-VIEW.png" in hint
            assert ("attention map (sinks excluded)" in title) == ("m" in keys)
            await pilot.press("enter")
            await settle(app, pilot)
    cam_dir = next(tmp_path.glob("shapes-cam-*"))
    att_dir = next(tmp_path.glob("shapes-attention-*"))
    expect = [f"layer-{i:02d}-{v}.png" for i in range(3) for v in ("global", "tiles")]
    for folder in (cam_dir, att_dir):
        assert sorted(p.name for p in folder.iterdir()) == sorted(expect)
    with Image.open(cam_dir / "layer-00-tiles.png") as c, Image.open(att_dir / "layer-00-tiles.png") as t:
        assert not np.array_equal(np.asarray(c), np.asarray(t))


async def test_narrow_panel_keeps_the_layer_and_the_sink_count():
    app = FlowtuiApp(analysis=make_analysis(layout="tiles"))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("m", "k", "w", "right")
        await pilot.pause()
        title = app.image_panel.border_title
        assert len(title) <= app.image_panel.size.width - 4
        assert "tiles" in title and title.endswith("1/7")
        assert "−3 sinks" in legend(app) and "0.00" in legend(app)
