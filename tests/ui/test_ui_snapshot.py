"""SVG snapshot tests of the main screen (update with `pytest --snapshot-update`)."""

from __future__ import annotations

import numpy as np
import pytest
from support.fake_engine import make_analysis

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


def sized_analysis():
    """An analysis with everything a panel can show: a sweep with its cliff, a run, a note."""
    from flowtui.engine.analysis import Sweep, TruncationRun, cliff_layer

    a = make_analysis(num_layers=12)
    lp = np.array([-4.2, -3.5, -2.1, -0.9] + [-0.2] * 9, np.float32)
    same = np.array([k >= 3 for k in range(13)])
    a.set_sweep(Sweep(lp, same, ["No"] * 3 + ["Yes"] * 10, cliff_layer(same)))
    a.truncations.append(TruncationRun(2, "top", 16, None, "No", [1], -2.1, False, 0.1))
    a.notes = ["the model's tokenizer does not know: horse"]
    return a


SIZES = [(80, 24), (100, 30), (120, 40), (200, 60)]


async def layer_3_without_toasts(pilot) -> None:
    await pilot.press("right", "right", "right")
    await pilot.pause()
    pilot.app.clear_notifications()  # the note's toast would cover the truncation panel
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_main_screen_at_each_size(snap_compare, size):
    app = FlowtuiApp(analysis=sized_analysis(), snapshot_path="sizes.flowtui")
    assert snap_compare(app, terminal_size=size, run_before=layer_3_without_toasts)


@pytest.mark.parametrize("size", [(80, 24), (200, 60)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_help_at_each_size(snap_compare, size):
    app = FlowtuiApp(analysis=make_analysis(num_layers=12), snapshot_path="sizes.flowtui")
    assert snap_compare(app, terminal_size=size, press=["question_mark"])
