"""The explorer on real engines: a tiny random LLaVA and the shipped, trained toy model."""

from __future__ import annotations

import numpy as np

from flowtui.ui.app import FlowtuiApp


async def settle(app, pilot) -> None:
    await app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


async def test_real_engine_analysis_truncation_and_sweep(engines, image_file):
    engine = engines["a"]
    app = FlowtuiApp(
        image=str(image_file),
        question="Is there a red circle?",
        engine_factory=lambda progress: engine,
        max_new_tokens=4,
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        a = app.analysis
        assert a is not None and a.num_layers == engine.info.num_layers
        await pilot.press("end")
        assert app.image_panel.border_title.endswith(f"{a.num_layers - 1}/{a.num_layers - 1}")
        before = len(a.truncations)
        await pilot.press("t", "enter")  # K follows the layer: the last one
        await settle(app, pilot)
        assert len(a.truncations) == before + 1  # recorded once, by the engine
        run = a.truncations[-1]
        assert run.layer == a.num_layers - 1
        assert np.isfinite(run.baseline_logprob)
        await pilot.press("escape", "s")
        await settle(app, pilot)
        assert a.sweep_logprob is not None and a.sweep_logprob.shape == (a.num_layers + 1,)
        assert app.is_running and app.status.kind == "ready"


def test_main_screen_toy(snap_compare):
    import flowtui
    from flowtui.toy.scenes import make_question, render_scene

    rng = np.random.default_rng(7)
    scene = render_scene(rng, size=160)
    obj = scene.objects[0]
    question = make_question(scene, obj.colour, obj.shape).text
    engine = flowtui.load_engine(device="cpu", dtype="float32")
    image = np.asarray(scene.image)

    app = FlowtuiApp(
        analysis=engine.analyze(image, question, max_new_tokens=4), snapshot_path="toy-scene.flowtui"
    )
    assert snap_compare(app, terminal_size=(120, 40), press=["right", "right"])


async def test_toy_truncation_in_the_app(tmp_path):
    import flowtui
    from flowtui.toy.scenes import make_question, render_scene

    scene = render_scene(np.random.default_rng(3), size=160)
    obj = scene.objects[0]
    path = tmp_path / "scene.png"
    scene.image.save(path)
    app = FlowtuiApp(
        image=str(path),
        question=make_question(scene, obj.colour, obj.shape).text,
        engine_factory=lambda progress: flowtui.load_engine(device="cpu", dtype="float32", progress=progress),
        max_new_tokens=4,
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        a = app.analysis
        assert a.answer.strip().rstrip(".").lower() == "yes"
        await pilot.press("home", "t", "enter")  # K = 0: the image hidden everywhere
        await settle(app, pilot)
        assert a.truncations[-1].layer == 0
        await pilot.press("escape", "s")
        await settle(app, pilot)
        assert a.sweep_same[-1]
