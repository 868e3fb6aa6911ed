"""Image panel: the current layer's map (CAM or attention) over the image as half-block cells,
plus a legend that says which map and scale is drawn."""

from __future__ import annotations

import numpy as np
from rich.color import Color
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import var
from textual.widgets import Static

from flowtui.engine.analysis import Analysis
from flowtui.render.cells import PEAK_RGB
from flowtui.render.maps import LENS_MODES, MAP_TITLES, TokenMap
from flowtui.textsafe import visible
from flowtui.ui.state import ViewState, has_token_cursor, token_cam_missing
from flowtui.ui.widgets.answer_panel import token_label
from flowtui.ui.widgets.cam_view import CamView, MapKey, analysis_map, map_key
from flowtui.ui.widgets.lens_words import image_labels, lens_legend
from flowtui.ui.widgets.map_legend import first_fit, legend_text, sinks_text
from flowtui.ui.widgets.pixel_view import map_view
from flowtui.ui.widgets.text_view import TextView

# CamView and the map helpers are imported from here by callers that predate the split.
__all__ = ["CamView", "ImagePanel", "analysis_map", "map_key", "peak_token", "sinks_text"]


class ImagePanel(Vertical):
    """The image panel: CamView above, legend below, a message while nothing is loaded."""

    DEFAULT_CSS = """
    ImagePanel { height: 1fr; }
    ImagePanel > #image-message { height: auto; color: $text-muted; padding: 0 1; }
    ImagePanel > #image-legend { height: 2; }
    """

    # Bound to the explorer's state (data_bind): the panel follows it, nobody pushes to it.
    analysis: var[Analysis | None] = var(None, always_update=True, init=False)
    view: var[ViewState] = var(ViewState, init=False)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.border_title = "CAM"
        self._maps: dict[MapKey, TokenMap] = {}

    def compose(self) -> ComposeResult:
        yield Static("loading…", id="image-message")
        yield map_view(self.app, id="image-cells")
        yield TextView(id="image-legend")

    @property
    def cam_view(self) -> CamView:
        return self.query_one(CamView)

    def on_mount(self) -> None:
        self.query_one("#image-legend").display = False

    def set_message(self, text: str | Text) -> None:
        msg = self.query_one("#image-message", Static)
        # Messages quote errors and paths: never markup, escapes made visible.
        msg.update(Text(visible(text)) if isinstance(text, str) else text)
        msg.display = bool(text)

    def set_preview(self, image: np.ndarray) -> None:
        if self.analysis is None:
            self.cam_view.peak_of = None
            self.cam_view.labels_of = None
            self.cam_view.set_source(image, None)
            self.cam_view.set_view(ViewState(mode="image"))

    def watch_analysis(self, old: Analysis | None, analysis: Analysis | None) -> None:
        # The same object again is an edit (a sweep, a run): the maps stay as they are.
        if analysis is None or analysis is old:
            return
        self._maps = {}
        self.cam_view.set_source(
            analysis.image, analysis.cam_tokens, analysis.token_regions, analysis.token_views
        )
        self.cam_view.peak_of = self.peak_token
        self.cam_view.labels_of = self.word_labels
        self.query_one("#image-legend").display = True
        self.set_message("")
        self._sync()

    def watch_view(self) -> None:
        self._sync()

    def token_map(self, key: MapKey | None = None) -> TokenMap | None:
        """The map `key` (default: the one the current view draws), computed once per map and
        sink setting."""
        if self.analysis is None:
            return None
        key = key or map_key(self.view)
        if key not in self._maps:
            self._maps[key] = analysis_map(self.analysis, key)
        return self._maps[key]

    def forget_lens(self) -> None:
        """The analysis' lens changed (a new word): its maps are computed again."""
        for key in [k for k in self._maps if k[0] in LENS_MODES]:
            del self._maps[key]
        self.cam_view.forget_maps(LENS_MODES)

    def refresh_map(self) -> None:
        self._sync()

    def peak_token(self, key: MapKey, layer: int, view: int) -> int | None:
        """The token the map `key` peaks on at `layer` in `view` (outlined on the image)."""
        tmap = self.token_map(key)
        return None if tmap is None or self.analysis is None else peak_token(
            self.analysis, tmap, layer, view)

    def word_labels(self, layer: int, cell_owner: np.ndarray) -> list[tuple[int, int, str]]:
        """The words display's labels over the image (lens_words.image_labels)."""
        if self.analysis is None or self.analysis.lens is None:
            return []
        return image_labels(self.analysis, layer, cell_owner)

    def _sync(self) -> None:
        tmap = self.token_map()
        if self.analysis is None or tmap is None:
            return
        v = self.view
        self.cam_view.set_map(map_key(v), tmap.values)
        self.cam_view.set_view(v)
        self._update_titles()
        self._update_legend()

    def _update_titles(self) -> None:
        tmap = self.token_map()
        if tmap is None or self.analysis is None:
            return
        a, v = self.analysis, self.view
        # Room inside the corners and the title's padding; narrow panels get shorter texts.
        room = max(8, (self.size.width or 60) - 4)
        # Text, not str: a str title is parsed as markup, and view names come from the snapshot.
        self.border_title = Text(first_fit(panel_titles(a, v, tmap.name), room))
        peak = _peak(a, tmap, v.layer, v.view)
        if v.mode == "image":  # no outline is drawn on the plain image
            peak = peak.removeprefix("□ ")
        subtitles = [peak]
        if tmap.exclude_sinks:
            n = tmap.sink_count(v.layer, a.view_tokens(v.view))
            subtitles = [f"{peak} · {sinks_text(n)}", f"{peak} · {sinks_text(n, 'sinks')}", peak]
        subtitle = Text(first_fit(subtitles, room))
        if subtitle.plain.startswith("□"):  # in the outline's own colour
            subtitle.stylize(Style(color=Color.from_rgb(*PEAK_RGB), bold=True), 0, 1)
        self.border_subtitle = subtitle

    def map_style(self) -> str | None:
        """The map style drawn at real pixels (regions or smooth), None in half-blocks."""
        return getattr(self.cam_view, "style_title", None)

    def set_map_style(self, style: str) -> None:
        set_style = getattr(self.cam_view, "set_style", None)
        if set_style is not None:
            set_style(style)
            self._update_legend()

    def _update_legend(self) -> None:
        tmap = self.token_map()
        if tmap is None or self.analysis is None:
            return
        legend = self.query_one("#image-legend", TextView)
        width = self.content_region.width or 30
        v = self.view
        style = self.map_style()
        if tmap.name == "cam":
            legend.set_text(legend_text(v, width, style=style))
            return
        if tmap.name in LENS_MODES and self.analysis.lens is not None:
            legend.set_text(lens_legend(self.analysis, v, width, tmap.name == "words"))
            return
        layer = min(v.layer, tmap.vmax.shape[0] - 1)
        sinks = (
            tmap.sink_count(layer, self.analysis.view_tokens(v.view))
            if tmap.exclude_sinks
            else None
        )
        legend.set_text(legend_text(v, width, float(tmap.vmax[layer, v.view]), sinks, style))

    def on_resize(self) -> None:
        if self.analysis is not None:
            self._update_titles()
            self._update_legend()


