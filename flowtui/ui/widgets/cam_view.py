"""The image with a per-token map over it, as half-block cells: which map a view draws, and the
widget that draws it (whole frames cached per view and size)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np
from textual.strip import Strip
from textual.widget import Widget

from flowtui.engine.analysis import Analysis
from flowtui.render.cells import CamRenderer
from flowtui.render.maps import (
    LENS_MODES,
    TokenMap,
    attention_map,
    cam_map,
    lens_map,
    map_threshold,
)
from flowtui.ui.state import ViewState, focused
from flowtui.ui.strips import grid_to_strips, label_strips

MapKey = tuple[str, bool, int | None]


def map_key(view: ViewState) -> MapKey:
    """Which TokenMap a view draws: the map mode, the sink toggle where it applies, and the
    answer token it follows (None: the whole answer)."""
    return (view.map_mode, view.map_mode == "attention" and view.exclude_sinks,
            view.answer_token)


def analysis_map(a: Analysis, key: MapKey) -> TokenMap:
    """The per-token map `key` of an analysis (the attention map needs `attention_tokens`), for
    the answer token the key names (state.focused; the lens is the whole answer's)."""
    name, sinks, token = key
    if name in LENS_MODES and a.lens is not None:
        return lens_map(a.lens.word_prob, a.token_views, len(a.views), name)
    a = focused(a, token)
    if name == "attention" and a.attention_tokens is not None:
        return attention_map(a.attention_tokens, a.token_views, len(a.views), sinks)
    return cam_map(a.cam_tokens, a.token_views, len(a.views))


class CamView(Widget):
    """Draws the image (and a map) centred in its area; whole frames are cached per view + size."""

    DEFAULT_CSS = """
    CamView { width: 1fr; height: 1fr; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.renderer: CamRenderer | None = None
        self.view = ViewState()
        self._renderers: dict[MapKey, CamRenderer] = {}
        self._key: MapKey = ("cam", False, None)
        self._frames: OrderedDict[tuple, list[Strip]] = OrderedDict()
        # (map, layer, view) -> the token to outline as the map's peak (None: no outline).
        self.peak_of: Callable[[MapKey, int, int], int | None] | None = None
        # The words display: (layer, the token under each cell [rows, cols]) -> the labels
        # (row, col, text) to write over the image (render/word_labels.py).
        self.labels_of: Callable[[int, np.ndarray], list[tuple[int, int, str]]] | None = None

    def set_source(
        self,
        image: np.ndarray,
        values: np.ndarray | None,
        regions: np.ndarray | None = None,
        token_views: np.ndarray | None = None,
    ) -> None:
        """The image, its regions and views, with `values` as the CAM (the first map)."""
        if values is None or regions is None:  # image only (a preview while the model loads)
            values = np.zeros((1, 0), dtype=np.float32)
            regions = np.zeros((0, 4), dtype=np.float32)
        self.renderer = CamRenderer(image, values, regions, token_views)
        self._renderers = {("cam", False, None): self.renderer}
        self._key = ("cam", False, None)
        self._frames.clear()
        self.refresh()

    def set_map(self, key: MapKey, values: np.ndarray) -> None:
        """Draw the per-token `values` [L, N] (0..1) of map `key` from now on."""
        if self.renderer is None:
            return
        if key not in self._renderers:
            self._renderers[key] = self.renderer.with_values(values)
        if key != self._key:
            self._key = key
            self._changed()

    def forget_maps(self, names: tuple[str, ...]) -> None:
        """Drop the drawn maps `names` (their values changed: a new lens word)."""
        for key in [k for k in self._renderers if k[0] in names]:
            del self._renderers[key]
        self._frames.clear()
        self.refresh()

    def set_view(self, view: ViewState) -> None:
        if view != self.view:
            self.view = view
            self._changed()

    def _changed(self) -> None:
        """A new picture: the cells are drawn again (real-pixel views draw it their own way)."""
        self.refresh()

    def frame(self) -> list[Strip]:
        """The strips for the current view at the current size (cached)."""
        width, height = self.size
        renderer = self._renderers.get(self._key, self.renderer)
        if renderer is None or width < 1 or height < 1:
            return []
        v = self.view
        layer = min(v.layer, renderer.num_layers - 1)
        threshold = map_threshold(self._key[0], v.threshold)
        pad = self.rich_style
        mark = None
        if v.mode != "image" and self.peak_of is not None:
            mark = self.peak_of(self._key, layer, v.view)
        key = (self._key, layer, threshold, v.colormap, v.mode, v.view, width, height, pad, mark)
        strips = self._frames.get(key)
        if strips is None:
            cols, rows = renderer.fit(width, height)
            grid = renderer.cells(layer, cols, rows, v.mode, threshold, v.colormap, v.view, mark)
            strips = grid_to_strips(grid, width, height, pad)
            if self._key[0] == "words" and self.labels_of is not None:
                labels = self.labels_of(layer, renderer.owner((cols, rows), v.view))
                strips = label_strips(strips, grid, labels, width, height)
            self._frames[key] = strips
            while len(self._frames) > 256:
                self._frames.popitem(last=False)
        return strips

    def render_line(self, y: int) -> Strip:
        strips = self.frame()
        if y < len(strips):
            return strips[y]
        return Strip.blank(self.size.width, self.rich_style)
