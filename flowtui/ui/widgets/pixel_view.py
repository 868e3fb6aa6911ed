"""The map at the terminal's real resolution (docs/definitions.md, "Pixel protocol"): the same
API as CamView, drawn with the kitty graphics protocol, Sixel or iTerm's inline images.

The protocols' encoders are textual-image's (kitty: its TGP renderable, which sends the image
once and draws it with Unicode placeholder cells; Sixel: its encoder). textual-image has no
iTerm renderer, so that one is the few lines below (OSC 1337, a PNG in base64). Every escape
goes out through Textual's own driver, in order with the screen updates, never straight to
stdout (which could split a frame mid-sequence), and `sent` keeps the last ones for tests.

Kitty frames are text to Textual (placeholder cells whose colour names the image), so a dialog
or another screen simply covers them, and a layer change swaps which image the cells name with
no blank frame in between: the new image is sent before the cells that show it, and the old
one is deleted only when it leaves the cache of a few frames. Sixel and iTerm images are drawn
over blank cells after each repaint of the view, and only while its screen is the active one,
so nothing is left on screen once the view is covered or gone.
"""

from __future__ import annotations

import base64
import io
import itertools
import logging
import sys
from collections import OrderedDict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from flowtui.render.maps import map_threshold
from flowtui.render.overlay import STYLE_TITLES, PixelRenderer, fit_pixels
from flowtui.render.terminal import Graphics, tmux_wrap
from flowtui.ui.widgets.cam_view import CamView

# Kitty frames kept in the terminal (each one image there): the current one and a few
# neighbours, so flipping back and forth between layers resends nothing.
KITTY_FRAMES = 4
# Image ids 16..255: written as an 8-bit colour (38;5;N), which survives 256-colour terminals
# (over ssh without COLORTERM) where a 24-bit id would be rounded to another colour.
_IDS = itertools.cycle(range(16, 256))


class _NotATerminal(io.StringIO):
    def isatty(self) -> bool:
        return False


def prepare() -> tuple[int, int]:
    """Import textual-image and measure the cell size, before the app starts (once it runs,
    Textual reads every answer from the terminal as keys). flowtui has already probed the
    protocol (render/terminal.py), so the library's own probes on import, which would ask the
    terminal again and can eat a keystroke, are skipped: stdout looks like no terminal while
    `textual_image.renderable` is imported. Returns the cell size in pixels."""
    # A terminal that does not say its cell size is logged as a warning with a traceback,
    # which would land on the screen: the default size is fine, and said by the doctor.
    logging.getLogger("textual_image").setLevel(logging.ERROR)
    if "textual_image.renderable" not in sys.modules:
        real = sys.__stdout__
        sys.__stdout__ = _NotATerminal()  # type: ignore[misc,assignment]  # a stand-in, restored below
        try:
            import textual_image.renderable  # noqa: F401
        finally:
            sys.__stdout__ = real  # type: ignore[misc]
    return cell_pixels()


def cell_pixels() -> tuple[int, int]:
    """(width, height) of one terminal cell in pixels, as textual-image measured it at start
    (10 x 20 where the terminal does not say)."""
    from textual_image._terminal import get_cell_size

    size = get_cell_size()
    return int(size.width), int(size.height)


@contextmanager
def _stdout_captured():
    """textual-image's kitty renderable writes its escapes to sys.__stdout__: catch them here,
    so they are sent through the driver instead."""
    real, sink = sys.__stdout__, io.StringIO()
    sys.__stdout__ = sink  # type: ignore[misc,assignment]  # caught, restored below
    try:
        yield sink
    finally:
        sys.__stdout__ = real  # type: ignore[misc]


def png_bytes(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="png", compress_level=1)
    return out.getvalue()


def iterm_sequence(pixels: np.ndarray, cols: int, rows: int) -> str:
    """iTerm2's inline image (OSC 1337 File=) of `pixels`, stretched over cols x rows cells."""
    data = base64.b64encode(png_bytes(pixels)).decode("ascii")
    return (f"\x1b]1337;File=inline=1;size={len(data) * 3 // 4};width={cols};height={rows};"
            f"preserveAspectRatio=0:{data}\x07")


def sixel_sequence(pixels: np.ndarray) -> str:
    from textual_image.renderable.sixel import image_to_sixels

    return image_to_sixels(Image.fromarray(pixels))


def kitty_delete(image_id: int) -> str:
    """Delete the image and its data from the terminal (d=I: by id, freeing the data)."""
    return f"\x1b_Ga=d,d=I,i={image_id},q=2\x1b\\"


@dataclass
class _Frame:
    strips: list[Strip]
    image_id: int | None = None  # kitty: the image the cells name
    payload: str = ""  # sixel / iterm: drawn at `at` (cells) after each repaint
    at: tuple[int, int] = (0, 0)


