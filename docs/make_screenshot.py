"""Write docs/screenshot.svg: the explorer's main screen, exported by the app itself.

    python docs/make_screenshot.py [--fake] [--out docs/screenshot.svg]
    python docs/make_screenshot.py --tiny llava_next --out docs/screenshot-views.svg

Uses the built-in toy model on a fixed toy scene (and runs a sweep so the cliff shows); with
--fake, or when the toy weights are missing, a synthetic analysis from tests/support/fake_engine.py;
with --tiny FAMILY, the tiny random model of that family from flowtui/selftest/tiny/ on a sample photo,
showing its second view (tiles): the layout of a multi-tile family, not a trained model's map.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def toy_session():
    """The README's own example: the first sample scene and its question."""
    import flowtui

    engine = flowtui.load_engine(device="cpu", dtype="float32")
    analysis = engine.analyze(ROOT / "sample_images" / "toy_scene_1.png", "Is there a red circle?")
    return analysis, (lambda progress: engine)


def fake_session():
    sys.path.insert(0, str(ROOT / "tests"))
    from support.fake_engine import FakeEngine, fake_factory, make_analysis

    return make_analysis(num_layers=16, num_heads=8), fake_factory(FakeEngine(num_layers=16, cliff=5))


def tiny_session(family: str):
    """A tiny random model of `family` (flowtui/selftest/tiny) on the horse photo."""
    import tempfile

    import flowtui
    from flowtui.selftest import tiny

    spec = tiny.discover()[family]
    path = spec.build(Path(tempfile.mkdtemp()) / family)
    engine = flowtui.load_engine(str(path), device="cpu", dtype="float32")
    analysis = engine.analyze(ROOT / "sample_images" / "horse.png", spec.QUESTION,
                              max_new_tokens=4)
    return analysis, (lambda progress: engine)


async def shoot_views(out: Path, family: str) -> None:
    from flowtui.ui.app import FlowtuiApp

    analysis, factory = tiny_session(family)
    app = FlowtuiApp(analysis=analysis, engine_factory=factory, snapshot_path=f"{family}.flowtui")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("s")
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.clear_notifications()
        tiles = ["w"] * analysis.views.index("tiles")  # the tiles view, layer 1, threshold 0.4
        await pilot.press(*tiles, "right", "left_square_bracket", "left_square_bracket")
        await pilot.pause(0.3)
        svg = app.export_screenshot(title=f"flowtui · tiny {family}")
    out.write_text(svg, encoding="utf-8")
    print(f"wrote {out} (tiny random {family}, views {analysis.views})")


async def shoot(out: Path, fake: bool) -> None:
    from flowtui.toy import WEIGHTS_DIR
    from flowtui.ui.app import FlowtuiApp

    use_fake = fake or not (WEIGHTS_DIR / "config.json").exists()
    analysis, factory = fake_session() if use_fake else toy_session()
    app = FlowtuiApp(analysis=analysis, engine_factory=factory, snapshot_path="toy_scene_1.flowtui")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("s")
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("t")
        await pilot.press(str(max(0, (analysis.cliff_layer or 2) - 1)), "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.clear_notifications()
        await pilot.press("escape", "right", "right", "g")
        await pilot.pause(0.3)
        svg = app.export_screenshot(title="flowtui")
    out.write_text(svg, encoding="utf-8")
    print(f"wrote {out} ({'synthetic analysis' if use_fake else 'toy model'})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fake", action="store_true")
    ap.add_argument("--tiny", metavar="FAMILY", help="a tiny random model from flowtui/selftest/tiny")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.svg")
    args = ap.parse_args()
    if args.tiny:
        asyncio.run(shoot_views(args.out, args.tiny))
    else:
        asyncio.run(shoot(args.out, args.fake))


if __name__ == "__main__":
    main()
