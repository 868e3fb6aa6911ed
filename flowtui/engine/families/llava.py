"""LLaVA-1.5 and any vision tower + language model that `LlavaForConditionalGeneration` joins.

The hub processor of LLaVA-1.5 resizes the shortest edge and centre-crops (so a wide photo's
sides never reach the model); `LlavaImageProcessor` can instead pad to a square first. The
layout inverts whichever the processor does, so regions land on the original image.
"""

from __future__ import annotations

import numpy as np
import torch

from flowtui.engine.errors import InputError
from flowtui.engine.families.base import (
    Affine,
    FamilyAdapter,
    Layout,
    field,
    regions_through,
)


def resized_size(width: int, height: int, size) -> tuple[int, int]:
    """(width, height) after a CLIP-style resize: shortest edge, or an explicit height/width."""
    short_edge = field(size, "shortest_edge")
    if short_edge:
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = int(short_edge), int(short_edge * long / short)
        return (new_short, new_long) if width <= height else (new_long, new_short)
    h, w = field(size, "height"), field(size, "width")
    if h and w:
        return int(w), int(h)
    raise InputError(f"unsupported image processor size {size!r}")


def clip_pipeline(ip, width: int, height: int) -> tuple[Affine, tuple[int, int]]:
    """The pad-to-square / resize / centre-crop of CLIP-style processors, and the final size."""
    aff, size = Affine(), (width, height)
    if field(ip, "do_pad", False) and width != height:
        side = max(width, height)
        aff = aff.pad((side - width) // 2 if height > width else 0,
                      (side - height) // 2 if width > height else 0)
        size = (side, side)
    if field(ip, "do_resize", True):
        new = resized_size(*size, field(ip, "size"))
        aff, size = aff.resize(size, new), new
    if field(ip, "do_center_crop", False):
        crop = field(ip, "crop_size")
        cw, ch = int(field(crop, "width")), int(field(crop, "height"))
        aff, size = aff.crop((size[0] - cw) // 2, (size[1] - ch) // 2), (cw, ch)
    return aff, size


class LlavaAdapter(FamilyAdapter):
    family = "llava"
    model_types = ("llava",)
    examples = ("llava-hf/llava-1.5-7b-hf", "llava-hf/llava-1.5-13b-hf")
    reduced_rerun = True  # a Llama-style decoder: plain causal mask, RoPE on 1D positions

    def layout(self, image_size: tuple[int, int], inputs: dict[str, torch.Tensor]) -> Layout:
        width, height = image_size
        n = int((inputs["input_ids"][0] == self.image_token_id).sum())
        vc = self.model.config.vision_config
        side = int(vc.image_size) // int(vc.patch_size)
        if n not in (side * side, side * side + 1):
            raise InputError(
                f"cannot lay {n} image tokens on the {side}x{side} grid of the vision tower "
                f"({vc.image_size}px / patch {vc.patch_size})"
            )
        aff, (w, h) = clip_pipeline(self.processor.image_processor, width, height)
        if n == side * side:
            return Layout.through(aff, side, side, (0, 0, w, h), width, height)
        regions = regions_through(aff, side, side, (0, 0, w, h), width, height)
        # n == side * side + 1: the "full" feature strategy keeps the CLS token first: it has
        # no region.
        regions = np.concatenate([np.full((1, 4), np.nan, np.float32), regions])
        return Layout(regions, ["image"], np.zeros(n, dtype=np.int16))
