"""The compare screen (`flowtui compare A B`): one layer cursor for both sides, the numbers shown
equal `flowtui.compare.compare()`'s, its layout at 80x24 and 200x60 (SVG snapshots; update
with `pytest --snapshot-update`)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from support.fake_engine import make_analysis

from flowtui.compare import compare, joint_attention, nearest_layer
from flowtui.engine.analysis import GROUPS, cliff_layer
from flowtui.engine.snapshot import load_snapshot
from flowtui.ui.app import CompareApp
from flowtui.ui.compare_screen import CompareScreen
from flowtui.ui.screens import HelpScreen
from flowtui.ui.widgets.text_view import TextView


def _swept(a, same: list[bool]):
    a.sweep_same = np.array(same, dtype=bool)
    a.sweep_logprob = np.linspace(-3, 0, len(same)).astype(np.float32)
    a.sweep_answers = [a.answer] * len(same)
    a.cliff_layer = cliff_layer(a.sweep_same)
    return a


def pair(b_layers: int = 8, b_grid=(12, 12)):
    """A (8 layers, cliff 5) and B (another question, a random CAM, cliff 3)."""
    a = _swept(make_analysis(), [False] * 5 + [True] * 4)
    b = make_analysis(num_layers=b_layers, grid=b_grid, seed=3, question="Is there a blue square?")
    b.cam_tokens = np.random.default_rng(7).random(b.cam_tokens.shape).astype(np.float32)
    _swept(b, [False] * 3 + [True] * (b_layers - 2))
    return a, b


def app_for(a, b) -> CompareApp:
    return CompareApp(compare(a, b, files=("a.flowtui", "b.flowtui")))


def text(screen: CompareScreen, selector: str) -> str:
    return screen.query_one(selector, TextView).text.plain


async def test_the_layer_cursor_moves_both_sides():
    app = app_for(*pair())
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        await pilot.press("right", "right", "right")
        await pilot.pause()
        side_a, side_b = screen.sides()
        assert screen.shown_layers == (3, 3)
        assert side_a.cam_view.view.layer == 3 and side_b.cam_view.view.layer == 3
        assert "layer 3/7" in str(side_a.border_subtitle) and "layer 3/7" in str(
            side_b.border_subtitle)
        await pilot.press("left")
        await pilot.pause()
        assert side_a.cam_view.view.layer == 2 and side_b.cam_view.view.layer == 2
        await pilot.press("end")
        await pilot.press("right")  # past the last layer: stays
        await pilot.pause()
        assert screen.shown_layers == (7, 7)
        await pilot.press("home")
        await pilot.pause()
        assert screen.shown_layers == (0, 0)
        assert "relative depth" not in str(screen.query_one("#cmp-shares").border_title)


async def test_the_shares_diff_shown_is_a_minus_b_at_the_layer():
    a, b = pair()
    app = app_for(a, b)
    async with app.run_test(size=(100, 30)) as pilot:
        for layer in (0, 1, 2):
            shown = text(app.screen, "#cmp-shares-text").splitlines()
            for g, name in enumerate(GROUPS):
                row = next(r for r in shown if r.startswith(name))
                va, vb, diff = (float(x) for x in row.split()[-3:])
                assert va == pytest.approx(float(a.shares[layer, g]), abs=6e-4)
                assert vb == pytest.approx(float(b.shares[layer, g]), abs=6e-4)
                assert diff == pytest.approx(float(a.shares[layer, g] - b.shares[layer, g]),
                                             abs=6e-4)
            await pilot.press("right")
            await pilot.pause()


async def test_the_correlation_shown_is_compares():
    a, b = pair()
    c = compare(a, b)
    app = app_for(a, b)
    async with app.run_test(size=(100, 30)) as pilot:
        for lc in c.layers:
            corr = text(app.screen, "#cmp-corr")
            if lc.cam_correlation is None:  # A's last CAM is all zero
                assert "CAM r n/a: a map is constant at this layer" in corr
            else:
                shown = float(re.search(r"CAM r ([+-]\d\.\d{3})", corr).group(1))
                assert abs(shown - lc.cam_correlation) <= 0.0005
                assert "-0.000" not in corr  # a value that rounds to zero has no sign
            await pilot.press("right")
            await pilot.pause()


async def test_cam_correlation_not_comparable_says_why():
    app = app_for(*pair(b_grid=(8, 8)))
    async with app.run_test(size=(100, 30)):
        assert "CAM r n/a: different numbers of image tokens (144 and 64)" in text(
            app.screen, "#cmp-corr")


async def test_different_depths_pair_by_relative_depth():
    a, b = pair(b_layers=12)
    app = app_for(a, b)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        for la in range(4):
            lb = nearest_layer(la, 8, 12)
            assert screen.shown_layers == (la, lb)
            side_a, side_b = screen.sides()
            assert (side_a.cam_view.view.layer, side_b.cam_view.view.layer) == (la, lb)
            title = str(screen.query_one("#cmp-shares").border_title)
            assert "by relative depth l/L" in title and f"B layer {lb}/11" in title
            await pilot.press("right")
            await pilot.pause()


async def test_attention_maps_share_one_scale():
    a, b = pair()
    c = compare(a, b)
    app = app_for(a, b)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("right", "m")
        await pilot.pause()
        va, vb, vmax, _ = joint_attention(c)
        side_a, side_b = app.screen.sides()
        for side, values in ((side_a, va), (side_b, vb)):
            assert side.cam_view._key == ("attention-joint-0", False, None)
            np.testing.assert_array_equal(side.cam_view._renderers[side.cam_view._key].values,
                                          values)
        assert f"one scale 0..{vmax[1]:.3g}" in text(app.screen, "#cmp-corr")
        raw = max(float(a.attention_tokens[1].max()), float(b.attention_tokens[1].max()))
        assert vmax[1] == pytest.approx(raw)
        await pilot.press("m")
        await pilot.pause()
        assert side_a.cam_view._key == ("cam", False, None)


async def test_k_leaves_both_sides_sinks_out_of_the_one_scale():
    a, b = pair()
    a.attention_tokens = np.full(a.attention_tokens.shape, 0.01, np.float32)
    a.attention_tokens[:, 7] = 0.9  # one sink at every layer of A
    b.attention_tokens = np.random.default_rng(5).uniform(
        0.01, 0.05, b.attention_tokens.shape).astype(np.float32)
    c = compare(a, b)
    app = app_for(a, b)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        assert screen.check_action("toggle_sinks", ()) is False  # the CAM has no sinks
        await pilot.press("k")
        await pilot.pause()
        assert not screen.view.exclude_sinks
        await pilot.press("m", "k")
        await pilot.pause()
        assert screen.view.exclude_sinks
        joint = joint_attention(c, exclude_sinks=True)
        side_a, side_b = screen.sides()
        assert side_a.cam_view._key == ("attention-joint-0", True, None)
        np.testing.assert_array_equal(side_b.cam_view._renderers[side_b.cam_view._key].values,
                                      joint.values_b)
        n = int(joint.sinks[0])
        assert n >= 1 and f"{n} sink token" in text(screen, "#cmp-corr")
        assert joint.vmax[0] <= 0.05  # the scale is no longer the sink's
        await pilot.press("k")
        await pilot.pause()
        assert "sink" not in text(screen, "#cmp-corr")
        assert side_a.cam_view._key == ("attention-joint-0", False, None)


async def test_help_lists_the_compare_keys_and_q_quits():
    app = app_for(*pair())
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        shown = app.screen.query_one("#help-keys").render().plain
        assert "compare.layer.next" in shown and "compare.png" in shown
        assert "compare.back" not in shown  # not opened from the explorer
        await pilot.press("escape", "q")
        await pilot.pause()
    assert app.return_code == 0


async def test_exports_the_pair_and_the_figure(tmp_path: Path):
    from textual.widgets import Input

    a, b = pair()
    app = app_for(a, b)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("e")
        await pilot.pause()
        app.screen.query_one(Input).value = str(tmp_path / "pair")
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.press("p")
        await pilot.pause()
        app.screen.query_one(Input).value = str(tmp_path / "pair.png")
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
    assert load_snapshot(tmp_path / "pair-a.flowtui").question == a.question
    assert load_snapshot(tmp_path / "pair-b.flowtui").question == b.question
    assert (tmp_path / "pair.png").read_bytes().startswith(b"\x89PNG")


def layer_3(pilot):
    async def run(pilot) -> None:
        await pilot.press("right", "right", "right")
        await pilot.pause()

    return run(pilot)


@pytest.mark.parametrize("size", [(80, 24), (200, 60)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_compare_screen_at_each_size(snap_compare, size):
    assert snap_compare(app_for(*pair()), terminal_size=size, run_before=layer_3)


def test_compare_screen_relative_depth_80x24(snap_compare):
    assert snap_compare(app_for(*pair(b_layers=12)), terminal_size=(80, 24), run_before=layer_3)


async def test_pin_in_the_explorer_then_the_next_analysis_opens_the_compare():
    """P pins the analysis on screen; the next one the explorer shows (as the dataset screen
    shows a sample) opens the compare screen, pinned = A; Escape comes back to the explorer."""
    from flowtui.ui.app import FlowtuiApp

    a, b = pair(b_layers=12)
    app = FlowtuiApp(analysis=a, snapshot_path="a.flowtui")
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("right", "P")
        await pilot.pause()
        assert app.explorer.pinned is not None and app.explorer.pinned[0] is a
        app.explorer.show_analysis(a)  # the pinned one again: nothing to compare
        await pilot.pause()
        assert not isinstance(app.screen, CompareScreen)
        app.explorer.show_analysis(b)
        await pilot.pause()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        assert screen.comparison.a is a and screen.comparison.b is b
        assert "by relative depth l/L" in str(screen.query_one("#cmp-shares").border_title)
        await pilot.press("right")
        await pilot.pause()
        assert screen.shown_layers == (1, nearest_layer(1, 8, 12))
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.explorer and app.analysis is b
        assert app.explorer.pinned is None  # one comparison per pin
        # Pinning again and another analysis: a new compare screen replaces the old one.
        await pilot.press("P")
        app.explorer.show_analysis(a)
        await pilot.pause()
        await pilot.pause()
        assert isinstance(app.screen, CompareScreen) and app.screen is not screen
        assert app.screen.comparison.a is b and app.screen.comparison.b is a


async def test_pin_twice_unpins_and_nothing_to_pin_is_a_note():
    from flowtui.ui.app import FlowtuiApp

    app = FlowtuiApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("P")
        await pilot.pause()
        assert app.explorer.pinned is None
        assert any("nothing to pin" in n.message for n in app._notifications)
    a, _ = pair()
    app = FlowtuiApp(analysis=a)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("P", "P")
        await pilot.pause()
        assert app.explorer.pinned is None


async def test_text_from_the_snapshots_is_drawn_visible():
    """A question with an escape sequence is shown as text, never sent to the terminal."""
    a, b = pair()
    b.question = "red?\x1b[2J\x07"
    app = CompareApp(compare(a, b, files=("a.flowtui", "b\x1b[31m.flowtui")))
    async with app.run_test(size=(100, 30)):
        side_b = app.screen.sides()[1]
        info = side_b.query_one(".side-info", TextView).text.plain
        assert "\x1b" not in info and "\\e[2J" in info
        assert "\x1b" not in str(side_b.border_title)


async def test_a_refused_export_is_a_notification(tmp_path: Path):
    from textual.widgets import Input

    a, b = pair()
    (tmp_path / "photo.png").write_bytes(b"\x89PNG not ours")
    app = app_for(a, b)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("p")
        await pilot.pause()
        app.screen.query_one(Input).value = str(tmp_path / "photo.png")
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        errors = [n for n in app._notifications if n.severity == "error"]
        assert errors and "was not written by `flowtui compare`" in errors[-1].message
        assert isinstance(app.screen, CompareScreen)
    assert (tmp_path / "photo.png").read_bytes() == b"\x89PNG not ours"


async def test_tall_terminals_add_the_log_p_rows():
    a, b = pair()
    app = app_for(a, b)
    async with app.run_test(size=(120, 40)):
        sweep = app.screen.sides()[0].sweep.text.plain
        assert sweep.startswith("logp") and "▲ cliff 5" in sweep
    async with app_for(a, b).run_test(size=(80, 24)) as pilot:
        assert not pilot.app.screen.sides()[0].sweep.text.plain.startswith("logp")


def test_compare_from_a_pin_80x24(snap_compare):
    """Opened from the explorer's pin: the footer offers Esc back to the explorer."""
    from flowtui.ui.app import FlowtuiApp

    a, b = pair()

    async def pin_then_show_b(pilot) -> None:
        await pilot.press("P")
        await pilot.pause()
        pilot.app.explorer.show_analysis(b)
        await pilot.pause()
        await pilot.pause()
        pilot.app.clear_notifications()
        await pilot.press("right")
        await pilot.pause()

    app = FlowtuiApp(analysis=a, snapshot_path="a.flowtui")
    assert snap_compare(app, terminal_size=(80, 24), run_before=pin_then_show_b)


