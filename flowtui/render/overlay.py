"""A map over the image at real pixel resolution, for terminals that show images (kitty, Sixel,
iTerm): plain numpy/PIL, no UI.

Two styles, both named in the legend (docs/definitions.md, "Map styles"):
- `regions`: each feature token's value painted over its exact region, as the half-block view
  does, but at the resolution the image is shown at;
- `smooth`: the paper's figures: the token map upsampled bilinearly (cell centres as knots,
  values held flat beyond the outermost centres), then the same threshold and colormap.
The peak token's region is outlined in both.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from flowtui.render.cells import (
    UNSEEN_DIM,
    TokenValues,
    compose_pixels,
    muted,
    outline,
    owner_map,
    paint,
    region_box,
    resize_image,
)
from flowtui.render.colormaps import colormap_lut

MAP_STYLES: tuple[str, ...] = ("regions", "smooth")
STYLE_TITLES: dict[str, str] = {"regions": "regions", "smooth": "smooth (bilinear)"}


def fit_pixels(image_hw: tuple[int, int], max_w: int, max_h: int) -> tuple[int, int]:
    """Largest (width, height) within max_w x max_h with the image's aspect ratio."""
    h, w = image_hw
    if max_w < 1 or max_h < 1 or h < 1 or w < 1:
        return 0, 0
    scale = min(max_w / w, max_h / h)
    return max(1, min(max_w, int(round(w * scale)))), max(1, min(max_h, int(round(h * scale))))


def smooth_values(
    values: np.ndarray, regions: np.ndarray, tokens: np.ndarray, image_hw: tuple[int, int],
    size: tuple[int, int],
) -> np.ndarray:
    """float32 [height, width]: the values of `tokens` upsampled bilinearly to `size`.

    The tokens' regions are read as cells of the grid their edges make (a regular patch grid,
    anyres tiles and merged patches alike); each cell holds its token's value, and a pixel takes
    the bilinear mix of the four nearest cell centres, with cells no token covers left out of
    the mix (weights renormalised). Pixels outside every region are NaN, as `paint` leaves them.
    """
    w, h = size
    H, W = image_hw
    tokens = np.asarray(tokens, dtype=np.int64)
    r = np.asarray(regions, dtype=np.float64)[tokens] if len(tokens) else np.zeros((0, 4))
    ok = np.isfinite(r).all(axis=1)
    tokens, r = tokens[ok], r[ok]
    out = np.full((h, w), np.nan, dtype=np.float32)
    if not len(tokens):
        return out
    xs = np.unique(np.concatenate([r[:, 0], r[:, 2]]))
    ys = np.unique(np.concatenate([r[:, 1], r[:, 3]]))
    grid = np.full((len(ys) - 1 or 1, len(xs) - 1 or 1), np.nan, dtype=np.float64)
    vals = np.asarray(values, dtype=np.float64)[tokens]
    for (x0, y0, x1, y1), v in zip(r, vals, strict=True):
        c0, c1 = np.searchsorted(xs, x0), np.searchsorted(xs, x1)
        r0, r1 = np.searchsorted(ys, y0), np.searchsorted(ys, y1)
        grid[r0:max(r1, r0 + 1), c0:max(c1, c0 + 1)] = v
    cx = (xs[:-1] + xs[1:]) / 2 if len(xs) > 1 else xs
    cy = (ys[:-1] + ys[1:]) / 2 if len(ys) > 1 else ys
    # Pixel centres in original-image coordinates, as fractional indices between cell centres.
    px = (np.arange(w) + 0.5) * W / w
    py = (np.arange(h) + 0.5) * H / h
    fx = np.interp(px, cx, np.arange(len(cx), dtype=np.float64))
    fy = np.interp(py, cy, np.arange(len(cy), dtype=np.float64))
    i0 = np.floor(fx).astype(np.int64)
    j0 = np.floor(fy).astype(np.int64)
    i1 = np.minimum(i0 + 1, len(cx) - 1)
    j1 = np.minimum(j0 + 1, len(cy) - 1)
    ax, ay = (fx - i0)[None, :], (fy - j0)[:, None]
    known = np.isfinite(grid)
    g = np.where(known, grid, 0.0)
    k = known.astype(np.float64)
    num = np.zeros((h, w))
    den = np.zeros((h, w))
    for jj, wy in ((j0, 1 - ay), (j1, ay)):
        for ii, wx in ((i0, 1 - ax), (i1, ax)):
            wgt = wy * wx * k[jj[:, None], ii[None, :]]
            num += wgt * g[jj[:, None], ii[None, :]]
            den += wgt
    with np.errstate(invalid="ignore", divide="ignore"):
        mixed = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    # Only where the model saw the image: inside the union of the tokens' regions.
    inside = owner_map(regions, tokens, image_hw, size) >= 0
    out[inside] = mixed[inside].astype(np.float32)
    return out


