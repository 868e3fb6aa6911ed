"""PNG export of the CAM overlays of every layer (the paper's figures, one file per layer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from flowtui.render.cells import cam_overlay_image


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
) -> list[Path]:
    """Write one PNG per layer and view of `values` [L, N] into `folder`:
    `<prefix>-NN.png` for a single view, `<prefix>-NN-<view>.png` for several."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    views = views or ["image"]
    digits = max(2, len(str(values.shape[0] - 1)))
    paths = []
    for layer in range(values.shape[0]):
        for v, name in enumerate(views):
            rgb = cam_overlay_image(
                np.asarray(image), values[layer], regions, token_views, v, mode, threshold,
                colormap,
            )
            suffix = "" if len(views) == 1 else f"-{_safe(name)}"
            path = folder / f"{prefix}-{layer:0{digits}d}{suffix}.png"
            Image.fromarray(rgb).save(path)
            paths.append(path)
    return paths


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "view"