class PixelView(CamView):
    """CamView at real pixels: `graphics.protocol` is kitty, sixel or iterm; `style` is the
    map style (render/overlay.py: regions or smooth).

    The words display writes no words over the picture here (CamView's `labels_of` is not
    used): Sixel and iTerm images are drawn over the cells after each repaint, so text cells
    under them would be covered, and in kitty a text cell replaces a placeholder cell, which
    punches a hole in the picture; burning the words into the pixels would need a font at the
    terminal's cell size. The words stay in the list under the image, which every protocol
    shows alike."""

    def __init__(self, graphics: Graphics, style: str = "regions", **kwargs) -> None:
        super().__init__(**kwargs)
        self.graphics = graphics
        self.style = style
        self.sent: list[str] = []  # the escapes sent, latest last (a few kept, for tests)
        self._pixel: dict[int, PixelRenderer] = {}
        self._pframes: OrderedDict[tuple, _Frame] = OrderedDict()
        self._shown: _Frame | None = None
        self._pending = False
        self._memo: tuple | None = None
        self.write: Callable[[str], None] = self._driver_write

    @property
    def style_title(self) -> str:
        return STYLE_TITLES[self.style]

    def set_style(self, style: str) -> None:
        if style != self.style:
            self.style = style
            self._changed()

    def _changed(self) -> None:
        """A new picture. Kitty: the cells name another image, so they are repainted. Sixel and
        iTerm: the cells stay blank, so the new image is drawn straight over the old one, with
        no repaint of blank cells in between (which would show as a flicker)."""
        if self.graphics.protocol == "kitty" or self._shown is None or not self.is_mounted:
            self.refresh()
            return
        self._memo = None
        self.frame()  # builds the new image and schedules drawing it

    def _driver_write(self, data: str) -> None:
        driver = getattr(self.app, "_driver", None)
        if driver is not None:
            driver.write(data)

    def _send(self, data: str) -> None:
        if self.graphics.tmux:
            data = tmux_wrap(data)
        self.sent = [*self.sent[-7:], data]
        self.write(data)

    def _pixel_renderer(self) -> PixelRenderer | None:
        r = self._renderers.get(self._key, self.renderer)
        if r is None:
            return None
        p = self._pixel.get(id(r))
        if p is None:
            p = self._pixel[id(r)] = PixelRenderer(r.image, r.values, r.regions, r.token_views)
        return p

    def set_source(self, *args, **kwargs) -> None:
        self._forget()
        self._pixel = {}
        super().set_source(*args, **kwargs)

    def frame(self) -> list[Strip]:
        width, height = self.size
        pr = self._pixel_renderer()
        if pr is None or width < 1 or height < 1:
            return []
        v = self.view
        # Textual asks line by line: the frame is looked up once per state, not per line.
        state = (id(pr), self._key, v, width, height, self.style, self.rich_style)
        if self._memo is not None and self._memo[0] == state and self._shown is not None:
            if self._shown.payload:  # lines repainted over a Sixel/iTerm image: draw it again
                self._schedule_draw()
            return self._shown.strips
        layer = min(v.layer, pr.values.shape[0] - 1)
        threshold = map_threshold(self._key[0], v.threshold)
        mark = None
        if v.mode != "image" and self.peak_of is not None:
            mark = self.peak_of(self._key, layer, v.view)
        key = (self._key, layer, threshold, v.colormap, v.mode, v.view, width, height,
               self.rich_style, mark, self.style)
        frame = self._pframes.get(key)
        if frame is None:
            frame = self._build(pr, layer, threshold, mark, width, height)
            self._pframes[key] = frame
            while len(self._pframes) > KITTY_FRAMES:
                _, old = self._pframes.popitem(last=False)
                if old.image_id is not None:
                    self._send(kitty_delete(old.image_id))
        else:
            self._pframes.move_to_end(key)
        self._shown, self._memo = frame, (state, frame)
        if frame.payload:
            self._schedule_draw()
        return frame.strips

    def _build(self, pr: PixelRenderer, layer: int, threshold: float, mark: int | None,
               width: int, height: int) -> _Frame:
        v = self.view
        cw, ch = cell_pixels()
        pw, ph = fit_pixels(pr.image_hw, width * cw, height * ch)
        cols, rows = min(width, -(-pw // cw)), min(height, -(-ph // ch))
        px = pr.pixels(layer, (pw, ph), v.mode, threshold, v.colormap, v.view, mark, self.style)
        # The picture centred on whole cells, the margin in the panel's background.
        bg = self.rich_style.bgcolor
        rgb = bg.get_truecolor() if bg is not None else (0, 0, 0)
        canvas = np.empty((rows * ch, cols * cw, 3), dtype=np.uint8)
        canvas[:] = np.asarray(tuple(rgb), dtype=np.uint8)
        y, x = (rows * ch - ph) // 2, (cols * cw - pw) // 2
        canvas[y:y + ph, x:x + pw] = px[: rows * ch, : cols * cw]
        left, top = (width - cols) // 2, (height - rows) // 2
        pad = self.rich_style
        if self.graphics.protocol == "kitty":
            return self._kitty(canvas, cols, rows, width, height, left, top, pad)
        blank = Strip([Segment(" " * width, pad)], width)
        payload = (iterm_sequence(canvas, cols, rows) if self.graphics.protocol == "iterm"
                   else sixel_sequence(canvas))
        return _Frame([blank] * height, payload=payload, at=(left, top))

    def _kitty(self, canvas: np.ndarray, cols: int, rows: int, width: int, height: int,
               left: int, top: int, pad: Style) -> _Frame:
        from rich.console import Console
        from textual_image.renderable.tgp import Image as TGPImage

        image_id = next(_IDS)
        renderable = TGPImage(Image.fromarray(canvas), width=cols, height=rows)
        console = Console(width=cols, height=rows, file=io.StringIO(), color_system="truecolor")
        with _stdout_captured() as sink:
            # The kitty renderable yields Segments only (one line of placeholder cells each).
            lines = [seg for seg in renderable.__rich_console__(console, console.options)
                     if isinstance(seg, Segment)]
        sent = sink.getvalue()
        own = renderable.terminal_image_id
        # textual-image numbers its images from a random 32-bit counter; ours fit in 8 bits:
        # the library's id -> ours, in the escapes and in the cells' colour.
        sent = sent.replace(f"i={own},", f"i={image_id},").replace(f"i={own};", f"i={image_id};")
        self._send(sent)
        style = Style(color=Color.from_ansi(image_id))
        blank = Strip([Segment(" " * width, pad)], width)
        strips = [blank] * top
        for seg in lines:
            # The fourth char of each cell names the id's top byte: 0 for ids below 256.
            text = seg.text.rstrip("\n")
            cells = [text[i:i + 4] for i in range(0, len(text), 4)]
            text = "".join(c[:3] + chr(0x305) for c in cells)
            line = [Segment(" " * left, pad)] if left else []
            line.append(Segment(text, style))
            right = width - left - cols
            if right > 0:
                line.append(Segment(" " * right, pad))
            strips.append(Strip(line, width))
        strips += [blank] * max(0, height - len(strips))
        return _Frame(strips[:height], image_id=image_id)

    def _schedule_draw(self) -> None:
        if not self._pending:
            self._pending = True
            self.call_after_refresh(self._draw_payload)

    def _draw_payload(self) -> None:
        self._pending = False
        frame = self._shown
        if frame is None or not frame.payload or not self.is_mounted:
            return
        try:
            if not self.screen.is_active:
                return
        except Exception:  # no screen any more
            return
        x, y = self.region.x + frame.at[0], self.region.y + frame.at[1]
        self._send(f"\x1b7\x1b[{y + 1};{x + 1}H{frame.payload}\x1b8")

    def _forget(self) -> None:
        """Delete every kitty image this view sent (a new analysis, or the view going)."""
        for frame in self._pframes.values():
            if frame.image_id is not None:
                self._send(kitty_delete(frame.image_id))
        self._pframes.clear()
        self._shown = self._memo = None

    def on_mount(self) -> None:
        # Back from a dialog or another screen (or a suspend), Textual repaints this view from
        # its cached lines, over the Sixel/iTerm image: refresh so it is drawn again.
        self.app.screen_change_signal.subscribe(self, self._screen_changed)
        self.app.app_resume_signal.subscribe(self, lambda _app: self.refresh())
        # A notification that came and went over a Sixel/iTerm image left blank cells where it
        # was (repainted from Textual's cache, not through this view): draw the image again
        # after each layout change of the screen (which a toast's coming and going is).
        self.screen.screen_layout_refresh_signal.subscribe(self, self._layout_changed)

    def _layout_changed(self, _screen: object) -> None:
        if self._shown is not None and self._shown.payload:
            self._schedule_draw()

    def _screen_changed(self, screen: object) -> None:
        if screen is self.screen:
            self._shown = self._memo = None
            self.refresh()

    def on_unmount(self) -> None:
        self._forget()


def map_view(app: object, **kwargs) -> CamView:
    """The map widget for `app`: PixelView where its `graphics` shows real pixels, CamView
    (half-blocks) elsewhere."""
    graphics = getattr(app, "graphics", None)
    if graphics is not None and graphics.pixels:
        return PixelView(graphics, getattr(app, "map_style", "regions"), **kwargs)
    return CamView(**kwargs)
