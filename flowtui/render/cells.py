"""Image + CAM -> pixels -> half-block cells (two vertically stacked pixels per terminal cell).

A cell is drawn as "▀" with the top pixel as foreground and the bottom pixel as background, so
a terminal cell (about twice as tall as wide) shows two square pixels.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from PIL import Image

from flowtui.render.colormaps import apply_colormap

DISPLAY_MODES: tuple[str, ...] = ("overlay", "heatmap", "image")
HALF_BLOCK = "▀"
# Heat opacity over the image where the CAM is at or above the threshold.
OVERLAY_ALPHA = 0.6
# Parts of the image no feature token covers are drawn at 1/UNSEEN_DIM brightness.
UNSEEN_DIM = 3


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


def owner_map(
    regions: np.ndarray, tokens: np.ndarray, image_hw: tuple[int, int], size: tuple[int, int]
) -> np.ndarray:
    """int32 [height, width]: which of `tokens` covers each pixel of the image drawn at `size`
    = (width, height), or -1. A pixel belongs to a token when its centre lies in the token's
    region (original-image coordinates); later tokens paint over earlier ones."""
    w, h = size
    H, W = image_hw
    owner = np.full((h, w), -1, dtype=np.int32)
    if not len(tokens):
        return owner
    r = np.asarray(regions, dtype=np.float64)[tokens]
    ok = np.isfinite(r).all(axis=1)
    sx, sy = w / W, h / H
    x0 = np.ceil(r[:, 0] * sx - 0.5)
    x1 = np.ceil(r[:, 2] * sx - 0.5)
    y0 = np.ceil(r[:, 1] * sy - 0.5)
    y1 = np.ceil(r[:, 3] * sy - 0.5)
    for t, a, b, c, d in zip(np.asarray(tokens)[ok], x0[ok], x1[ok], y0[ok], y1[ok], strict=True):
        owner[max(int(c), 0):max(int(d), 0), max(int(a), 0):max(int(b), 0)] = t
    return owner


def paint(values: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """float32 [h, w]: each pixel gets its token's value; NaN where no token covers it."""
    v = np.append(np.asarray(values, dtype=np.float32), np.float32(np.nan))
    return v[owner]  # owner -1 picks the NaN appended last


