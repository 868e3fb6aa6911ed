"""PNG export of a map over the image (the paper's figures), one file per layer and view: the
map drawn as on screen (true colormap colours, the peak token outlined), titled with the layer,
the view and the map, with a colour bar on the map's own scale (matplotlib, Agg; no pyplot
state, so it runs in a worker thread)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from flowtui.render.cells import PEAK_RGB, cam_overlay_image
from flowtui.render.colormaps import colormap_lut


def save_cam_pngs(
    image: np.ndarray,
    values: np.ndarray,
    regions: np.ndarray,
    folder: str | Path,
    token_views: np.ndarray | None = None,
    views: list[str] | None = None,
    mode: str = "overlay",
    threshold: float = 0.5,
    colormap: str = "viridis",
    prefix: str = "layer",
    *,
    what: str = "LLaVA-CAM",
    vmax: np.ndarray | None = None,
    marks: np.ndarray | None = None,
    notes: list[list[str]] | None = None,
) -> list[Path]:
    """Write one PNG per layer and view of `values` [L, N] (0..1, as painted) into `folder`:
    `<prefix>-NN.png` for a single view, `<prefix>-NN-<view>.png` for several.

    Each PNG shows the map over the image, a title with the layer (of L), the view and `what`
    (the map's name), and a colour bar: 0..1 with the threshold marked for the CAM (`vmax`
    None), or 0..vmax[layer, view] for a map scaled per layer and view (the attention).
    `marks` [L, V] is the token outlined in magenta in each layer and view (-1: none);
    `notes[layer][view]` a line under the picture (e.g. sink tokens left out of the scale)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    views = views or ["image"]
    L = values.shape[0]
    digits = max(2, len(str(L - 1)))
    paths = []
    for layer in range(L):
        for v, name in enumerate(views):
            mark = None if marks is None or marks[layer, v] < 0 else int(marks[layer, v])
            rgb = cam_overlay_image(
                np.asarray(image), values[layer], regions, token_views, v, mode, threshold,
                colormap, mark=mark,
            )
            top = None if vmax is None else float(vmax[layer, v])
            title = f"{what} · layer {layer}/{L - 1} · view {name} · {mode}"
            suffix = "" if len(views) == 1 else f"-{_safe(name)}"
            path = folder / f"{prefix}-{layer:0{digits}d}{suffix}.png"
            figure_png(rgb, path, title, colormap, threshold if top is None else None, top,
                       "□ peak token" if mark is not None else "",
                       notes[layer][v] if notes is not None else "")
            paths.append(path)
    return paths


def figure_png(
    rgb: np.ndarray,
    path: Path,
    title: str,
    colormap: str,
    threshold: float | None,
    vmax: float | None,
    peak: str = "",
    note: str = "",
) -> None:
    """The picture `rgb` with `title` above it and the colormap's bar beside it: 0..1 with
    `threshold` marked, or 0..`vmax` (None: 0..1)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.figure import Figure

    h, w = rgb.shape[:2]
    fig = Figure(figsize=(w / 100 + 1.6, h / 100 + 0.9), dpi=100, layout="constrained")
    canvas = FigureCanvasAgg(fig)  # fig.canvas, typed as the Agg canvas it is
    ax = fig.add_subplot()
    ax.imshow(rgb, interpolation="nearest")
    ax.set_axis_off()
    # Outside text (view names, notes) is never read as mathtext.
    ax.set_title(title, fontsize=9, parse_math=False)
    top = 1.0 if vmax is None or not np.isfinite(vmax) or vmax <= 0 else vmax
    cmap = ListedColormap(colormap_lut(colormap) / 255.0, name=colormap)
    bar = fig.colorbar(ScalarMappable(Normalize(0.0, top), cmap), ax=ax, fraction=0.08,
                       pad=0.02)
    bar.ax.tick_params(labelsize=8)
    label = f"{colormap} · 0..{top:.3g}"
    if threshold is not None:
        bar.ax.axhline(threshold * top, color="white", linewidth=1.5)
        bar.ax.axhline(threshold * top, color="black", linewidth=0.6, linestyle="--")
        label = f"{colormap} · threshold {threshold:.2f}"
    bar.set_label(label, fontsize=8, parse_math=False)
    lines = [s for s in (note,) if s]
    if lines:
        ax.text(0.0, -0.02, " · ".join(lines), transform=ax.transAxes, fontsize=8, va="top",
                parse_math=False)
    if peak:
        ax.text(1.0, -0.02, peak, transform=ax.transAxes, fontsize=8, va="top", ha="right",
                color=tuple(c / 255 for c in PEAK_RGB), parse_math=False)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3]
    info = PngInfo()  # what is drawn, also as text a program can read back
    info.add_text("Title", title)
    info.add_text("Colorbar", label)
    if peak:
        info.add_text("Peak", peak)
    if note:
        info.add_text("Comment", note)
    Image.fromarray(np.ascontiguousarray(pixels)).save(path, pnginfo=info)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "view"
