"""Image panel: the current layer's CAM over the image as half-block cells, plus a legend."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static

from flowtui.engine.analysis import Analysis
from flowtui.render.cells import CamRenderer
from flowtui.render.colormaps import colormap_lut
from flowtui.ui.state import ViewState
from flowtui.ui.strips import grid_to_strips
from flowtui.ui.widgets.text_view import TextView


class CamView(Widget):
    """Draws the image (and CAM) centred in its area; whole frames are cached per view + size."""

    DEFAULT_CSS = """
    CamView { width: 1fr; height: 1fr; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.renderer: CamRenderer | None = None
        self.view = ViewState()
        self._frames: OrderedDict[tuple, list[Strip]] = OrderedDict()

    def set_source(
        self,
        image: np.ndarray,
        values: np.ndarray | None,
        regions: np.ndarray | None = None,
        token_views: np.ndarray | None = None,
    ) -> None:
        if values is None or regions is None:  # image only (a preview while the model loads)
            values = np.zeros((1, 0), dtype=np.float32)
            regions = np.zeros((0, 4), dtype=np.float32)
        self.renderer = CamRenderer(image, values, regions, token_views)
        self._frames.clear()
        self.refresh()

    def set_view(self, view: ViewState) -> None:
        if view != self.view:
            self.view = view
            self.refresh()

    def frame(self) -> list[Strip]:
        """The strips for the current view at the current size (cached)."""
        width, height = self.size
        if self.renderer is None or width < 1 or height < 1:
            return []
        v = self.view
        layer = min(v.layer, self.renderer.num_layers - 1)
        pad = self.rich_style
        key = (layer, v.threshold, v.colormap, v.mode, v.view, width, height, pad)
        strips = self._frames.get(key)
        if strips is None:
            cols, rows = self.renderer.fit(width, height)
            grid = self.renderer.cells(layer, cols, rows, v.mode, v.threshold, v.colormap, v.view)
            strips = self._frames[key] = grid_to_strips(grid, width, height, pad)
            while len(self._frames) > 256:
                self._frames.popitem(last=False)
        return strips

    def render_line(self, y: int) -> Strip:
        strips = self.frame()
        if y < len(strips):
            return strips[y]
        return Strip.blank(self.size.width, self.rich_style)


def legend_text(view: ViewState, width: int) -> Text:
    """A colormap bar with the threshold marked, and the current settings beneath it."""
    width = max(8, width)
    lut = colormap_lut(view.colormap)
    bar = Text()
    mark = min(width - 1, int(round(view.threshold * (width - 1))))
    for i in range(width):
        r, g, b = (int(c) for c in lut[int(round(i / (width - 1) * 255))])
        below = i < mark and view.mode != "image"
        if i == mark:
            fg = "black" if (r * 299 + g * 587 + b * 114) > 128_000 else "white"
            bar.append("┃", Style(color=fg, bgcolor=f"rgb({r},{g},{b})", bold=True))
        else:
            # Below the threshold the paper shows nothing: dim that part of the bar.
            if below:
                r, g, b = r // 3, g // 3, b // 3
            bar.append(" ", Style(bgcolor=f"rgb({r},{g},{b})"))
    if width >= 46:
        info = Text.assemble(
            ("0", "dim"), " ", (f"threshold {view.threshold:.2f}", "bold"), " [ ]  ",
            (view.colormap, "bold"), " c  ", (view.mode, "bold"), " o",
        )
    else:  # narrow panel: the same facts, shorter
        info = Text.assemble(
            ("0", "dim"), " ", (f"thr {view.threshold:.2f}", "bold"), " ",
            (view.colormap, "bold"), " ", (view.mode, "bold"),
        )
    pad = max(1, width - info.cell_len - 1)
    info.append(" " * pad)
    info.append("1", "dim")
    info.truncate(width)
    return Text.assemble(bar, "\n", info)


class ImagePanel(Vertical):
    """The image panel: CamView above, legend below, a message while nothing is loaded."""

    DEFAULT_CSS = """
    ImagePanel { height: 1fr; }
    ImagePanel > #image-message { height: auto; color: $text-muted; padding: 0 1; }
    ImagePanel > #image-legend { height: 2; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.analysis: Analysis | None = None
        self.view = ViewState()
        self.border_title = "CAM"

    def compose(self) -> ComposeResult:
        yield Static("loading…", id="image-message")
        yield CamView(id="image-cells")
        yield TextView(id="image-legend")

    @property
    def cam_view(self) -> CamView:
        return self.query_one(CamView)

    def on_mount(self) -> None:
        self.query_one("#image-legend").display = False

    def set_message(self, text: str | Text) -> None:
        msg = self.query_one("#image-message", Static)
        msg.update(text)
        msg.display = bool(text)

    def set_preview(self, image: np.ndarray) -> None:
        if self.analysis is None:
            self.cam_view.set_source(image, None)
            self.cam_view.set_view(ViewState(mode="image"))

    def set_analysis(self, analysis: Analysis) -> None:
        self.analysis = analysis
        self.cam_view.set_source(
            analysis.image, analysis.cam_tokens, analysis.token_regions, analysis.token_views
        )
        self.query_one("#image-legend").display = True
        self.set_message("")
        self._sync()

    def set_view(self, view: ViewState) -> None:
        self.view = view
        self._sync()

    def _sync(self) -> None:
        if self.analysis is None:
            return
        self.cam_view.set_view(self.view)
        a, v = self.analysis, self.view
        self.border_title = f"CAM · layer {v.layer}/{a.num_layers - 1}"
        self.border_subtitle = _peak(a, v.layer, v.view)
        self._update_legend()

    def _update_legend(self) -> None:
        legend = self.query_one("#image-legend", TextView)
        legend.set_text(legend_text(self.view, self.content_region.width or 30))

    def on_resize(self) -> None:
        if self.analysis is not None:
            self._update_legend()


def _peak(a: Analysis, layer: int, view: int) -> str:
    """Where the current view's map peaks: grid cell where there is one grid, else the region."""
    tokens = a.view_tokens(view)
    values = a.cam_tokens[layer, tokens]
    if not len(values) or not np.any(values > 0):
        return "all-zero map"
    i = int(tokens[int(np.argmax(values))])
    if a.cam is not None:
        r, c = np.unravel_index(i, a.image_grid)
        return f"max patch ({r},{c})"
    x0, y0, x1, y1 = (int(round(float(v))) for v in a.token_regions[i])
    return f"max at x {x0}-{x1}, y {y0}-{y1}"
