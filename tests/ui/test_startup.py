"""First start: the explorer shows the image and a progress line before the engine exists, and
nothing on the way to its first frame imports torch (behaviour only; the times are measured in
bench/bench_startup.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

from PIL import Image
from support.fake_engine import FakeEngine, make_image
from support.pilot import frame_styles, settle

from flowtui.engine.analysis import Progress
from flowtui.ui.app import FlowtuiApp

ROOT = Path(__file__).resolve().parents[2]


async def test_image_and_progress_line_come_before_the_engine(tmp_path):
    path = tmp_path / "scene.png"
    Image.fromarray(make_image(64)).save(path)
    release, calls = threading.Event(), []

    def slow_factory(progress):  # stands in for the seconds torch and transformers take
        calls.append(1)
        progress(Progress("importing", 0, 0, "torch and transformers"))
        release.wait(10)
        return FakeEngine()

    app = FlowtuiApp(image=str(path), question="Is there a red circle?",
                     engine_factory=slow_factory)
    async with app.run_test(size=(120, 40)) as pilot:
        try:
            for _ in range(100):
                await pilot.pause(0.02)
                if app.image_panel.cam_view.renderer is not None and calls:
                    break
            assert calls == [1]  # the heavy work started at once, in a worker
            assert app.engine is None and app.analysis is None
            # The image is on screen: coloured cells, not a blank panel.
            colours = {s.bgcolor for s in frame_styles(app) if s and s.bgcolor}
            assert len(colours) > 3
            await pilot.pause()
            assert app.status.kind == "busy"
            assert app.status.activity.startswith(("importing", "loading model"))
            assert "torch and transformers" in app.status.activity
        finally:
            release.set()
        await settle(app, pilot)
        assert app.engine is not None and app.analysis is not None


def run_child(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_command_line_reaches_the_explorer_without_importing_torch():
    seen = run_child("""
import json, sys
import flowtui.ui.app as ua
got = {}
def run_explorer(**kwargs):
    got.update(torch="torch" in sys.modules, transformers="transformers" in sys.modules,
               factory=callable(kwargs["engine_factory"]), image=kwargs["image"])
    return 0
ua.run_explorer = run_explorer
from flowtui.cli import main
code = main(["sample_images/toy_scene_1.png", "Is there a red circle?", "--device", "cpu",
             "--dtype", "float32"])
print(json.dumps({"code": code, **got}))
""")
    assert seen == {"code": 0, "torch": False, "transformers": False, "factory": True,
                    "image": "sample_images/toy_scene_1.png"}


def test_loading_says_importing_before_it_imports_torch():
    seen = run_child("""
import json, sys
from flowtui.engine import load_engine
stages = []
class Stop(Exception):
    pass
def progress(p):
    stages.append([p.stage, "torch" in sys.modules])
    raise Stop
try:
    load_engine(progress=progress)
except Stop:
    pass
print(json.dumps({"stages": stages}))
""")
    assert seen == {"stages": [["importing", False]]}


def test_bad_devices_are_still_refused_without_a_model():
    from flowtui.engine.errors import InputError
    from flowtui.engine.loading import check_placement

    for device, dtype, words in (("tpu", "auto", "unknown device"),
                                 ("auto", "float8", "unknown dtype"),
                                 ("cuda:x", "auto", "cuda")):
        try:
            check_placement(device, dtype)
        except InputError as exc:
            assert words in str(exc)
        else:
            raise AssertionError((device, dtype))
    check_placement("auto", "auto")
    check_placement("cpu", "bfloat16")