class PixelRenderer(TokenValues):
    """One analysis' image + per-layer token values [L, N] drawn at any pixel size, in either
    style. The resized image and each size's owner map are kept (they serve every layer); whole
    frames are kept only a few at a time (`cache_size`): a frame is width x height x 3 bytes."""

    def __init__(
        self,
        image: np.ndarray,
        values: np.ndarray,
        regions: np.ndarray,
        token_views: np.ndarray | None = None,
        cache_size: int = 4,
    ) -> None:
        super().__init__(image, values, regions, token_views)
        self._images: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._owners: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._frames: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    @property
    def image_hw(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])

    def _resized(self, size: tuple[int, int]) -> np.ndarray:
        img = self._images.get(size)
        if img is None:
            img = self.image if size == self.image_hw[::-1] else resize_image(self.image, size)
            self._images[size] = img
            while len(self._images) > 2:  # the size shown, and the one before a resize
                self._images.popitem(last=False)
        return img

    def _owner(self, size: tuple[int, int], view: int) -> np.ndarray:
        key = (size, view)
        own = self._owners.get(key)
        if own is None:
            tokens = np.flatnonzero(self.token_views == view)
            own = self._owners[key] = owner_map(self.regions, tokens, self.image_hw, size)
        while len(self._owners) > 8:  # owner maps and backgrounds of the last sizes
            self._owners.popitem(last=False)
        return own

    def _base(self, size: tuple[int, int], view: int, mode: str) -> np.ndarray:
        """What every layer's map is drawn over (compose_pixels' background): the muted image
        (overlay) or the image (heatmap), parts no token covers dimmed; kept per size."""
        key = ("base", size, view, mode)
        base = self._owners.get(key)
        if base is None:
            img = self._resized(size)
            unseen = self._owner(size, view) < 0
            base = muted(img) if mode == "overlay" else img.copy()
            base[unseen] //= UNSEEN_DIM
            self._owners[key] = base
        return base

    def _regions(self, layer: int, size: tuple[int, int], mode: str, threshold: float,
                 colormap: str, view: int) -> np.ndarray:
        """compose_pixels(paint(...)) for the regions style, one colour per token gathered
        through the owner map instead of the colormap applied per pixel (the same pixels,
        several times faster: a layer change is a gather, docs/definitions.md)."""
        own = self._owner(size, view)
        v = np.append(self.values[layer], np.float32(np.nan))  # index -1: no token
        seen = np.isfinite(v)
        cam = np.where(seen, v, 0.0)
        colours = colormap_lut(colormap)[
            np.clip(np.rint(np.where(cam >= threshold, cam, 0.0) * 255.0), 0, 255).astype(np.uint8)]
        if mode == "heatmap":
            out = colours[own]
            unseen = ~seen[own]
            out[unseen] = self._base(size, view, mode)[unseen]
            return out
        out = self._base(size, view, mode).copy()
        lit = ((cam >= threshold) & (cam > 0) & seen)[own]
        out[lit] = colours[own[lit]]
        return out

    def pixels(
        self,
        layer: int,
        size: tuple[int, int],
        mode: str = "overlay",
        threshold: float = 0.5,
        colormap: str = "viridis",
        view: int = 0,
        mark: int | None = None,
        style: str = "regions",
    ) -> np.ndarray:
        """RGB uint8 [height, width, 3]: `layer`'s map over the image at `size` = (width,
        height), in `style`, the token `mark` (the peak) outlined one pixel per 168 wide."""
        if style not in MAP_STYLES:
            raise ValueError(f"unknown map style {style!r} (choose from {', '.join(MAP_STYLES)})")
        key = (layer, size, mode, round(threshold, 4), colormap, view, mark, style)
        px = self._frames.get(key)
        if px is not None:
            self._frames.move_to_end(key)
            return px
        img = self._resized(size)
        if mode == "image":
            px = img
        else:
            if style == "smooth":
                tokens = np.flatnonzero(self.token_views == view)
                cam = smooth_values(self.values[layer], self.regions, tokens, self.image_hw, size)
                px = compose_pixels(img, cam, mode, threshold, colormap)
            elif mode in ("overlay", "heatmap"):
                px = self._regions(layer, size, mode, threshold, colormap, view)
            else:
                px = compose_pixels(img, paint(self.values[layer], self._owner(size, view)),
                                    mode, threshold, colormap)
            if mark is not None:
                box = region_box(self.regions[mark], self.image_hw, size)
                for i in range(max(1, int(round(min(size) / 168)))):
                    if box is None or box[2] - box[0] <= 2 * i or box[3] - box[1] <= 2 * i:
                        break
                    px = outline(px, (box[0] + i, box[1] + i, box[2] - i, box[3] - i))
        self._frames[key] = px
        while len(self._frames) > self._cache_size:
            self._frames.popitem(last=False)
        return px
