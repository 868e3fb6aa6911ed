"""LLaVA-NeXT (LLaVA-1.6): "anyres" tiles plus a base view of the whole image.

The image processor picks the best of `image_grid_pinpoints` for the image's size, resizes the
image into it keeping the aspect, pads it (centred) to the pinpoint, cuts crop-size tiles and
puts the whole image, stretched to the tower's size, in front as the base. The model packs the
base features first, then the tile features as one raster over the pinpoint, with the rows and
columns that are padding removed (`unpad_image`) and a learned `image_newline` after each row.
Newlines are `<image>` placeholders too, but carry no pixels: their region is NaN.

LLaVA-OneVision (llava_onevision.py) shares all of this, adding a bilinear downsampling of the
tile raster when it holds too many features (`downsample`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from flowtui.engine.errors import InputError
from flowtui.engine.families.base import (
    Affine,
    FamilyAdapter,
    Layout,
    field,
    regions_through,
)
from flowtui.engine.families.llava import resized_size


def select_best_resolution(
    size: tuple[int, int], pinpoints: list[tuple[int, int]]
) -> tuple[int, int]:
    """The pinpoint (height, width) that keeps most of an image of `size` (height, width) and
    wastes least, as the processor picks it (transformers' select_best_resolution)."""
    height, width = size
    best, best_effective, best_wasted = None, 0, float("inf")
    for ph, pw in pinpoints:
        scale = min(pw / width, ph / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        wasted = pw * ph - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (int(ph), int(pw)), effective, wasted
    if best is None:
        raise InputError("the processor has no image_grid_pinpoints to choose from")
    return best


def fit_size(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of an image of `size` resized into `target` keeping its aspect
    (get_patch_output_size: the tight side rounded up)."""
    height, width = size
    th, tw = target
    sw, sh = tw / width, th / height
    if sw < sh:
        return min(math.ceil(height * sw), th), tw
    return th, min(math.ceil(width * sh), tw)


def unpad_bounds(size: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int, int, int]:
    """Rows [r0, r1) and columns [c0, c1) of a feature raster `grid` (rows, cols) that
    `unpad_image` keeps for an original image of `size` (height, width)."""
    height, width = size
    rows, cols = grid
    if width / height > cols / rows:
        new = int(round(height * (cols / width), 7))
        pad = (rows - new) // 2
        return pad, rows - pad, 0, cols
    new = int(round(width * (rows / height), 7))
    pad = (cols - new) // 2
    return 0, rows, pad, cols - pad


def patch_pipeline(ip: Any, aff: Affine, size: tuple[int, int]) -> tuple[Affine, tuple[int, int]]:
    """What the processor does to each patch (base or tile) of (width, height) `size` after
    cutting it: resize to `size`, centre crop to `crop_size`."""
    if field(ip, "do_resize", True):
        new = resized_size(*size, field(ip, "size"))
        aff, size = aff.resize(size, new), new
    if field(ip, "do_center_crop", False) and field(ip, "crop_size") is not None:
        crop = field(ip, "crop_size")
        cw, ch = int(field(crop, "width")), int(field(crop, "height"))
        aff, size = aff.crop((size[0] - cw) // 2, (size[1] - ch) // 2), (cw, ch)
    return aff, size


def interpolation_support(n_in: int, n_out: int) -> list[np.ndarray]:
    """For each of `n_out` outputs of a 1-D bilinear resize (align_corners=False) of `n_in`
    inputs, the inputs with a non-zero weight: the model's own interpolate on one-hot rows."""
    eye = torch.eye(n_in, dtype=torch.float32).reshape(1, n_in, n_in, 1)
    w = F.interpolate(eye, [n_out, 1], mode="bilinear")[0, :, :, 0]  # [n_in, n_out]
    return [np.flatnonzero(w[:, j].numpy() != 0) for j in range(n_out)]


def union_regions(regions: np.ndarray) -> np.ndarray:
    """The bounding box of the finite regions among `regions` [M, 4]; NaN when none is."""
    ok = np.isfinite(regions).all(axis=1)
    if not ok.any():
        return np.full(4, np.nan, dtype=np.float32)
    r = regions[ok]
    return np.array([r[:, 0].min(), r[:, 1].min(), r[:, 2].max(), r[:, 3].max()], np.float32)


class LlavaNextAdapter(FamilyAdapter):
    family = "llava_next"
    model_types = ("llava_next",)
    examples = (
        "llava-hf/llava-v1.6-mistral-7b-hf",
        "llava-hf/llava-v1.6-vicuna-7b-hf",
        "llava-hf/llama3-llava-next-8b-hf",
    )
    # Llama/Mistral/Qwen2 decoders with a plain causal mask (a sliding window shorter than the
    # sequence is refused by the engine). OneVision inherits it.
    reduced_rerun = True

    def downsample(self, rows: int, cols: int) -> tuple[int, int] | None:
        """The size the model interpolates the unpadded tile raster to, if it does (NeXT: never)."""
        return None

    def layout(self, image_size: tuple[int, int], inputs: dict[str, torch.Tensor]) -> Layout:
        width, height = image_size
        n = int((inputs["input_ids"][0] == self.image_token_id).sum())
        ip = self.processor.image_processor
        config = self.model.config
        vc = config.vision_config
        tower, patch = int(vc.image_size), int(vc.patch_size)
        side = tower // patch
        orig = tuple(int(v) for v in inputs["image_sizes"][0].tolist())  # (height, width)
        if orig != (height, width):
            raise InputError(f"the processor saw a {orig[1]}x{orig[0]} image, not {width}x{height}")
        size = field(ip, "size")
        base_h = field(size, "height") or field(size, "shortest_edge")
        base_w = field(size, "width") or field(size, "shortest_edge")
        crop = field(ip, "crop_size")
        tile = int(field(crop, "height") or base_h)

        # The base: the whole image stretched to the tower's size.
        aff, got = patch_pipeline(ip, Affine().resize((width, height), (base_w, base_h)),
                                  (base_w, base_h))
        tower_grid = (side, side, (0, 0, side * patch, side * patch), width, height)
        base = regions_through(aff, *tower_grid)

        # The tiles: resized into the best pinpoint, padded (centred), cut into tile x tile.
        best = select_best_resolution(orig, ip.image_grid_pinpoints)
        fh, fw = fit_size(orig, best)
        top, left = (best[0] - fh) // 2, (best[1] - fw) // 2
        placed = Affine().resize((width, height), (fw, fh)).pad(left, top)
        starts_y, starts_x = range(0, best[0], tile), range(0, best[1], tile)
        # The model reads the tile raster from its own config's pinpoints and tower size.
        mh, mw = select_best_resolution(orig, config.image_grid_pinpoints)
        grid_h, grid_w = mh // tower, mw // tower
        if (len(starts_y), len(starts_x)) != (grid_h, grid_w) or got != (tower, tower):
            raise InputError(
                f"the processor cuts {len(starts_y)}x{len(starts_x)} tiles of {got[0]}x{got[1]}px "
                f"but the model reads {grid_h}x{grid_w} tiles of {tower}px"
            )
        raster = np.empty((grid_h * side, grid_w * side, 4), dtype=np.float32)
        for i, y in enumerate(starts_y):
            for j, x in enumerate(starts_x):
                cut = (min(x + tile, best[1]) - x, min(y + tile, best[0]) - y)
                aff, _ = patch_pipeline(ip, placed.crop(x, y), cut)
                raster[i * side:(i + 1) * side, j * side:(j + 1) * side] = regions_through(
                    aff, *tower_grid).reshape(side, side, 4)
        r0, r1, c0, c1 = unpad_bounds(orig, raster.shape[:2])
        raster = raster[r0:r1, c0:c1]
        shrink = self.downsample(*raster.shape[:2])
        if shrink is not None:
            sup_y = interpolation_support(raster.shape[0], shrink[0])
            sup_x = interpolation_support(raster.shape[1], shrink[1])
            raster = np.stack([
                np.stack([union_regions(raster[np.ix_(ys, xs)].reshape(-1, 4)) for xs in sup_x])
                for ys in sup_y
            ])
        newline = np.full((raster.shape[0], 1, 4), np.nan, dtype=np.float32)
        tiles = np.concatenate([raster, newline], axis=1).reshape(-1, 4)
        layout = Layout.concat([("base", base), ("tiles", tiles)])
        if len(layout) != n:
            raise InputError(
                f"{n} image tokens in the prompt, but the anyres layout has {len(layout)} "
                f"({len(base)} base + {len(tiles)} tile features and newlines)"
            )
        return layout