async def test_w_cycles_both_sides_views():
    """Tiles on both sides: w shows the tiles view on both, on one attention scale per view; a
    one-view side keeps its one view."""
    a = make_analysis(layout="tiles")
    b = make_analysis(layout="tiles", seed=3, question="Is there a blue square?")
    c = compare(a, b)
    app = CompareApp(c)
    async with app.run_test(size=(120, 40)) as pilot:
        side_a, side_b = app.screen.sides()
        assert "global" in str(side_a.border_subtitle)
        await pilot.press("w", "m")
        await pilot.pause()
        assert side_a.cam_view.view.view == 1 and side_b.cam_view.view.view == 1
        assert "tiles" in str(side_a.border_subtitle) and "tiles" in str(side_b.border_subtitle)
        va, vb, vmax, _ = joint_attention(c, 1)
        np.testing.assert_array_equal(side_b.cam_view._renderers[side_b.cam_view._key].values, vb)
        assert f"0..{vmax[0]:.3g}" in text(app.screen, "#cmp-corr")
    app = CompareApp(compare(a, make_analysis()))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("w")
        await pilot.pause()
        side_a, side_b = app.screen.sides()
        assert side_a.cam_view.view.view == 1 and side_b.cam_view.view.view == 0
    app = app_for(*pair())
    async with app.run_test(size=(120, 40)) as pilot:
        assert app.screen.check_action("cycle_view", ()) is False  # one view each: no w


def test_readme_lists_every_compare_key():
    from flowtui.ui.keys import COMPARE_BINDINGS

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    for b in COMPARE_BINDINGS:
        assert f"| `{b.id}` |" in readme, b.id
