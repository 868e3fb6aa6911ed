"""Mistral 3 (Mistral Small 3.1 / 3.2): a Pixtral tower that reads the image at its own aspect.

The Pixtral image processor fits the longest edge into `size` (never enlarging) and rounds each
side up to a multiple of patch x spatial merge, so the image is stretched a little to
`image_sizes`; the tower's patches are merged `spatial_merge_size`^2 at a time (unfold, row-major)
into one [IMG] feature each. The prompt holds one row of [IMG] per merged row, each closed by
[IMG_BREAK] and the last by [IMG_END]: those markers belong to the image block.
"""

from __future__ import annotations

import torch

from flowtui.engine.errors import InputError
from flowtui.engine.families.base import Affine, FamilyAdapter, Layout, field


class Mistral3Adapter(FamilyAdapter):
    family = "mistral3"
    model_types = ("mistral3",)
    examples = (
        "mistralai/Mistral-Small-3.1-24B-Instruct-2503",
        "mistralai/Mistral-Small-3.2-24B-Instruct-2506",
    )
    inner_markers = ("[IMG_BREAK]",)
    close_markers = ("[IMG_END]",)
    reduced_rerun = True  # a Mistral decoder: plain causal (a biting sliding window is refused)

    def layout(self, image_size: tuple[int, int], inputs: dict[str, torch.Tensor]) -> Layout:
        width, height = image_size
        n = int((inputs["input_ids"][0] == self.image_token_id).sum())
        h, w = (int(v) for v in inputs["image_sizes"][0].tolist())  # the resized image
        patch = int(self.model.config.vision_config.patch_size)
        step = patch * int(self.model.config.spatial_merge_size)
        rows, cols = h // step, w // step
        if rows * cols != n:
            raise InputError(
                f"cannot lay {n} image tokens on the {rows}x{cols} grid of a {w}x{h} image "
                f"merged {step}px at a time"
            )
        aff = Affine()
        if field(self.processor.image_processor, "do_resize", True):
            aff = aff.resize((width, height), (w, h))
        return Layout.through(aff, rows, cols, (0, 0, cols * step, rows * step), width, height)
