"""SVG snapshots of the logit-lens map and the words display at 80x24 and 200x60 (update with
`pytest --snapshot-update`). At layer 5 the words display writes `the L0` over the background,
`circle` (with `L5` where it has room) over the disc and `blue` over the square."""

from __future__ import annotations

import pytest
from support.fake_engine import make_analysis, make_lens

from flowtui.ui.app import FlowtuiApp


def lensed():
    a = make_analysis(num_layers=8)
    a.lens = make_lens(a)  # as a snapshot made with --lens: no model needed
    return a


@pytest.mark.parametrize("size", [(80, 24), (200, 60)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("words", [False, True], ids=["lens", "words"])
def test_lens_map_at_each_size(snap_compare, size, words):
    app = FlowtuiApp(analysis=lensed(), snapshot_path="lens.flowtui")
    press = ["m", "m"] + (["m"] if words else []) + ["right"] * 5
    assert snap_compare(app, terminal_size=size, press=press)
