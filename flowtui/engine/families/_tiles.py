"""GotOcr2-style tiling, shared by InternVL and Aya Vision (both use `GotOcr2ImageProcessor`).

With `crop_to_patches`, the processor picks the tile grid (cols x rows, between min and max
patches) whose aspect ratio is closest to the image's, stretches the whole image onto that
canvas (no crop, no pad), cuts it into tiles in raster order and, when there is more than one
tile, appends a thumbnail: the whole image stretched to one tile. Each tile becomes a square
raster of feature tokens (vision patches merged by a pixel shuffle into blocks, still in raster
order), so a token's region is its cell of its tile, mapped back through the stretch.
"""

from __future__ import annotations

import importlib
import math
import sys
from typing import Any

import numpy as np
import torch

from flowtui.engine.analysis import grid_regions
from flowtui.engine.errors import InputError
from flowtui.engine.families.base import Layout, field, stretch_box


def _canvas_rule(image_processor: Any):
    """The image processor's own grid choice (`get_optimal_tiled_canvas`): its tie-breaking is
    subtle, so it is used, not re-implemented."""
    module = sys.modules.get(type(image_processor).__module__)
    rule = getattr(module, "get_optimal_tiled_canvas", None)
    if rule is None:
        module = importlib.import_module(
            "transformers.models.got_ocr2.image_processing_pil_got_ocr2"
        )
        rule = module.get_optimal_tiled_canvas
    return rule


def tile_grid(image_processor: Any, width: int, height: int) -> tuple[int, int]:
    """(cols, rows) of the tile grid the processor picks for a width x height image."""
    size = field(image_processor, "size")
    tile = (int(field(size, "height")), int(field(size, "width")))
    lo = int(field(image_processor, "min_patches", 1))
    hi = int(field(image_processor, "max_patches", 12))
    cols, rows = _canvas_rule(image_processor)((height, width), tile, lo, hi)
    return int(cols), int(rows)


def tile_layout(
    image_processor: Any,
    image_size: tuple[int, int],
    inputs: dict[str, torch.Tensor],
    image_token_id: int,
    whole_view: str,
) -> Layout:
    """Regions of the feature tokens of one image: tiles in raster order, then the whole-image
    view (`whole_view`: the family's name for the thumbnail); a single tile is view "image"."""
    width, height = image_size
    n_tokens = int((inputs["input_ids"][0] == image_token_id).sum())
    n_images = int(inputs["pixel_values"].shape[0])
    per_tile = n_tokens // n_images
    side = math.isqrt(per_tile)
    if per_tile * n_images != n_tokens or side * side != per_tile:
        raise InputError(
            f"cannot lay {n_tokens} image tokens on {n_images} square tiles of the same size"
        )
    if n_images == 1:
        # One tile: the whole image stretched to the tile size (crop_to_patches off, or a
        # 1x1 grid, which gets no thumbnail).
        return Layout.single_grid(side, side, stretch_box(width, height))
    cols, rows = tile_grid(image_processor, width, height)
    if cols * rows + 1 != n_images:
        raise InputError(
            f"the processor made {n_images - 1} tiles, but its image processor's settings give "
            f"a {cols}x{rows} grid for a {width}x{height} image; tile settings passed at call "
            "time are not supported"
        )
    # The canvas is the original stretched to (cols, rows) tiles: tile k covers 1/cols of the
    # original's width and 1/rows of its height.
    tw, th = width / cols, height / rows
    parts: list[tuple[str, np.ndarray]] = []
    for k in range(cols * rows):
        c, r = k % cols, k // cols
        box = (c * tw, r * th, (c + 1) * tw, (r + 1) * th)
        parts.append(("tiles", grid_regions(side, side, box)))
    parts.append((whole_view, grid_regions(side, side, stretch_box(width, height))))
    return Layout.concat(parts)
