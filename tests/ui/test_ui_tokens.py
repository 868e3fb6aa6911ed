"""The token cursor: every panel follows one answer token (docs/definitions.md, "Per-token
quantities"); truncation of a many-word answer marks the changed words and the sweep shows how
much of the answer survived at each K. SVG snapshots (update with `pytest --snapshot-update`)
and Pilot checks of what each panel shows."""

from __future__ import annotations

import numpy as np
import pytest
from support.fake_engine import make_analysis

from flowtui.engine.analysis import Sweep, TruncationRun, cliff_layer
from flowtui.ui.app import FlowtuiApp
from flowtui.ui.state import focused
from flowtui.ui.widgets.sweep_chart import sweep_overlap

CAPTION = ("A", " red", " circle", " left", " of", " a", " blue", " square", " and", " a",
           " green", " triangle", " on", " the", " right", ".")


def caption_analysis(per_token: bool = True):
    """A many-token answer with per-token arrays, a sweep whose answers lose words below the
    cliff, and one truncation run."""
    a = make_analysis(num_layers=12, answer_tokens=CAPTION, per_token=per_token)
    a.answer_logprobs = np.linspace(-0.05, -2.0, len(CAPTION)).astype(np.float32)
    L = a.num_layers
    answers = (["A blue square ."] * 2 + ["A red circle left of a blue square ."] * 2
               + [a.answer] * (L - 3))
    same = np.array([x == a.answer for x in answers])
    lp = np.linspace(-6.0, -0.4, L + 1).astype(np.float32)
    a.set_sweep(Sweep(lp, same, answers, cliff_layer(same)))
    a.truncations.append(TruncationRun(2, "all", None, None, "A red circle left of a blue "
                                       "square .", [1, 2], -3.0, False, 0.1))
    return a


async def to_token_3(pilot) -> None:
    await pilot.press("right", "right", "full_stop", "full_stop", "full_stop")
    await pilot.pause()
    pilot.app.clear_notifications()
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (200, 60)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_token_cursor_snapshot(snap_compare, size):
    app = FlowtuiApp(analysis=caption_analysis(), snapshot_path="caption.flowtui")
    assert snap_compare(app, terminal_size=size, run_before=to_token_3)


@pytest.mark.parametrize("size", [(80, 24), (200, 60)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_whole_caption_snapshot(snap_compare, size):
    # Whole answer: the long answer wraps; the sweep's "kept" row and the marked words show.
    app = FlowtuiApp(analysis=caption_analysis(), snapshot_path="caption.flowtui")

    async def settle(pilot) -> None:
        await pilot.press("right", "right")
        await pilot.pause()
        pilot.app.clear_notifications()
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=settle)


async def test_every_panel_follows_the_chosen_token():
    a = caption_analysis()
    app = FlowtuiApp(analysis=a, snapshot_path="caption.flowtui")
    async with app.run_test(size=(160, 50)) as pilot:
        screen = app.explorer
        await pilot.press("right")
        assert screen.view.answer_token is None
        await pilot.press("full_stop", "full_stop")  # whole answer -> token 1 -> token 2
        await pilot.pause()
        assert screen.view.answer_token == 1
        # The flow panel draws token 1's shares; the map draws token 1's CAM.
        flow = screen.flow_panel
        assert "token 2/16 “red”" in str(flow.border_title)
        shown = str(flow.render())
        share = a.token_shares[1, 1, 1]
        assert f"{share:.3f}" in shown
        assert f"{a.shares[1, 1]:.3f}" not in shown or np.isclose(share, a.shares[1, 1])
        image = screen.image_panel
        assert "token 2/16" in str(image.border_title)
        np.testing.assert_array_equal(image.token_map().values, a.token_cam[1])
        assert "▸" in str(screen.answer_panel.render())
        # The heads table follows too.
        await pilot.press("g")
        await pilot.pause()
        np.testing.assert_array_equal(focused(a, 1).head_shares, a.token_head_shares[1])
        # Attention map mode follows the token.
        await pilot.press("m")
        await pilot.pause()
        values = image.token_map().values  # scaled per layer and view: compare the peaks
        np.testing.assert_array_equal(values.argmax(axis=1),
                                      a.token_attention[1].argmax(axis=1))
        assert (values.argmax(axis=1) != a.attention_tokens.argmax(axis=1)).any()
        # The cursor stops at the ends; the comma goes back; a returns to the whole answer.
        await pilot.press(*["full_stop"] * 30)
        assert screen.view.answer_token == len(CAPTION) - 1
        await pilot.press("comma")
        assert screen.view.answer_token == len(CAPTION) - 2
        await pilot.press("A")
        await pilot.pause()
        assert screen.view.answer_token is None
        assert str(flow.border_title) == "Flow · attention shares"
        assert "token" not in str(image.border_title)


async def test_token_keys_only_where_the_answer_has_tokens():
    app = FlowtuiApp(analysis=make_analysis(num_layers=6), snapshot_path="x.flowtui")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.explorer
        assert screen.check_action("answer_token", (1,)) is False
        await pilot.press("full_stop", "A")
        assert screen.view.answer_token is None


async def test_map_says_whole_answer_cam_where_no_token_cam():
    a = caption_analysis()
    a.token_cam = None  # analysed with --no-per-token: shares and attention per token only
    app = FlowtuiApp(analysis=a, snapshot_path="caption.flowtui")
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.press("full_stop")
        await pilot.pause()
        image = app.explorer.image_panel
        assert "whole-answer CAM" in str(image.border_title)
        np.testing.assert_array_equal(image.token_map().values, a.cam_tokens)


def test_sweep_overlap_per_k():
    a = caption_analysis()
    kept = sweep_overlap(a)
    assert kept.shape == (a.num_layers + 1,)
    assert kept[-1] == 1.0 and kept[5] == 1.0
    assert 0 < kept[0] < kept[2] < 1.0
    one_word = make_analysis(num_layers=4)
    one_word.set_sweep(Sweep(np.zeros(5, np.float32), np.ones(5, bool), ["Yes."] * 5, 0))
    assert sweep_overlap(one_word) is None  # "Yes." is one word: same/different says it all
