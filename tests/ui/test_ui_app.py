"""Pilot tests of the explorer on the fake engine (fast: no model)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image
from support.fake_engine import FakeEngine, fake_factory, make_analysis, make_image
from support.pilot import frame_styles, notes, settle

from flowtui.engine.errors import InputError
from flowtui.engine.snapshot import load_snapshot
from flowtui.ui.app import KEY_BINDINGS, FlowtuiApp, one_line
from flowtui.ui.widgets.image_panel import CamView


@pytest.fixture
def image_path(tmp_path):
    path = tmp_path / "shapes.png"
    Image.fromarray(make_image(96)).save(path)
    return str(path)


async def test_layer_keys_move_every_panel():
    app = FlowtuiApp(analysis=make_analysis(num_layers=8))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        before = frame_styles(app)
        await pilot.press("right", "l")
        assert app.view.layer == 2
        for panel in (app.image_panel, app.flow_panel, app.truncation_panel):
            assert panel.view.layer == 2
        assert "layer 2/7" in app.image_panel.border_title
        assert app.query_one("#trunc-k").placeholder == "2"
        await pilot.pause()
        assert frame_styles(app) != before
        await pilot.press("end")
        assert app.view.layer == 7
        await pilot.press("right")  # clamps at the last layer
        assert app.view.layer == 7
        await pilot.press("home", "left", "h")
        assert app.view.layer == 0
        assert "layer 0/7" in app.status.where


async def test_threshold_colormap_and_mode_change_cells():
    app = FlowtuiApp(analysis=make_analysis())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        base = frame_styles(app)
        await pilot.press("left_square_bracket", "left_square_bracket")
        assert app.view.threshold == pytest.approx(0.4)
        assert app.analysis.cam_settings.threshold == pytest.approx(0.4)
        await pilot.pause()
        lower = frame_styles(app)
        assert lower != base
        await pilot.press("right_square_bracket", "right_square_bracket")
        await pilot.pause()
        assert frame_styles(app) == base
        await pilot.press("c")
        assert app.view.colormap == "jet"
        await pilot.pause()
        jet = frame_styles(app)
        assert jet != base
        await pilot.press("c", "c", "c")
        assert app.view.colormap == "viridis"
        modes = []
        for _ in range(3):
            await pilot.press("o")
            await pilot.pause()
            modes.append((app.view.mode, frame_styles(app)))
        assert [m for m, _ in modes] == ["heatmap", "image", "overlay"]
        assert modes[0][1] != modes[1][1] != base
        assert modes[2][1] == base


async def test_head_view_toggles():
    app = FlowtuiApp(analysis=make_analysis(num_heads=6))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        h0 = app.flow_panel.size.height
        await pilot.press("g")
        await pilot.pause()
        assert app.view.show_heads
        assert "heads @ layer 0" in app.flow_panel.render().plain
        assert app.flow_panel.size.height > h0


async def test_per_token_view_divides_by_group_size():
    a = make_analysis()
    app = FlowtuiApp(analysis=a)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        before = app.flow_panel.render().plain
        assert f"{a.shares[0, 1]:.3f}" in before
        await pilot.press("v")
        await pilot.pause()
        assert app.view.per_token
        after = app.flow_panel.render().plain
        assert "per token" in after and after != before
        sizes = a.group_sizes()
        assert f"{a.shares[0, 1] / sizes[1]:.1e}" in after
        await pilot.press("v")
        assert not app.view.per_token


async def test_live_mode_loads_analyzes_and_truncates(image_path):
    engine = FakeEngine(num_layers=6)
    app = FlowtuiApp(image=image_path, question="Is there a red circle?", engine_factory=fake_factory(engine))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert app.analysis is not None and app.engine is engine
        assert app.analysis.num_layers == 6
        await pilot.press("right", "t")
        assert app.focused.id == "trunc-k"
        await pilot.press("enter")  # K follows the current layer
        await settle(app, pilot)
        assert engine.calls[-1] == "truncate:1:all:None"
        assert len(app.analysis.truncations) == 1
        run = app.analysis.truncations[0]
        assert run.answer == "No." and not run.same
        live = app.query_one("#trunc-live").render().plain
        results = app.query_one("#trunc-results").render().plain
        # The finished run is listed once, at the top of the runs; the live line is the baseline.
        assert "baseline" in live and "No." not in live
        assert results.count("'No.'") == 1 and "Δ" in results
        # A typed K sticks; top-R with R.
        await pilot.press("4", "enter")
        await settle(app, pilot)
        assert engine.calls[-1] == "truncate:4:all:None"
        app.query_one("#trunc-strategy").value = "top"
        app.query_one("#trunc-r").value = "5"
        await pilot.press("enter")
        await settle(app, pilot)
        assert engine.calls[-1] == "truncate:4:top:5"
        assert len(app.analysis.truncations) == 3
        assert "runs this session (3)" in app.query_one("#trunc-results").render().plain
        # K past the last layer is refused with a notification, not clamped into a run.
        app.query_one("#trunc-k").value = "99"
        await pilot.press("enter")
        await settle(app, pilot)
        assert len(app.analysis.truncations) == 3
        assert any("K must be 0..6" in n.message for n in app._notifications)
        app.query_one("#trunc-k").value = "4"
        await pilot.press("escape")
        assert app.focused is None
        await pilot.press("right")
        assert app.view.layer == 2


async def test_truncation_streams_tokens():
    engine = FakeEngine(delay=0.15)
    app = FlowtuiApp(analysis=make_analysis(), engine_factory=fake_factory(engine))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("t", "enter")
        seen = set()
        for _ in range(40):
            await pilot.pause(0.05)
            seen.add(app.query_one("#trunc-live").render().plain.splitlines()[-1])
            if app.busy is None:
                break
        await settle(app, pilot)
        assert any("'N'" in s or "'No'" in s for s in seen)  # partial answers were shown
        assert app.analysis.truncations[-1].answer == "No."


async def test_sweep_updates_panel_and_session():
    engine = FakeEngine(num_layers=8, cliff=3)
    app = FlowtuiApp(analysis=make_analysis(num_layers=8), engine_factory=fake_factory(engine))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("s")
        await settle(app, pilot)
        a = app.analysis
        assert a.cliff_layer == 3
        assert a.sweep_logprob.shape == (9,) and a.sweep_same.tolist() == [False] * 3 + [True] * 6
        curve = app.query_one("#sweep-curve").render().plain
        assert "cliff layer 3" in curve and "▲" in curve
        assert "cliff layer 3" in app.answer_panel.render().plain
        assert "cliff 3" in app.flow_panel.render().plain
        assert any("cliff layer 3" in n for n in notes(app))


async def test_sweep_can_be_cancelled():
    engine = FakeEngine(num_layers=8, delay=0.1)
    app = FlowtuiApp(analysis=make_analysis(num_layers=8), engine_factory=fake_factory(engine))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("s")
        await pilot.pause(0.25)
        assert app.busy == "sweep"
        assert app.query_one("#sweep-progress").display
        await pilot.press("x")
        await settle(app, pilot)
        assert app.busy is None
        assert app.analysis.sweep_logprob is None
        assert any("cancelled" in n for n in notes(app))
        await pilot.press("s")  # the app is free again
        await settle(app, pilot)
        assert app.analysis.cliff_layer == 3


async def test_one_engine_job_at_a_time():
    engine = FakeEngine(delay=0.1)
    app = FlowtuiApp(analysis=make_analysis(), engine_factory=fake_factory(engine))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("s")
        await pilot.press("t", "enter")
        assert any("busy with sweep" in n for n in notes(app))
        await pilot.press("escape", "x")
        await settle(app, pilot)


async def test_export_writes_snapshot_that_reloads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    engine = FakeEngine(num_layers=8)
    app = FlowtuiApp(analysis=make_analysis(num_layers=8), engine_factory=fake_factory(engine), snapshot_path="old/shapes.flowtui")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("s")
        await settle(app, pilot)
        await pilot.press("t", "enter")
        await settle(app, pilot)
        await pilot.press("escape", "left_square_bracket", "e")
        await pilot.pause()
        prompt = app.screen.query_one("#prompt-path")
        assert prompt.value.startswith("shapes-") and prompt.value.endswith(".flowtui")
        await pilot.press("enter")
        await settle(app, pilot)
        files = list(tmp_path.glob("shapes-*.flowtui"))
        assert len(files) == 1
        assert any("saved snapshot" in n for n in notes(app))
    back = load_snapshot(files[0])
    a = app.analysis
    for name in ("shares", "head_shares", "cam", "answer_logprobs", "sweep_logprob", "sweep_same"):
        assert np.array_equal(getattr(back, name), getattr(a, name)), name
    assert back.cliff_layer == 3 and len(back.truncations) == 1
    assert back.cam_settings.threshold == pytest.approx(0.45)
    import zipfile

    with zipfile.ZipFile(files[0]) as zf:
        assert zf.read("screen.svg").startswith(b"<svg")


async def test_export_prompt_can_be_cancelled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = FlowtuiApp(analysis=make_analysis())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("e")
        await pilot.pause()
        await pilot.press("escape")
        await settle(app, pilot)
        assert not list(tmp_path.iterdir())


async def test_export_pngs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = FlowtuiApp(analysis=make_analysis(num_layers=4))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("p")
        await pilot.pause()
        title, hint = (str(label.render()) for label in app.screen.query("Label"))
        assert title == "Export the CAM as PNGs into folder"
        assert "one PNG per layer: layer-NN.png" in hint
        await pilot.press("enter")
        await settle(app, pilot)
    [folder] = list(tmp_path.iterdir())
    assert sorted(p.name for p in folder.iterdir()) == [f"layer-0{i}.png" for i in range(4)]


async def test_open_mode_refuses_reruns_without_a_model():
    app = FlowtuiApp(analysis=make_analysis(), snapshot_path="x.flowtui")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert "Truncation needs a model" in app.query_one("#trunc-disabled").render().plain
        await pilot.press("s")
        await pilot.press("t", "enter")
        await settle(app, pilot)
        assert sum("needs a model" in n for n in notes(app)) == 2
        assert app.analysis.truncations == [] and app.busy is None
        await pilot.press("escape", "right", "c", "o", "g")  # every view key still works
        assert app.view.layer == 1 and app.view.colormap == "jet"


async def test_open_mode_with_model_loads_engine_lazily():
    loads = []
    engine = FakeEngine()

    def factory(progress):
        loads.append(1)
        return engine

    app = FlowtuiApp(analysis=make_analysis(), engine_factory=factory, snapshot_path="x.flowtui")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert loads == []  # not before the first rerun
        await pilot.press("t", "enter")
        await settle(app, pilot)
        await pilot.press("s")
        await settle(app, pilot)
        assert loads == [1] and app.analysis.cliff_layer == 3


@pytest.mark.parametrize(
    "engine,task,expect",
    [
        (FakeEngine(fail="truncate", fail_exc=InputError("K must be between 0 and 8")), "t", "K must be between 0 and 8"),
        (FakeEngine(fail="truncate", fail_exc=ZeroDivisionError("boom\nsecond line")), "t", "ZeroDivisionError: boom"),
        (FakeEngine(fail="sweep", fail_exc=RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")), "s", "out of memory"),
    ],
)
async def test_worker_errors_become_notifications(engine, task, expect):
    app = FlowtuiApp(analysis=make_analysis(), engine_factory=fake_factory(engine))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press(*(["t", "enter"] if task == "t" else ["s"]))
        await settle(app, pilot)
        assert any(expect in n for n in notes(app)), notes(app)
        assert all("\n" not in n for n in notes(app))
        assert app.is_running and app.busy is None
        await pilot.press("escape", "right")
        assert app.view.layer == 1


async def test_model_load_failure_keeps_the_app_usable(image_path):
    app = FlowtuiApp(image=image_path, question="q?", engine_factory=fake_factory(fail=True))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert any("not found in the Hugging Face cache" in n for n in notes(app))
        assert "not found" in app.query_one("#image-message").render().plain
        assert app.status.kind == "error"
        await pilot.press("right", "c", "s", "e", "question_mark")
        await pilot.pause()
        assert app.is_running


async def test_bad_image_is_reported(tmp_path):
    class Picky(FakeEngine):
        def analyze(self, image, question, max_new_tokens=32, progress=None, self_check=True,
                    per_token=False):
            raise InputError(f"cannot read image {image}: not an image file")

    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    app = FlowtuiApp(image=str(bad), question="q?", engine_factory=fake_factory(Picky()))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert any("not an image file" in n for n in notes(app))


async def test_quit_never_waits_for_a_running_model():
    engine = FakeEngine(delay=2.0)
    app = FlowtuiApp(analysis=make_analysis(), engine_factory=fake_factory(engine))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("t", "enter")
        await pilot.pause(0.1)
        assert app.busy == "truncation"
        await pilot.press("escape")
        t0 = time.perf_counter()
        await pilot.press("q")
        await pilot.pause()
    assert time.perf_counter() - t0 < 1.0
    assert app.return_code == 0


async def test_small_terminal_and_resize():
    app = FlowtuiApp(analysis=make_analysis())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        view = app.query_one(CamView)
        small = view.size
        assert small.width >= 20 and small.height >= 6
        assert len(view.frame()) == small.height
        assert app.screen.has_class("-narrow") and app.screen.has_class("-short")
        for panel in (app.image_panel, app.flow_panel, app.answer_panel, app.truncation_panel):
            assert panel.region.width > 0 and panel.region.height > 0
            assert panel.region.right <= 80 and panel.region.bottom <= 24
        await pilot.resize_terminal(140, 45)
        await pilot.pause()
        big = view.size
        assert big.width > small.width and big.height > small.height
        assert len(view.frame()) == big.height
        assert not app.screen.has_class("-narrow")
        await pilot.press("right")
        assert app.view.layer == 1


def palette_titles(app) -> list[str]:
    return [c.title for c in app.get_system_commands(app.screen)]


async def test_help_screen_and_palette_commands():
    app = FlowtuiApp(analysis=make_analysis(layout="tiles"))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        text = " ".join(str(w.render()) for w in app.screen.query("Static"))
        for b in KEY_BINDINGS:
            assert b.id in text
        await pilot.press("escape")
        # The palette offers what applies now: the threshold to the CAM, sinks to attention.
        # Reconnect applies only to a remote engine (--remote), which this app has not; the map
        # style only at real pixels (this app draws half-blocks). The token cursor applies only
        # to answers with per-token arrays, which this has not.
        tokens = {"Token ◀", "Token ▶", "Whole answer"}
        only = {"CAM": {"Thr −", "Thr +", "Reconnect", "Style", *tokens},
                "attention": {"Sinks", "Reconnect", "Style", *tokens}}
        for hidden in ("attention", "CAM"):  # map on screen: CAM, then attention
            titles = palette_titles(app)
            for b in KEY_BINDINGS:
                if b.id != "app.quit":
                    assert (b.description in titles) == (b.description not in only[hidden])
            assert "Theme" in titles and "Quit" in titles
            await pilot.press("m")
    assert all(b.id for b in KEY_BINDINGS)


def test_one_line():
    assert one_line(InputError("bad image")) == "bad image"
    assert one_line(ValueError("x\ny")) == "ValueError: x"
    assert one_line(MemoryError()).startswith("out of memory")
    assert len(one_line(ValueError("z" * 500))) <= 160


def test_readme_key_table_lists_every_binding():
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    for b in KEY_BINDINGS:
        assert f"| `{b.id}` |" in readme, b.id
