"""The explorer's exports: a `.flowtui` snapshot (with the screen as SVG) and the map as PNGs.

A mixin of the explorer screen: it reads the screen's `analysis`, `view`, `stem` and
`image_path`, asks for a path, and writes in a thread worker (exports are not engine jobs: they
run beside one).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from textual import work
from textual.message import Message
from textual.screen import Screen

from flowtui.engine.analysis import Analysis
from flowtui.render.maps import map_threshold
from flowtui.textsafe import visible
from flowtui.ui.jobs import one_line
from flowtui.ui.screens import PathPrompt
from flowtui.ui.state import ViewState
from flowtui.ui.widgets.cam_view import analysis_map, map_key
from flowtui.ui.widgets.image_panel import peak_token
from flowtui.ui.widgets.map_legend import sinks_text


@dataclass
class ExportDone(Message):
    what: str
    path: str


@dataclass
class ExportFailed(Message):
    reason: str


def timestamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


class ExportActions(Screen):
    """The `e` and `p` actions of a screen that shows one analysis."""

    analysis: Analysis | None
    view: ViewState
    stem: str
    image_path: str | None

    def action_export(self) -> None:
        if self.analysis is None:
            self.app.notify("nothing to export yet", severity="warning")
            return
        default = f"{self.stem}-{timestamp()}.flowtui"
        self.app.push_screen(
            PathPrompt("Export snapshot (.flowtui, includes the screen as SVG)", default),
            self._export_to,
        )

    def _export_to(self, path: str | None) -> None:
        if not path or self.analysis is None:
            return
        svg = self.app.export_screenshot(title=f"flowtui · {self.stem}")
        self._save_worker(self.analysis, path, svg)

    @work(thread=True, exit_on_error=False, group="export")
    def _save_worker(self, analysis: Analysis, path: str, svg: str) -> None:
        try:
            # Never over the input image, nor over any file that is not a snapshot.
            written = analysis.save(path, screen_svg=svg, inputs=[self.image_path])
            self.post_message(ExportDone("snapshot", str(written)))
        except Exception as exc:  # noqa: BLE001
            self.post_message(ExportFailed(one_line(exc)))

    def action_export_pngs(self) -> None:
        if self.analysis is None:
            self.app.notify("nothing to export yet", severity="warning")
            return
        a, v = self.analysis, self.view
        what = "the CAM" if v.map_mode == "cam" else "the attention map"
        if v.map_mode == "attention" and v.exclude_sinks:
            what += " (sinks excluded)"
        each = "layer and view: layer-NN-VIEW.png" if len(a.views) > 1 else "layer: layer-NN.png"
        settings = "colormap, threshold and mode" if v.map_mode == "cam" else "colormap and mode"
        default = f"{self.stem}-{v.map_mode}-{timestamp()}"
        self.app.push_screen(
            PathPrompt(
                f"Export {what} as PNGs into folder",
                default,
                f"one PNG per {each}\ncurrent {settings} · Enter saves · Esc cancels",
            ),
            self._pngs_to,
        )

    def _pngs_to(self, folder: str | None) -> None:
        if folder and self.analysis is not None:
            self._pngs_worker(self.analysis, folder, self.view)

    @work(thread=True, exit_on_error=False, group="export")
    def _pngs_worker(self, analysis: Analysis, folder: str, view: ViewState) -> None:
        from flowtui.render.png import save_cam_pngs

        try:
            mode = view.mode if view.mode != "image" else "overlay"
            key = map_key(view)
            tmap = analysis_map(analysis, key)
            layers, nviews = tmap.values.shape[0], len(analysis.views)
            marks = np.full((layers, nviews), -1, np.int64)
            notes = [[""] * nviews for _ in range(layers)]
            for layer in range(layers):
                for v in range(nviews):
                    peak = peak_token(analysis, tmap, layer, v)
                    marks[layer, v] = -1 if peak is None else peak
                    if tmap.exclude_sinks:
                        count = tmap.sink_count(layer, analysis.view_tokens(v))
                        notes[layer][v] = f"{sinks_text(count)} (drawn in the top colour)"
            cam = key[0] == "cam"
            paths = save_cam_pngs(
                analysis.image, tmap.values, analysis.token_regions,
                folder, analysis.token_views, analysis.views, mode,
                map_threshold(key[0], view.threshold), view.colormap,
                what="LLaVA-CAM" if cam else "attention of the answer",
                vmax=None if cam else tmap.vmax, marks=marks, notes=notes,
            )
            self.post_message(ExportDone(f"{len(paths)} PNGs", folder))
        except Exception as exc:  # noqa: BLE001
            self.post_message(ExportFailed(one_line(exc)))

    def on_export_done(self, message: ExportDone) -> None:
        self.app.notify(f"saved {message.what} to {message.path}", timeout=5)


def default_stem(image: str | None, snapshot_path: str | None) -> str:
    # Shown in the export prompts: a file name must not drive the terminal either.
    for p in (image, snapshot_path):
        if p:
            return visible(Path(p).stem) or "flowtui"
    return "flowtui"
