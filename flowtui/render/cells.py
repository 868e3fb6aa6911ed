"""Image + CAM -> pixels -> half-block cells (two vertically stacked pixels per terminal cell).

A cell is drawn as "▀" with the top pixel as foreground and the bottom pixel as background, so
a terminal cell (about twice as tall as wide) shows two square pixels.

Why by hand, where textual-image (which draws the kitty and Sixel maps) also has a half-cell
renderer: that one rescales the whole picture with a bicubic filter at every render, so token
edges and the one-pixel peak outline blur into their neighbours at two pixels per cell, where
here each token's region is painted at cell resolution; and it builds a Style per pixel on every
frame: 9.5 ms of CPU for the 52x26-cell map at 120x40 against 1.0 ms here for the cells and
their strips (measured side by side on the bench's 24x24 map), before this module's cache makes
a revisited layer a lookup. The half-block map is the fallback every terminal gets, and the
repaint target (30 ms for a whole layer change) has little room for 9 ms of it.
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
# In overlay mode the heat is drawn opaque, in the colormap's own colours (blending it with
# the image would turn teal on red into grey and match no colour of the bar), over a dimmed
# grey copy of the image: grey = GREY_FLOOR + GREY_SCALE * luminance, 24..126.
GREY_FLOOR, GREY_SCALE = 24.0, 0.4
# Parts of the image no feature token covers are drawn at 1/UNSEEN_DIM brightness.
UNSEEN_DIM = 3
# The outline around the map's peak token: a colour none of the colormaps uses.
PEAK_RGB = (255, 0, 255)


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


def muted(image: np.ndarray) -> np.ndarray:
    """The image as a dim grey (GREY_FLOOR..GREY_FLOOR + 102), so every colour in an overlay
    is a colour of the colormap."""
    rgb = np.asarray(image, dtype=np.float32)
    lum = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    grey = np.rint(GREY_FLOOR + GREY_SCALE * lum).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def compose_pixels(
    image: np.ndarray,
    cam: np.ndarray,
    mode: str = "overlay",
    threshold: float = 0.5,
    colormap: str = "viridis",
) -> np.ndarray:
    """Combine an image and an already resized CAM of the same height/width into RGB pixels.

    The paper zeroes CAM values below the threshold for display: in `overlay` those pixels show
    the image, in a dimmed grey, and the pixels at or above it the colormap's colours exactly
    (as on the colour bar); in `heatmap` the pixels below it take the colormap's lowest colour.
    Pixels no token covers (NaN: parts of the image the model never saw, such as a centre
    crop's sides) are dimmed further.
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
    out = muted(image)
    if unseen.any():
        out[unseen] //= UNSEEN_DIM
    out[mask] = heat[mask]
    return out


def region_box(
    region: np.ndarray, image_hw: tuple[int, int], size: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """A region (original-image x0, y0, x1, y1) as the pixel box (x0, y0, x1, y1), half-open,
    it covers in the image drawn at `size` = (width, height), as owner_map paints it; None for a
    token with no region or one that covers no pixel."""
    r = np.asarray(region, dtype=np.float64)
    if r.shape != (4,) or not np.isfinite(r).all():
        return None
    w, h = size
    H, W = image_hw
    x0, x1 = (int(np.ceil(v * w / W - 0.5)) for v in (r[0], r[2]))
    y0, y1 = (int(np.ceil(v * h / H - 0.5)) for v in (r[1], r[3]))
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def outline(pixels: np.ndarray, box: tuple[int, int, int, int] | None,
            rgb: tuple[int, int, int] = PEAK_RGB) -> np.ndarray:
    """A copy of `pixels` with a one-pixel frame drawn just inside `box` (a box too small for
    a frame is filled; a box of None leaves the pixels as they are)."""
    if box is None:
        return pixels
    x0, y0, x1, y1 = box
    out = pixels.copy()
    colour = np.asarray(rgb, dtype=np.uint8)
    out[y0, x0:x1] = colour
    out[y1 - 1, x0:x1] = colour
    out[y0:y1, x0] = colour
    out[y0:y1, x1 - 1] = colour
    return out


class TokenValues:
    """What every map renderer draws: an image, per-layer values [L, N] per feature token, each
    token's region [N, 4] on the image and its view [N] (all one view when None)."""

    def __init__(
        self,
        image: np.ndarray,
        values: np.ndarray,
        regions: np.ndarray,
        token_views: np.ndarray | None = None,
    ) -> None:
        self.image = np.asarray(image, dtype=np.uint8)
        self.values = np.asarray(values, dtype=np.float32)
        self.regions = np.asarray(regions, dtype=np.float32)
        n = self.values.shape[1]
        self.token_views = (
            np.zeros(n, dtype=np.int16) if token_views is None else np.asarray(token_views)
        )


class CamRenderer(TokenValues):
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
        super().__init__(image, values, regions, token_views)
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
        mark: int | None = None,
    ) -> CellGrid:
        """The half-block cells for `layer` at exactly `cols` x `rows` cells; `mark` (a token
        index) outlines that token's region, such as the map's peak."""
        key = (layer, cols, rows, mode, round(threshold, 4), colormap, view, mark)
        grid = self._cells.get(key)
        if grid is not None:
            self._cells.move_to_end(key)
            return grid
        size = (cols, rows * 2)
        px = self.pixels(layer, size, mode, threshold, colormap, view)
        if mark is not None:
            px = outline(px, region_box(self.regions[mark], self.image.shape[:2], size))
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
    mark: int | None = None,
) -> np.ndarray:
    """A full-resolution RGB image of one layer's token values [N] (small images upscaled);
    `mark` outlines that token's region (the map's peak)."""
    h, w = image.shape[:2]
    scale = max(1.0, min_side / max(1, min(h, w)))
    size = (int(round(w * scale)), int(round(h * scale)))
    img = resize_image(image, size) if scale != 1.0 else np.asarray(image, dtype=np.uint8)
    views = np.zeros(len(values), np.int16) if token_views is None else np.asarray(token_views)
    owner = owner_map(regions, np.flatnonzero(views == view), (h, w), size)
    out = compose_pixels(img, paint(values, owner), mode, threshold, colormap)
    if mark is not None:
        # A frame two pixels wide per 336 so it stays visible at full resolution.
        box = region_box(np.asarray(regions)[mark], (h, w), size)
        for i in range(max(1, int(round(min(size) / 168)))):
            if box is None or box[2] - box[0] <= 2 * i or box[3] - box[1] <= 2 * i:
                break
            out = outline(out, (box[0] + i, box[1] + i, box[2] - i, box[3] - i))
    return out
