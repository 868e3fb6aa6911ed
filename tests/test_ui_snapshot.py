"""SVG snapshot tests of the main screen (update with `pytest --snapshot-update`)."""

from __future__ import annotations

from fake_engine import make_analysis

from flowtui.ui.app import FlowtuiApp


def test_main_screen_fake(snap_compare):
    app = FlowtuiApp(analysis=make_analysis(num_layers=12, num_heads=8), snapshot_path="shapes.flowtui")
    assert snap_compare(app, terminal_size=(120, 40), press=["right", "right", "right", "g"])


def test_main_screen_small_heatmap(snap_compare):
    app = FlowtuiApp(analysis=make_analysis(num_layers=12), snapshot_path="shapes.flowtui", theme="flowtui-light")
    assert snap_compare(app, terminal_size=(80, 24), press=["o", "c", "right"])


def test_main_screen_tiles_attention_sinks_excluded(snap_compare):
    app = FlowtuiApp(analysis=make_analysis(num_layers=12, layout="tiles"), snapshot_path="tiles.flowtui")
    assert snap_compare(app, terminal_size=(120, 40), press=["w", "m", "k", "right", "right", "right"])
