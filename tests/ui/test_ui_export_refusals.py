"""The explorer's export (e) writes through the same checks as --out: never over the input
image, never over a file that is not a snapshot; the refusal is a notification, nothing lost."""

from __future__ import annotations

from PIL import Image
from support.fake_engine import FakeEngine, fake_factory, make_image

from flowtui.engine.snapshot import load_snapshot
from flowtui.ui.app import FlowtuiApp


async def _export(app, pilot, name: str) -> None:
    await pilot.press("e")
    await pilot.pause()
    app.screen.query_one("#prompt-path").value = name
    await pilot.press("enter")
    await app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


async def test_export_refuses_the_image_and_other_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image = tmp_path / "shapes.png"
    Image.fromarray(make_image(96)).save(image)
    (tmp_path / "notes.flowtui").write_text("my notes\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    app = FlowtuiApp(image=str(image), question="Is there a red circle?",
                     engine_factory=fake_factory(FakeEngine(num_layers=4)))
    async with app.run_test(size=(120, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.analysis is not None
        await _export(app, pilot, str(image))
        await _export(app, pilot, "notes.flowtui")
        errors = [n.message for n in app._notifications if n.severity == "error"]
        assert any("is the input image" in e for e in errors), errors
        assert any("notes.flowtui exists and is not a flowtui snapshot" in e for e in errors), errors
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
        await _export(app, pilot, "kept.flowtui")
    assert load_snapshot(tmp_path / "kept.flowtui").question == "Is there a red circle?"
