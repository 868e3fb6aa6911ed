"""PNG export of the CAM overlays of every layer (the paper's figures, one file per layer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from flowtui.render.cells import cam_overlay_image


def save_cam_pngs(
    image: np.ndarray,
    cam: np.ndarray,
    folder: str | Path,
    mode: str = "overlay",
    threshold: float = 0.5,
    colormap: str = "viridis",
    prefix: str = "layer",
) -> list[Path]:
    """Write `<prefix>-NN.png` for every layer of `cam` [L, rows, cols] into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    digits = max(2, len(str(cam.shape[0] - 1)))
    paths = []
    for layer in range(cam.shape[0]):
        rgb = cam_overlay_image(np.asarray(image), cam[layer], mode, threshold, colormap)
        path = folder / f"{prefix}-{layer:0{digits}d}.png"
        Image.fromarray(rgb).save(path)
        paths.append(path)
    return paths
