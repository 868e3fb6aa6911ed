"""Idefics3 (and SmolVLM v1, which is an Idefics3 model): SigLIP tiles and a pixel shuffle.

The image processor resizes the longest edge (keeping the aspect), rounds both sides up to
whole tiles of `max_image_size` (the aspect changes slightly), cuts that into rows x cols tiles
and adds a global image: the whole image squashed to one tile. A small image is not split:
then only that one squashed image is seen. Every step stretches the whole image onto the whole
target, so a tile's pixels map back to the original by one scale per axis.

In each tile the vision tower sees (tile // patch)^2 patches (a margin of tile % patch pixels
is cut off); the connector's pixel shuffle folds each s x s block of patches into one token,
in raster order. The prompt carries, per tile, `<fake_token_around_image><row_i_col_j>` and
its features, a newline after each row, then `\\n<fake_token_around_image><global-img>`, the
global features and a closing `<fake_token_around_image>`: all one image block (docs/definitions.md).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from flowtui.engine.analysis import grid_regions
from flowtui.engine.errors import InputError
from flowtui.engine.families.base import Affine, FamilyAdapter, Layout, clip_regions, field

MAX_IMAGE_SIZE = 4096  # the image processor's absolute cap on either side


def _longest_edge_size(width: int, height: int, longest: int) -> tuple[int, int]:
    """(width, height) after the processor's longest-edge resize: the long side becomes
    `longest` (up or down), the short side keeps the aspect, rounded down then up to even."""
    aspect = width / height
    if width >= height:
        width = longest
        height = int(width / aspect)
        height += height % 2
    else:
        height = longest
        width = int(height * aspect)
        width += width % 2
    width, height = max(width, 1), max(height, 1)
    # Then the cap at 4k (on the new aspect), without the rounding to even.
    aspect = width / height
    if width >= height and width > MAX_IMAGE_SIZE:
        width, height = MAX_IMAGE_SIZE, int(MAX_IMAGE_SIZE / aspect)
    elif height > width and height > MAX_IMAGE_SIZE:
        height, width = MAX_IMAGE_SIZE, int(MAX_IMAGE_SIZE * aspect)
    return max(width, 1), max(height, 1)


def _whole_tiles_size(width: int, height: int, tile: int) -> tuple[int, int]:
    """(width, height) rounded up to multiples of `tile`: the long side first, the short side
    from the long side's new length and the aspect, as `resize_for_vision_encoder` does."""
    aspect = width / height
    if width >= height:
        new_w = math.ceil(width / tile) * tile
        new_h = math.ceil(int(new_w / aspect) / tile) * tile
    else:
        new_h = math.ceil(height / tile) * tile
        new_w = math.ceil(int(new_h * aspect) / tile) * tile
    return new_w, new_h


def tile_geometry(ip, width: int, height: int) -> tuple[int, int, int, tuple[int, int]]:
    """(rows, cols, tile, (width, height) of the image the tiles are cut from) for an
    original image of `width` x `height`; rows = cols = 0 when it is not split."""
    tile = int(field(field(ip, "max_image_size"), "longest_edge", 0))
    if tile <= 0:
        raise InputError(f"unsupported max_image_size {field(ip, 'max_image_size')!r}")
    size = (width, height)
    if field(ip, "do_resize", True):
        spec = field(ip, "size")
        longest = field(spec, "longest_edge")
        if longest:
            size = _longest_edge_size(width, height, int(longest))
        elif field(spec, "height") and field(spec, "width"):
            size = (int(field(spec, "width")), int(field(spec, "height")))
        else:
            raise InputError(f"unsupported image processor size {spec!r}")
    if not field(ip, "do_image_splitting", True):
        return 0, 0, tile, (tile, tile)
    w, h = _whole_tiles_size(*size, tile)
    if w > tile or h > tile:
        return h // tile, w // tile, tile, (w, h)
    return 0, 0, tile, (tile, tile)


class Idefics3Adapter(FamilyAdapter):
    family = "idefics3"
    model_types = ("idefics3",)
    examples = (
        "HuggingFaceM4/Idefics3-8B-Llama3",
        "HuggingFaceTB/SmolVLM-Instruct",
        "HuggingFaceTB/SmolVLM-256M-Instruct",
    )
    open_markers = ("<fake_token_around_image>",)
    close_markers = ("<fake_token_around_image>",)
    reduced_rerun = True  # a Llama decoder with a plain causal mask (SmolVLM inherits it)

    def image_spans(self, input_ids: np.ndarray) -> list[tuple[int, int]]:
        """From the `<fake_token_around_image>` before the first feature to the one after the
        last. The tile tags between are single tokens in SmolVLM2's tokenizer but plain text in
        SmolVLM v1's, and the newlines between tile rows are text in all, so the block is found
        by its fake tokens alone (flowtui puts one image in a prompt: one block)."""
        ids = np.asarray(input_ids)
        feats = self.feature_positions(ids)
        fake = self._ids_of((getattr(self.processor, "fake_image_token", self.open_markers[0]),))
        fakes = np.flatnonzero(np.isin(ids, sorted(fake)))
        before, after = fakes[fakes < feats[0]], fakes[fakes > feats[-1]]
        start = int(before[-1]) if len(before) else int(feats[0])
        end = int(after[0]) + 1 if len(after) else int(feats[-1]) + 1
        return [(start, end)]

    def layout(self, image_size: tuple[int, int], inputs: dict[str, torch.Tensor]) -> Layout:
        width, height = image_size
        rows, cols, tile, (w, h) = tile_geometry(self.processor.image_processor, width, height)
        config = self.model.config
        patch, scale = int(config.vision_config.patch_size), int(config.scale_factor)
        patches = tile // patch
        if patches % scale or tile != int(config.vision_config.image_size):
            raise InputError(
                f"tiles of {tile}px do not fit the vision tower ({config.vision_config.image_size}"
                f"px, patch {patch}, pixel shuffle {scale})"
            )
        side, block = patches // scale, scale * patch  # tokens per tile side, px per token
        images = rows * cols + 1 if rows else 1
        pv = inputs.get("pixel_values")
        n = int((inputs["input_ids"][0] == self.image_token_id).sum())
        if (pv is not None and pv.shape[1] != images) or n != images * side * side:
            raise InputError(
                f"expected {images} image(s) of {side}x{side} tokens for a {width}x{height} image "
                f"({rows}x{cols} tiles), got {n} tokens"
                + (f" and {pv.shape[1]} images" if pv is not None else "")
            )
        cell = grid_regions(side, side, (0, 0, side * block, side * block)).astype(np.float64)
        glob = Affine().resize((width, height), (tile, tile)).invert(cell)
        if not rows:
            regions = clip_regions(glob, width, height)
            return Layout(regions, ["image"], np.zeros(n, dtype=np.int16), (side, side))
        tiled = Affine().resize((width, height), (w, h))
        tiles = [
            tiled.invert(cell + np.array([c * tile, r * tile, c * tile, r * tile]))
            for r in range(rows)
            for c in range(cols)
        ]
        return Layout.concat([
            ("tiles", clip_regions(np.concatenate(tiles), width, height)),
            ("global", clip_regions(glob, width, height)),
        ])
