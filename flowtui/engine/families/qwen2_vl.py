"""Qwen2-VL and Qwen2.5-VL: a native-resolution ViT, 2x2 patch merge, M-RoPE.

The processor smart-resizes the whole image (no crop, no pad) so both sides are multiples of
patch_size x merge_size and the area lies within its min/max pixels, which changes the aspect
slightly. The features then come one per merged window, in raster order over the resized image:
`image_grid_thw` gives the grid in patches, and each token covers merge x merge patches. The
block in the prompt is `<|vision_start|>` + N x `<|image_pad|>` + `<|vision_end|>`.

The language model needs `mm_token_type_ids` (extended over the answer by the engine) to build
its M-RoPE positions; reruns reuse the captured positions, so nothing here handles them.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from flowtui.engine.errors import InputError
from flowtui.engine.families.base import Affine, FamilyAdapter, Layout, field


class Qwen2VLAdapter(FamilyAdapter):
    family = "qwen2_vl"
    model_types = ("qwen2_vl",)
    examples: ClassVar[tuple[str, ...]] = (
        "Qwen/Qwen2-VL-2B-Instruct", "Qwen/Qwen2-VL-7B-Instruct",
    )
    open_markers = ("<|vision_start|>",)
    # Plain causal mask; the captured M-RoPE position_ids ([3, 1, N]) are cut on their last
    # axis, so every kept position keeps its temporal/height/width ids.
    reduced_rerun = True
    close_markers = ("<|vision_end|>",)

    @property
    def merge_size(self) -> int:
        ip = self.processor.image_processor
        vc = self.model.config.vision_config
        return int(field(ip, "merge_size", field(vc, "spatial_merge_size", 2)))

    @property
    def patch_size(self) -> int:
        ip = self.processor.image_processor
        return int(field(ip, "patch_size", field(self.model.config.vision_config, "patch_size")))

    def layout(self, image_size: tuple[int, int], inputs: dict[str, torch.Tensor]) -> Layout:
        width, height = image_size
        grids = inputs.get("image_grid_thw")
        if grids is None or len(grids) != 1:
            raise InputError("expected one image (one row of image_grid_thw) from the processor")
        t, gh, gw = (int(v) for v in grids[0].tolist())
        merge, patch = self.merge_size, self.patch_size
        if t != 1 or gh % merge or gw % merge:
            raise InputError(f"unexpected image grid {t}x{gh}x{gw} for merge size {merge}")
        rows, cols = gh // merge, gw // merge
        # The resized image is exactly the patch grid: smart_resize rounds both sides to
        # multiples of patch x merge, so the grid gives the size whatever min/max pixels were.
        resized = (gw * patch, gh * patch)
        aff = Affine().resize((width, height), resized)
        return Layout.through(aff, rows, cols, (0, 0, *resized), width, height)


class Qwen25VLAdapter(Qwen2VLAdapter):
    """Qwen2.5-VL: window attention in the ViT, same merge order and prompt block."""

    family = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
    examples = (
        "Qwen/Qwen2.5-VL-3B-Instruct",
        "Qwen/Qwen2.5-VL-7B-Instruct",
        "Qwen/Qwen2.5-VL-72B-Instruct",
    )
