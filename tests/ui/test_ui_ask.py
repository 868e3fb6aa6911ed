"""Asking the model again from the explorer: `a` another question about the image on screen,
`i` the same question about another image; with a pin the new analysis opens the compare
screen beside the pinned one. Without a model, a note."""

from __future__ import annotations

import numpy as np
from PIL import Image
from support.fake_engine import FakeEngine, fake_factory, make_analysis, make_image
from support.pilot import notes, settle

from flowtui.ui.app import FlowtuiApp
from flowtui.ui.compare_screen import CompareScreen


class Recording(FakeEngine):
    """The fake, remembering what each analysis was asked about."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[object, str]] = []

    def analyze(self, image, question, *args, **kwargs):
        self.asked.append((image, question))
        return super().analyze(image, question, *args, **kwargs)


async def _type(app, pilot, text: str) -> None:
    prompt = app.screen.query_one("Input")
    prompt.value = text
    await pilot.press("enter")
    await settle(app, pilot)


async def test_ask_another_question_about_the_image_then_compare_with_the_pin(tmp_path):
    path = tmp_path / "shapes.png"
    Image.fromarray(make_image(96)).save(path)
    engine = Recording()
    app = FlowtuiApp(image=str(path), question="Is there a red circle?",
                     engine_factory=fake_factory(engine))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert app.analysis is not None and app.analysis.question == "Is there a red circle?"
        await pilot.press("P", "a")
        await pilot.pause()
        assert app.screen.query_one("Input").value == "Is there a red circle?"  # to edit
        await _type(app, pilot, "Is there a blue square?")
        await pilot.pause()
        assert engine.asked[-1] == (str(path), "Is there a blue square?")
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        c = screen.comparison
        assert (c.a.question, c.b.question) == ("Is there a red circle?", "Is there a blue square?")


async def test_ask_about_a_snapshots_pixels_then_another_image(tmp_path):
    engine = Recording()
    other = tmp_path / "other.png"
    Image.fromarray(make_image(64)).save(other)
    a = make_analysis()
    app = FlowtuiApp(analysis=a, engine_factory=fake_factory(engine))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        # No file behind an opened analysis: the model is asked about the pixels it holds.
        await pilot.press("a")
        await pilot.pause()
        await _type(app, pilot, "Is there a horse?")
        image, question = engine.asked[-1]
        assert question == "Is there a horse?"
        assert isinstance(image, Image.Image) and np.array_equal(np.asarray(image), a.image)
        await pilot.press("i")
        await pilot.pause()
        await _type(app, pilot, str(other))
        assert engine.asked[-1] == (str(other), "Is there a horse?")
        assert app.explorer.image_path == str(other)


async def test_without_a_model_asking_is_a_note_and_nothing_changes():
    a = make_analysis()
    app = FlowtuiApp(analysis=a, snapshot_path="a.flowtui")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("a", "i")
        await pilot.pause()
        assert sum("needs a model" in n for n in notes(app)) == 2
        assert app.analysis is a and app.screen is app.explorer