def view_label(a: Analysis, view: int) -> str:
    """'tiles (2/2)' where the analysis has several views, '' where it has one."""
    if len(a.views) < 2:
        return ""
    return f"{visible(a.views[view])} ({view + 1}/{len(a.views)})"


def panel_titles(a: Analysis, v: ViewState, name: str) -> list[str]:
    """The image panel's title, longest first; with a chosen answer token, each form names it
    (and says where the CAM is the whole answer's because no per-token CAM was computed)."""
    base = _panel_titles(a, v, name)
    token = v.answer_token
    if token is None or not has_token_cursor(a):
        return base
    label = token_label(a, token)
    short = f"t{token + 1}/{len(a.answer_token_ids)}"
    if name == "cam" and token_cam_missing(a, token):
        label += " · whole-answer CAM (no per-token CAM: --per-token)"
        short += " whole-answer CAM"
    return [f"{t} · {label}" for t in base] + [f"{t} · {short}" for t in base] + base


def _panel_titles(a: Analysis, v: ViewState, name: str) -> list[str]:
    """The image panel's title, longest first: e.g. 'CAM · tiles (2/2) · layer 3/27' (no view
    part for a single view), then shorter forms for narrow panels."""
    title = MAP_TITLES.get(name, name)
    short = {"attention": "Attn"}.get(name, title)
    layer = f"layer {v.layer}/{a.num_layers - 1}"
    if len(a.views) < 2:
        return [f"{title} · {layer}", f"{short} · L{v.layer}/{a.num_layers - 1}"]
    n, view = len(a.views), visible(a.views[v.view])
    return [
        f"{title} · {view_label(a, v.view)} · {layer}",
        f"{short} · {view} ({v.view + 1}/{n}) · {layer}",
        f"{short} · {view} {v.view + 1}/{n} · L{v.layer}/{a.num_layers - 1}",
        f"{view} {v.view + 1}/{n} · L{v.layer}",
    ]


def peak_token(a: Analysis, tmap: TokenMap, layer: int, view: int) -> int | None:
    """The token (index into N) where the drawn map peaks in `view` at `layer`, among the
    tokens with a region (sinks left out when they are excluded); None for an all-zero map."""
    tokens = a.view_tokens(view)
    # Only tokens with a region can be pointed at on the image.
    tokens = tokens[np.isfinite(a.token_regions[tokens]).all(axis=1)]
    return tmap.peak(min(layer, tmap.values.shape[0] - 1), tokens)


def _peak(a: Analysis, tmap: TokenMap, layer: int, view: int) -> str:
    """Where the drawn map peaks in the current view, as outlined on the image (□): the grid
    cell where there is one grid, else the token's region."""
    i = peak_token(a, tmap, layer, view)
    if i is None:
        return "all-zero map"
    if a.cam is not None and a.image_grid is not None:  # a CAM grid has both
        r, c = np.unravel_index(i, a.image_grid)
        return f"□ max patch ({r},{c})"
    x0, y0, x1, y1 = (int(round(float(v))) for v in a.token_regions[i])
    return f"□ max at x {x0}-{x1}, y {y0}-{y1}"
