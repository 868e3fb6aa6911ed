"""No snapshot that opens may crash the explorer on any key: edge-case analyses that pass the
snapshot checks (one layer, one head, one feature token, a one-token answer, an empty answer,
several views, a view with no regions or no tokens, a sweep or none, version 1, text that looks
like markup) are saved, reopened and driven with every binding, with and without a model for
reruns."""

from __future__ import annotations

import numpy as np
import pytest
from support.fake_engine import FakeEngine, fake_factory, make_analysis, save_version_1

from flowtui.engine.analysis import Sweep, TruncationRun, cliff_layer, grid_regions
from flowtui.engine.snapshot import load_snapshot
from flowtui.ui.app import KEY_BINDINGS, FlowtuiApp


def _sweep(a, same):
    same = np.asarray(same, dtype=bool)
    lp = np.linspace(-4, -0.01, len(same)).astype(np.float32)
    a.set_sweep(Sweep(lp, same, ["Yes" if s else "No" for s in same], cliff_layer(same)))
    return a


def tiny():
    """One layer, one head, one feature token, a one-token answer."""
    return make_analysis(num_layers=1, num_heads=1, grid=(1, 1), answer_tokens=("Yes",))


def tiny_swept():
    a = _sweep(tiny(), [False, True])
    a.truncations.append(TruncationRun(0, "top", 1, None, "Yes", [5], -0.2, True))
    a.truncations.append(TruncationRun(1, "random", 0, 3, "", [], -9.5, False))
    return a


def empty_answer():
    """An answer whose one token shows as nothing (a model that stopped on a blank token)."""
    a = make_analysis(num_layers=2, grid=(2, 2), answer_tokens=("",))
    assert a.answer == ""
    return _sweep(a, [False, False, True])


def tiles_no_regions():
    """Two views; every token of the `tiles` view has no region (all NaN)."""
    a = make_analysis(num_layers=3, layout="tiles")
    a.token_regions[a.token_views == 1] = np.nan
    return _sweep(a, [False, False, False, False])  # no cliff: even K = L differs


def three_views_one_empty():
    """Three views, one of them without any token; all-zero CAM and attention."""
    a = make_analysis(num_layers=2, grid=(2, 3))
    a.views = ["global", "tiles", "unused"]
    a.token_views = np.array([0, 0, 0, 1, 1, 1], dtype=np.int16)
    a.image_grid = None
    a.cam_tokens[:] = 0.0
    a.attention_tokens[:] = 0.0
    a.cam_settings.computed = False
    return _sweep(a, [True, True, True])  # cliff 0


def odd_image():
    """A 1-pixel-high image, regions outside it, zero shares and markup-like text."""
    a = make_analysis(num_layers=2, num_heads=3, grid=(1, 4),
                      question="[/] [bold red]is there[/bold red] \x1b]0;owned\x07 a [link=x]?",
                      answer_tokens=("[/", "b]"))
    a.image = np.full((1, 97, 3), 200, dtype=np.uint8)
    a.token_regions = grid_regions(1, 4, (-50, -10, 300, 5))
    a.shares[:] = 0.0
    a.head_shares[:] = 0.0
    a.model.name = "[red]model\x1b[2J"
    a.tokens[2] = "[/]"
    a.notes = ["[/link] note\nwith a newline", "\u202eevil"]
    return a


CASES = {
    "one of everything": (tiny, False),
    "one of everything, swept": (tiny_swept, False),
    "an empty answer": (empty_answer, False),
    "tiles, one view without regions": (tiles_no_regions, False),
    "a view with no tokens": (three_views_one_empty, False),
    "odd image and markup text": (odd_image, False),
    "version 1": (lambda: make_analysis(num_layers=2, grid=(2, 2), answer_tokens=("No",)), True),
}

KEYS = [key for b in KEY_BINDINGS for key in b.key.split(",") if key != "q"]


async def _press_everything(app, pilot, rounds: int) -> None:
    for _ in range(rounds):  # the second round runs in the modes the first one set
        for key in KEYS:
            await pilot.press(key)
            if key in ("e", "p", "a", "i", "slash", "question_mark"):  # a prompt or the help
                await pilot.press("escape")
            elif key == "t":  # the truncation panel: run at K, then leave it
                await pilot.press("enter", "escape")
        await app.workers.wait_for_complete()
        await pilot.pause()


@pytest.mark.parametrize("with_model", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["open", "with-model"])  # with a model: every key twice, reruns
@pytest.mark.parametrize("case", list(CASES))
async def test_every_key_on_edge_case_snapshots(case, with_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # e and p would write here (the prompts are closed unsaved)
    build, version_1 = CASES[case]
    a = build()
    path = tmp_path / "edge.flowtui"
    if version_1:
        save_version_1(a, path)
    else:
        a.save(path)
    analysis = load_snapshot(path)  # through every check a snapshot passes
    engine = FakeEngine(num_layers=analysis.num_layers, cliff=analysis.num_layers)
    app = FlowtuiApp(analysis=analysis, snapshot_path=str(path),
                     engine_factory=fake_factory(engine) if with_model else None)
    size = (80, 24) if with_model else (120, 40)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        await _press_everything(app, pilot, rounds=2 if with_model else 1)
        errors = [n.message for n in app._notifications if n.severity == "error"]
        assert not errors, errors
        await pilot.press("q")
    assert app.return_code == 0
    if with_model:
        assert "sweep" in engine.calls and any(c.startswith("truncate") for c in engine.calls)