def compose_pixels(
    image: np.ndarray,
    cam: np.ndarray,
    mode: str = "overlay",
    threshold: float = 0.5,
    colormap: str = "viridis",
) -> np.ndarray:
    """Combine an image and an already resized CAM of the same height/width into RGB pixels.

    The paper zeroes CAM values below the threshold for display: in `overlay` those pixels show
    the plain image; in `heatmap` they take the colormap's lowest colour. Pixels no token covers
    (NaN: parts of the image the model never saw, such as a centre crop's sides) are dimmed.
    """
    if mode not in DISPLAY_MODES:
        raise ValueError(f"unknown display mode {mode!r} (choose from {', '.join(DISPLAY_MODES)})")
    if mode == "image":
        return image
    unseen = np.isnan(cam)
    cam = np.where(unseen, 0.0, cam)
    shown = np.where(cam >= threshold, cam, 0.0)
    heat = apply_colormap(shown, colormap)
    if mode == "heatmap":
        if unseen.any():
            heat[unseen] = (image[unseen] // UNSEEN_DIM).astype(np.uint8)
        return heat
    mask = (cam >= threshold) & (cam > 0)
    out = image.copy()
    if unseen.any():
        out[unseen] = (image[unseen] // UNSEEN_DIM).astype(np.uint8)
    blend = OVERLAY_ALPHA * heat[mask].astype(np.float32) + (1 - OVERLAY_ALPHA) * image[mask]
    out[mask] = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    return out


class CamRenderer:
    """Renders one analysis' image + per-layer token values at any cell size, caching results.

    `values` [L, N] in [0, 1] per feature token, `regions` [N, 4] on the original image,
    `token_views` [N]: only the tokens of the chosen view are painted. The resized image and
    each size's owner map are shared by all layers; each (layer, size, mode, threshold,
    colormap, view) result is kept in a small LRU so flipping layers costs a dictionary lookup.
    """

    def __init__(
        self,
        image: np.ndarray,
        values: np.ndarray,
        regions: np.ndarray,
        token_views: np.ndarray | None = None,
        cache_size: int = 512,
    ) -> None:
        self.image = np.asarray(image, dtype=np.uint8)
        self.values = np.asarray(values, dtype=np.float32)
        self.regions = np.asarray(regions, dtype=np.float32)
        n = self.values.shape[1]
        self.token_views = (
            np.zeros(n, dtype=np.int16) if token_views is None else np.asarray(token_views)
        )
        self._images: dict[tuple[int, int], np.ndarray] = {}
        self._owners: dict[tuple, np.ndarray] = {}
        self._cells: OrderedDict[tuple, CellGrid] = OrderedDict()
        self._cache_size = cache_size

    @property
    def num_layers(self) -> int:
        return int(self.values.shape[0])

    def with_values(self, values: np.ndarray) -> CamRenderer:
        """A renderer of other per-token values [L, N] over the same image, regions and views
        (another map mode): it shares the resized images and owner maps, not the cells."""
        other = copy.copy(self)
        other.values = np.asarray(values, dtype=np.float32)
        other._cells = OrderedDict()
        return other

    def fit(self, max_cols: int, max_rows: int) -> tuple[int, int]:
        return fit_cells(self.image.shape[:2], max_cols, max_rows)

    def owner(self, size: tuple[int, int], view: int = 0) -> np.ndarray:
        key = (size, view)
        if key not in self._owners:
            tokens = np.flatnonzero(self.token_views == view)
            self._owners[key] = owner_map(self.regions, tokens, self.image.shape[:2], size)
        return self._owners[key]

    def pixels(
        self,
        layer: int,
        size: tuple[int, int],
        mode: str,
        threshold: float,
        colormap: str,
        view: int = 0,
    ) -> np.ndarray:
        """RGB uint8 [height, width, 3] for `layer` at pixel `size` = (width, height)."""
        img = self._images.get(size)
        if img is None:
            img = self._images[size] = resize_image(self.image, size)
        if mode == "image":
            return img
        return compose_pixels(
            img, paint(self.values[layer], self.owner(size, view)), mode, threshold, colormap
        )

    def cells(
        self,
        layer: int,
        cols: int,
        rows: int,
        mode: str = "overlay",
        threshold: float = 0.5,
        colormap: str = "viridis",
        view: int = 0,
    ) -> CellGrid:
        """The half-block cells for `layer` at exactly `cols` x `rows` cells."""
        key = (layer, cols, rows, mode, round(threshold, 4), colormap, view)
        grid = self._cells.get(key)
        if grid is not None:
            self._cells.move_to_end(key)
            return grid
        px = self.pixels(layer, (cols, rows * 2), mode, threshold, colormap, view)
        grid = CellGrid.from_pixels(px)
        self._cells[key] = grid
        while len(self._cells) > self._cache_size:
            self._cells.popitem(last=False)
        return grid


def cam_overlay_image(
    image: np.ndarray,
    values: np.ndarray,
    regions: np.ndarray,
    token_views: np.ndarray | None = None,
    view: int = 0,
    mode: str = "overlay",
    threshold: float = 0.5,
    colormap: str = "viridis",
    min_side: int = 336,
) -> np.ndarray:
    """A full-resolution RGB image of one layer's token values [N] (small images upscaled)."""
    h, w = image.shape[:2]
    scale = max(1.0, min_side / max(1, min(h, w)))
    size = (int(round(w * scale)), int(round(h * scale)))
    img = resize_image(image, size) if scale != 1.0 else np.asarray(image, dtype=np.uint8)
    views = np.zeros(len(values), np.int16) if token_views is None else np.asarray(token_views)
    owner = owner_map(regions, np.flatnonzero(views == view), (h, w), size)
    return compose_pixels(img, paint(values, owner), mode, threshold, colormap)
