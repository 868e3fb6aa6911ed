"""The map at real pixels under the Pilot: the escapes each protocol writes (kitty graphics,
Sixel, iTerm inline images) parsed back to an image and its pixels compared with the map's
values; layer changes, a dialog and a resize (ui/widgets/pixel_view.py)."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image
from support.fake_engine import make_analysis
from support.pilot import until

from flowtui.render.colormaps import colormap_lut
from flowtui.render.terminal import Graphics
from flowtui.ui.app import FlowtuiApp
from flowtui.ui.widgets.pixel_view import KITTY_FRAMES, PixelView

SIZE = (120, 40)
APC = re.compile(r"\x1b_G([^;\x1b]*)(?:;([^\x1b]*))?\x1b\\")


def kitty_images(sent: list[str]) -> dict[int, tuple[dict, np.ndarray | None]]:
    """Every kitty transmission in `sent`: id -> (the placement's keys, the decoded image);
    deletions as id -> ({"a": "d"}, None)."""
    out: dict[int, tuple[dict, np.ndarray | None]] = {}
    data: dict[int, str] = {}
    for chunk in sent:
        for keys_text, payload in APC.findall(chunk):
            keys = dict(kv.split("=", 1) for kv in keys_text.split(","))
            i = int(keys["i"])
            if keys.get("a") == "d":
                out[i] = (keys, None)
            elif keys.get("a") == "p":
                png = base64.b64decode(data.pop(i))
                out[i] = (keys, np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))
            else:  # transmission chunks, m=1 until the last
                data[i] = data.get(i, "") + payload
    return out


def sixel_image(seq: str) -> np.ndarray:
    """A minimal Sixel decoder: raster size, colour registers (RGB in percent), repeats, $ and -."""
    body = seq[seq.index("q") + 1: seq.rindex("\x1b\\")]
    m = re.match(r'"\d+;\d+;(\d+);(\d+)', body)
    w, h = int(m.group(1)), int(m.group(2))
    body = body[m.end():]
    img = np.zeros((h, w, 3), np.uint8)
    palette: dict[int, tuple[int, int, int]] = {}
    x = band = 0
    colour = (0, 0, 0)
    pos = 0
    while pos < len(body):
        c = body[pos]
        if c == "#":
            m = re.match(r"#(\d+)(?:;2;(\d+);(\d+);(\d+))?", body[pos:])
            n = int(m.group(1))
            if m.group(2) is not None:
                palette[n] = tuple(round(int(v) * 255 / 100) for v in m.group(2, 3, 4))
            colour = palette[n]
            pos += m.end()
            continue
        count = 1
        if c == "!":
            m = re.match(r"!(\d+)", body[pos:])
            count = int(m.group(1))
            pos += m.end()
            c = body[pos]
        if c == "$":
            x = 0
        elif c == "-":
            x, band = 0, band + 1
        elif "?" <= c <= "~":
            bits = ord(c) - 63
            for b in range(6):
                y = band * 6 + b
                if bits >> b & 1 and y < h:
                    img[y, x:x + count] = colour
            x += count
        pos += 1
    return img


def iterm_image(seq: str) -> tuple[dict, np.ndarray]:
    m = re.search(r"\x1b\]1337;File=([^:]*):([A-Za-z0-9+/=]*)\x07", seq)
    keys = dict(kv.split("=", 1) for kv in m.group(1).split(";"))
    png = base64.b64decode(m.group(2))
    return keys, np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def expected_centres(a, layer: int, side: int) -> list[tuple[int, int, np.ndarray | None]]:
    """(x, y, colour) at each token region's centre in the map drawn `side` pixels square:
    the colormap's colour of the token's value where it reaches the threshold, None (a grey
    of the image) below it. Independent of the renderer: straight from the stored values."""
    lut = colormap_lut("viridis")
    scale = side / a.image.shape[1]
    out = []
    for t, (x0, y0, x1, y1) in enumerate(a.token_regions):
        v = float(a.cam_tokens[layer, t])
        x, y = int((x0 + x1) / 2 * scale), int((y0 + y1) / 2 * scale)
        out.append((x, y, lut[int(round(v * 255))] if v >= 0.5 else None))
    return out


def check_map(img: np.ndarray, a, layer: int, tol: int = 0) -> None:
    side = img.shape[1]
    for x, y, colour in expected_centres(a, layer, side):
        px = img[y, x].astype(int)
        if colour is None:
            assert abs(px[0] - px[1]) <= tol and abs(px[1] - px[2]) <= tol, (x, y, px)
        else:
            assert np.abs(px - colour.astype(int)).max() <= tol, (x, y, px, colour)


def app_for(protocol: str, **kwargs) -> tuple[FlowtuiApp, object]:
    a = make_analysis(num_layers=8)
    return FlowtuiApp(analysis=a, graphics=Graphics(protocol, "test"), **kwargs), a


def cell_ids(view: PixelView) -> set[int]:
    """The image ids the view's cells name (their 8-bit foreground colour)."""
    ids = set()
    for strip in view.frame():
        for seg in strip:
            if seg.text.startswith("\U0010eeee"):
                ids.add(seg.style.color.number)
    return ids


async def test_kitty_stream_parses_back_to_the_map(tmp_path):
    app, a = app_for("kitty")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        view = app.image_panel.cam_view
        assert isinstance(view, PixelView)
        images = kitty_images(view.sent)
        [(image_id, (keys, img))] = images.items()
        assert img.shape == (520, 520, 3)  # 52 x 26 cells of 10 x 20 pixels
        assert keys["U"] == "1" and (int(keys["c"]), int(keys["r"])) == (52, 26)
        check_map(img, a, layer=0)
        assert cell_ids(view) == {image_id}
        # The placeholder cells number every row and column once, in order.
        from textual_image.renderable.tgp import _NUMBER_TO_DIACRITIC as D

        rows = [s for s in view.frame() if "\U0010eeee" in s.text]
        assert len(rows) == 26
        for r, strip in enumerate(rows):
            cells = re.findall("\U0010eeee(.)(.)(.)", strip.text)
            assert [(D.index(ord(a_)), D.index(ord(b_))) for a_, b_, _ in cells] == \
                [(r, c) for c in range(52)]
        Image.fromarray(img).save(tmp_path / "kitty.png")  # for a look when it fails


async def test_kitty_layer_changes_swap_images_with_no_gap_and_few_kept():
    app, a = app_for("kitty")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        view = app.image_panel.cam_view
        first = cell_ids(view)
        sent = list(view.sent)
        await pilot.press("right")
        await pilot.pause()
        new = kitty_images(view.sent[len(sent):])
        [(image_id, (_, img))] = [(i, v) for i, v in new.items() if v[1] is not None]
        check_map(img, a, layer=1)
        assert cell_ids(view) == {image_id} != first
        assert all(v[1] is not None for v in new.values())  # the old image is not deleted yet
        history = list(view.sent)
        for _ in range(6):
            await pilot.press("right")
            await pilot.pause()
            history += [s for s in view.sent if s not in history]
        stream = kitty_images(history)
        deleted = {i for i, (keys, img) in stream.items() if img is None}
        assert first <= deleted and len(deleted) >= 3
        assert len(view._pframes) <= KITTY_FRAMES
        # Back to a layer still kept: nothing is sent again, the cells name its image.
        before = list(view.sent)
        await pilot.press("left")
        await pilot.pause()
        assert view.sent == before and cell_ids(view) <= set(stream) - deleted


async def test_kitty_after_a_dialog_and_a_resize():
    app, a = app_for("kitty")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        view = app.image_panel.cam_view
        shown = cell_ids(view)
        await pilot.press("question_mark")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert cell_ids(view) == shown  # the same image, still in the terminal
        deleted = {i for i, (_, img) in kitty_images(view.sent).items() if img is None}
        assert not shown & deleted
        await pilot.resize_terminal(100, 30)
        await pilot.pause()
        images = kitty_images(view.sent)
        keys, img = images[max(cell_ids(view))]
        w, h = view.size
        assert int(keys["c"]) <= w and int(keys["r"]) <= h and img is not None
        assert img.shape[:2] == (int(keys["r"]) * 20, int(keys["c"]) * 10)


async def test_sixel_stream_parses_back_to_the_map_and_is_drawn_only_when_shown():
    app, a = app_for("sixel")
    async with app.run_test(size=SIZE) as pilot:
        view = app.image_panel.cam_view
        await until(pilot, lambda: any("\x1bP" in s for s in view.sent), "a Sixel image drawn")
        # One image, drawn once or again after a layout change (never another one).
        [seq] = set(s for s in view.sent if "\x1bP" in s)
        x, y = view.region.x, view.region.y
        assert seq.startswith(f"\x1b7\x1b[{y + 2};{x + 1}H")  # over the view (1 row margin)
        img = sixel_image(seq)
        assert img.shape == (520, 520, 3)
        check_map(img, a, layer=0, tol=12)  # Sixel: colours in 0..100 %, quantised to a palette
        await pilot.press("question_mark")
        await pilot.pause()
        n = len(view.sent)
        await pilot.press("right")  # under the help screen: not drawn
        await pilot.pause()
        await pilot.pause()  # a refresh and its after-refresh callbacks, where a drawing would go
        assert len(view.sent) == n
        await pilot.press("escape")
        # drawn again once the explorer is back
        await until(pilot, lambda: len(view.sent) > n, "the Sixel image drawn again")


async def test_iterm_stream_parses_back_to_the_map():
    app, a = app_for("iterm")
    async with app.run_test(size=SIZE) as pilot:
        view = app.image_panel.cam_view
        await until(pilot, lambda: any("1337;File" in s for s in view.sent), "an iTerm image drawn")
        keys, img = iterm_image(view.sent[-1])
        assert (keys["inline"], keys["width"], keys["height"]) == ("1", "52", "26")
        check_map(img, a, layer=0)


@pytest.mark.parametrize("style", ["regions", "smooth"])
async def test_the_legend_and_status_line_name_the_style(style):
    app, a = app_for("kitty", map_style=style)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        legend = str(app.image_panel.query_one("#image-legend").render())
        other = "smooth" if style == "regions" else "regions"
        assert ("smooth (bilinear)" if style == "smooth" else "· regions") in legend
        assert ("smooth" in app.status.where) == (style == "smooth")
        assert "kitty pixels" in app.status.where
        await pilot.press("b")
        await pilot.pause()
        assert app.map_style == other
        legend = str(app.image_panel.query_one("#image-legend").render())
        assert ("smooth (bilinear)" if other == "smooth" else "· regions") in legend


async def test_half_blocks_stay_the_hand_drawn_view():
    app = FlowtuiApp(analysis=make_analysis(num_layers=4),
                     graphics=Graphics("halfblock", "no answer to the probe in 0.5 s"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert type(app.image_panel.cam_view).__name__ == "CamView"
        assert app.status.where.endswith("· half-blocks (no answer)")
        await pilot.press("b")  # no style to switch: nothing happens
        await pilot.pause()
        assert app.map_style == "regions"


async def test_tmux_without_passthrough_is_said_at_start():
    g = Graphics("halfblock", "tmux allow-passthrough is off: set -g allow-passthrough on", "off")
    app = FlowtuiApp(analysis=make_analysis(num_layers=4), graphics=g)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert any("allow-passthrough" in n.message for n in app._notifications)
        assert app.status.where.endswith("· half-blocks")


async def test_sixel_layer_change_draws_over_the_old_image_without_a_blank_repaint():
    app, a = app_for("sixel")
    async with app.run_test(size=SIZE) as pilot:
        view = app.image_panel.cam_view
        await until(pilot, lambda: any("\x1bP" in s for s in view.sent), "layer 0 drawn")
        painted = []
        real = view.render_line
        view.render_line = lambda y: painted.append(y) or real(y)
        n = len(view.sent)
        await pilot.press("right")
        await until(pilot, lambda: len(view.sent) > n, "layer 1 drawn")
        assert painted == []  # the blank cells were not written again
        assert len(view.sent) > n
        check_map(sixel_image(view.sent[-1]), a, layer=1, tol=12)


async def test_sixel_is_drawn_again_after_a_notification_went():
    app, a = app_for("sixel")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        view = app.image_panel.cam_view
        await until(pilot, lambda: any("\x1bP" in s for s in view.sent), "the map drawn")
        # Long enough to be seen on a loaded machine; the test waits for it to go, not 2 s.
        app.notify("a toast over the map", timeout=2.0)
        await until(pilot, lambda: list(app.screen.query("Toast")), "the toast shown")
        n = len(view.sent)
        await until(pilot, lambda: not list(app.screen.query("Toast")), "the toast gone")
        await until(pilot, lambda: len(view.sent) > n, "the map drawn again")
        assert "\x1bP" in view.sent[-1]
