"""Image + CAM -> pixels -> half-block cells (two vertically stacked pixels per terminal cell).

A cell is drawn as "▀" with the top pixel as foreground and the bottom pixel as background, so
a terminal cell (about twice as tall as wide) shows two square pixels.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from PIL import Image

from flowtui.render.colormaps import apply_colormap

DISPLAY_MODES: tuple[str, ...] = ("overlay", "heatmap", "image")
HALF_BLOCK = "▀"
# Heat opacity over the image where the CAM is at or above the threshold.
OVERLAY_ALPHA = 0.6


@dataclass(frozen=True)
class CellGrid:
    """Colours of a block of half-block cells: `top` and `bottom` are uint8 [rows, cols, 3]."""

    top: np.ndarray
    bottom: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.top.shape[0])

    @property
    def cols(self) -> int:
        return int(self.top.shape[1])

    @classmethod
    def from_pixels(cls, pixels: np.ndarray) -> CellGrid:
        """Pair up pixel rows; an odd last row gets a copy of itself as its bottom half."""
        if pixels.shape[0] % 2:
            pixels = np.concatenate([pixels, pixels[-1:]], axis=0)
        return cls(top=np.ascontiguousarray(pixels[0::2]), bottom=np.ascontiguousarray(pixels[1::2]))


def fit_cells(image_hw: tuple[int, int], max_cols: int, max_rows: int) -> tuple[int, int]:
    """Largest (cols, rows) of half-block cells that holds the image with its aspect ratio."""
    h, w = image_hw
    if max_cols < 1 or max_rows < 1 or h < 1 or w < 1:
        return 0, 0
    scale = min(max_cols / w, 2 * max_rows / h)
    cols = max(1, min(max_cols, int(round(w * scale))))
    rows = max(1, min(max_rows, int(round(h * scale / 2))))
    return cols, rows


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 [H, W, 3] resized to (width, height), area-averaged when shrinking."""
    w, h = size
    pil = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    resample = Image.Resampling.BOX if w <= pil.width and h <= pil.height else Image.Resampling.BILINEAR
    return np.asarray(pil.resize((w, h), resample))


def upsample_cam(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A patch-grid CAM [rows, cols] bilinearly resized to (width, height), as the paper does."""
    w, h = size
    pil = Image.fromarray(np.asarray(cam, dtype=np.float32), mode="F")
    return np.clip(np.asarray(pil.resize((w, h), Image.Resampling.BILINEAR)), 0.0, 1.0)


def compose_pixels(
    image: np.ndarray,
    cam: np.ndarray,
    mode: str = "overlay",
    threshold: float = 0.5,
    colormap: str = "viridis",
) -> np.ndarray:
    """Combine an image and an already resized CAM of the same height/width into RGB pixels.

    The paper zeroes CAM values below the threshold for display: in `overlay` those pixels show
    the plain image; in `heatmap` they take the colormap's lowest colour.
    """
    if mode not in DISPLAY_MODES:
        raise ValueError(f"unknown display mode {mode!r} (choose from {', '.join(DISPLAY_MODES)})")
    if mode == "image":
        return image
    shown = np.where(cam >= threshold, cam, 0.0)
    heat = apply_colormap(shown, colormap)
    if mode == "heatmap":
        return heat
    mask = (cam >= threshold) & (cam > 0)
    out = image.copy()
    blend = OVERLAY_ALPHA * heat[mask].astype(np.float32) + (1 - OVERLAY_ALPHA) * image[mask]
    out[mask] = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    return out


class CamRenderer:
    """Renders one analysis' image + per-layer CAMs at any cell size, caching what it made.

    The resized image is shared by all layers; each (layer, size, mode, threshold, colormap)
    result is kept in a small LRU so flipping between layers costs a dictionary lookup.
    """

    def __init__(self, image: np.ndarray, cam: np.ndarray, cache_size: int = 512) -> None:
        self.image = np.asarray(image, dtype=np.uint8)
        self.cam = np.asarray(cam, dtype=np.float32)
        self._images: dict[tuple[int, int], np.ndarray] = {}
        self._cams: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._cells: OrderedDict[tuple, CellGrid] = OrderedDict()
        self._cache_size = cache_size

    @property
    def num_layers(self) -> int:
        return int(self.cam.shape[0])

    def fit(self, max_cols: int, max_rows: int) -> tuple[int, int]:
        return fit_cells(self.image.shape[:2], max_cols, max_rows)

    def pixels(
        self, layer: int, size: tuple[int, int], mode: str, threshold: float, colormap: str
    ) -> np.ndarray:
        """RGB uint8 [height, width, 3] for `layer` at pixel `size` = (width, height)."""
        img = self._images.get(size)
        if img is None:
            img = self._images[size] = resize_image(self.image, size)
        if mode == "image":
            return img
        key = (layer, size)
        cam = self._cams.get(key)
        if cam is None:
            cam = self._cams[key] = upsample_cam(self.cam[layer], size)
            while len(self._cams) > self._cache_size:
                self._cams.popitem(last=False)
        return compose_pixels(img, cam, mode, threshold, colormap)

    def cells(
        self,
        layer: int,
        cols: int,
        rows: int,
        mode: str = "overlay",
        threshold: float = 0.5,
        colormap: str = "viridis",
    ) -> CellGrid:
        """The half-block cells for `layer` at exactly `cols` x `rows` cells."""
        key = (layer, cols, rows, mode, round(threshold, 4), colormap)
        grid = self._cells.get(key)
        if grid is not None:
            self._cells.move_to_end(key)
            return grid
        grid = CellGrid.from_pixels(self.pixels(layer, (cols, rows * 2), mode, threshold, colormap))
        self._cells[key] = grid
        while len(self._cells) > self._cache_size:
            self._cells.popitem(last=False)
        return grid


def cam_overlay_image(
    image: np.ndarray,
    cam: np.ndarray,
    mode: str = "overlay",
    threshold: float = 0.5,
    colormap: str = "viridis",
    min_side: int = 336,
) -> np.ndarray:
    """A full-resolution RGB overlay of one CAM for PNG export (small images are upscaled)."""
    h, w = image.shape[:2]
    scale = max(1.0, min_side / max(1, min(h, w)))
    size = (int(round(w * scale)), int(round(h * scale)))
    img = resize_image(image, size) if scale != 1.0 else np.asarray(image, dtype=np.uint8)
    return compose_pixels(img, upsample_cam(cam, size), mode, threshold, colormap)
