"""Image panel: the current layer's map (CAM or attention) over the image as half-block cells,
plus a legend that says which map and scale is drawn."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np
from rich.color import Color
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import var
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static

from flowtui.engine.analysis import Analysis
from flowtui.render.cells import PEAK_RGB, CamRenderer
from flowtui.render.colormaps import colormap_lut
from flowtui.render.maps import MAP_TITLES, TokenMap, attention_map, cam_map, map_threshold
from flowtui.textsafe import visible
from flowtui.ui.state import ViewState
from flowtui.ui.strips import grid_to_strips
from flowtui.ui.widgets.text_view import TextView

MapKey = tuple[str, bool]


def map_key(view: ViewState) -> MapKey:
    """Which TokenMap a view draws: the map mode, and the sink toggle where it applies."""
    return view.map_mode, view.map_mode == "attention" and view.exclude_sinks


def analysis_map(a: Analysis, key: MapKey) -> TokenMap:
    """The per-token map `key` of an analysis (the attention map needs `attention_tokens`)."""
    name, sinks = key
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
        self._key: MapKey = ("cam", False)
        self._frames: OrderedDict[tuple, list[Strip]] = OrderedDict()
        # (map, layer, view) -> the token to outline as the map's peak (None: no outline).
        self.peak_of: Callable[[MapKey, int, int], int | None] | None = None

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
        self._renderers = {("cam", False): self.renderer}
        self._key = ("cam", False)
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
            self.refresh()

    def set_view(self, view: ViewState) -> None:
        if view != self.view:
            self.view = view
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
            strips = self._frames[key] = grid_to_strips(grid, width, height, pad)
            while len(self._frames) > 256:
                self._frames.popitem(last=False)
        return strips

    def render_line(self, y: int) -> Strip:
        strips = self.frame()
        if y < len(strips):
            return strips[y]
        return Strip.blank(self.size.width, self.rich_style)


def _bar(view: ViewState, width: int, threshold: float | None) -> Text:
    """The colormap as a bar, with the threshold marked (None: no threshold is applied)."""
    lut = colormap_lut(view.colormap)
    bar = Text()
    mark = -1 if threshold is None else min(width - 1, int(round(threshold * (width - 1))))
    for i in range(width):
        r, g, b = (int(c) for c in lut[int(round(i / (width - 1) * 255))])
        if i == mark:
            fg = "black" if (r * 299 + g * 587 + b * 114) > 128_000 else "white"
            bar.append("┃", Style(color=fg, bgcolor=f"rgb({r},{g},{b})", bold=True))
        else:
            # Below the threshold the paper shows nothing: dim that part of the bar.
            if i < mark and view.mode != "image":
                r, g, b = r // 3, g // 3, b // 3
            bar.append(" ", Style(bgcolor=f"rgb({r},{g},{b})"))
    return bar


def _fit_line(left: str, middles: list[Text], rights: list[str], width: int) -> Text:
    """`left middle … right` with the longest middle that fits in `width` cells (a shorter
    right end is tried before a shorter middle)."""
    middle, right = middles[-1], rights[-1]
    fits = [
        (m, r) for m in middles for r in rights if len(left) + m.cell_len + len(r) + 2 <= width
    ]
    if fits:
        middle, right = fits[0]
    info = Text.assemble((left, "dim"), " ", middle)
    info.append(" " * max(1, width - info.cell_len - len(right)))
    info.append(right, "dim")
    info.truncate(width)
    return info


def first_fit(candidates: list[str], width: int) -> str:
    """The first of `candidates` (longest first) no wider than `width`, else the last."""
    return next((c for c in candidates if len(c) <= width), candidates[-1])


def legend_text(
    view: ViewState, width: int, vmax: float | None = None, sinks: int | None = None
) -> Text:
    """A colormap bar and, beneath it, which map and scale is drawn: the CAM over 0..1 with the
    threshold marked, or (`vmax` given) the attention over 0..vmax, with the number of sink
    tokens left out of the scale (`sinks`, None when the toggle is off)."""
    width = max(8, width)
    cmap, mode = (view.colormap, "bold"), (view.mode, "bold")
    if vmax is None:
        thr = view.threshold
        bar = _bar(view, width, thr)
        middles = [
            Text.assemble(("CAM", "bold"), " · ", (f"threshold {thr:.2f}", "bold"), " [ ]  ",
                          cmap, " c  ", mode, " o"),
            Text.assemble(("CAM", "bold"), " ", (f"thr {thr:.2f}", "bold"), " [ ]  ",
                          cmap, " c  ", mode, " o"),
            Text.assemble(("CAM", "bold"), " ", (f"thr {thr:.2f}", "bold"), " ", cmap, " ", mode),
            Text.assemble((f"thr {thr:.2f}", "bold"), " ", cmap, " ", mode),
            Text(f"thr {thr:.2f}", "bold"),
        ]
        return Text.assemble(bar, "\n", _fit_line("0", middles, ["1"], width))
    bar = _bar(view, width, None)
    if sinks is None:
        what = [Text("attention", "bold")]
    else:
        what = [
            Text.assemble(("attention", "bold"), " · ", (sinks_text(sinks, "sinks"), "bold"),
                          " k"),
            Text.assemble(("attention", "bold"), " ", (f"−{sinks} sink{'s' * (sinks != 1)}", "bold")),
            Text.assemble(("att.", "bold"), " ", (f"−{sinks}", "bold")),
        ]
    middles = [what[0] + Text.assemble("  ", cmap, " c  ", mode, " o")]
    middles += what + [Text("attention", "bold"), Text("att.", "bold")]
    rights = [f"max {vmax:.3g}", f"{vmax:.3g}", f"{vmax:.2g}"]
    return Text.assemble(bar, "\n", _fit_line("0", middles, rights, width))


def sinks_text(count: int, noun: str = "sink tokens") -> str:
    """'3 sink tokens excluded' (the singular for one)."""
    if count == 1:
        noun = noun.replace("tokens", "token").replace("sinks", "sink")
    return f"{count} {noun} excluded"


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
        yield CamView(id="image-cells")
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

    def peak_token(self, key: MapKey, layer: int, view: int) -> int | None:
        """The token the map `key` peaks on at `layer` in `view` (outlined on the image)."""
        tmap = self.token_map(key)
        return None if tmap is None or self.analysis is None else peak_token(
            self.analysis, tmap, layer, view)

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

    def _update_legend(self) -> None:
        tmap = self.token_map()
        if tmap is None or self.analysis is None:
            return
        legend = self.query_one("#image-legend", TextView)
        width = self.content_region.width or 30
        v = self.view
        if tmap.name == "cam":
            legend.set_text(legend_text(v, width))
            return
        layer = min(v.layer, tmap.vmax.shape[0] - 1)
        sinks = (
            tmap.sink_count(layer, self.analysis.view_tokens(v.view))
            if tmap.exclude_sinks
            else None
        )
        legend.set_text(legend_text(v, width, float(tmap.vmax[layer, v.view]), sinks))

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
    if a.cam is not None:
        r, c = np.unravel_index(i, a.image_grid)
        return f"□ max patch ({r},{c})"
    x0, y0, x1, y1 = (int(round(float(v))) for v in a.token_regions[i])
    return f"□ max at x {x0}-{x1}, y {y0}-{y1}"
