"""The words display writes each word area's top lens word over the half-block image where its
cells have room (with the layer it first tops that area), follows the layer, keeps control
characters visible, and at real pixels leaves the words to the list under the image."""

from __future__ import annotations

from support.fake_engine import make_analysis, make_lens
from support.pilot import settle

from flowtui.render.terminal import Graphics
from flowtui.ui.app import FlowtuiApp
from flowtui.ui.widgets.cam_view import CamView
from flowtui.ui.widgets.pixel_view import PixelView


def lensed(strings: dict[int, str] | None = None):
    a = make_analysis(num_layers=8)
    a.lens = make_lens(a)
    if strings:
        a.lens.strings.update(strings)
    return a


def image_text(app) -> str:
    return "\n".join(strip.text for strip in app.query_one(CamView).frame())


def legend(app) -> str:
    return app.query_one("#image-legend").render().plain


async def to_words(app, pilot, layer: int) -> None:
    await settle(app, pilot)
    await pilot.press("m", "m", "m")  # cam -> attention -> lens -> words
    await pilot.press(*["right"] * layer)
    await settle(app, pilot)
    assert app.view.map_mode == "words" and app.view.layer == layer


async def test_words_are_written_into_their_areas_layer_by_layer():
    app = FlowtuiApp(analysis=lensed(), snapshot_path="lens.flowtui")
    async with app.run_test(size=(200, 60)) as pilot:
        await to_words(app, pilot, 0)
        # Layer 0: the disc reads `picture`, everything else `the`; each since layer 0.
        text = image_text(app)
        assert "picture L0" in text and "the L0" in text and "circle" not in text
        await pilot.press("end")
        await settle(app, pilot)
        text = image_text(app)
        # Layer 7: the disc reads `circle` (first top there at 5), the square `square` (6).
        assert "circle L5" in text and "square L6" in text and "the L0" in text
        assert "picture" not in text
        # Written once per area, not once per token.
        assert text.count("circle") == 1 and text.count("square") == 1
        # The label's cells are bold text over the map, on the disc's row of the image.
        cv = app.query_one(CamView)
        row = next(s for s in cv.frame() if "circle L5" in s.text)
        assert any(seg.style.bold for seg in row if "c" in seg.text)
        # The list under the image still names every word.
        assert "circle×" in legend(app) and "square×" in legend(app)
        await pilot.press("m")  # back to the CAM: no words on the image
        await settle(app, pilot)
        assert "circle" not in image_text(app)


async def test_words_have_room_or_are_cut_or_left_to_the_list():
    app = FlowtuiApp(analysis=lensed(), snapshot_path="lens.flowtui")
    async with app.run_test(size=(80, 24)) as pilot:
        await to_words(app, pilot, 7)
        text = image_text(app)
        # The disc is too narrow for "circle L5" at this size: the word alone.
        assert "circle" in text and "circle L5" not in text
        assert "the L0" in text


async def test_the_lens_map_writes_no_words():
    app = FlowtuiApp(analysis=lensed(), snapshot_path="lens.flowtui")
    async with app.run_test(size=(200, 60)) as pilot:
        await settle(app, pilot)
        await pilot.press("m", "m", "end")
        await settle(app, pilot)
        assert app.view.map_mode == "lens"
        assert "circle" not in image_text(app) and "the" not in image_text(app)


async def test_control_characters_in_words_are_shown_as_escapes():
    # A snapshot's strings are outside text: an escape must not reach the terminal.
    app = FlowtuiApp(analysis=lensed({203: "\x1b[2Jci"}), snapshot_path="lens.flowtui")
    async with app.run_test(size=(200, 60)) as pilot:
        await to_words(app, pilot, 7)
        text = image_text(app)
        assert "\x1b" not in text
        assert "\\e[2Jci" in text


async def test_real_pixels_leave_the_words_to_the_list():
    app = FlowtuiApp(analysis=lensed(), snapshot_path="lens.flowtui",
                     graphics=Graphics("kitty", "test"))
    async with app.run_test(size=(120, 40)) as pilot:
        await to_words(app, pilot, 7)
        view = app.query_one(PixelView)
        text = "".join(strip.text for strip in view.frame())
        assert "circle" not in text and view.sent  # the picture went out, with no words on it
        assert "circle×" in legend(app)
