"""LLaVA-OneVision: LLaVA-NeXT's anyres (llava_next.py), with the tile raster shrunk when large.

Same processor geometry and packing order as NeXT (base first, then the unpadded tile raster
with a newline after each row). The difference is `vision_aspect_ratio` = "anyres_max_N": when
the unpadded raster holds more than about N tiles' worth of features, the model resizes it
bilinearly, so each tile token mixes up to 2 x 2 raster features and its region is their union.
"""

from __future__ import annotations

import math

from flowtui.engine.families.llava_next import LlavaNextAdapter


class LlavaOnevisionAdapter(LlavaNextAdapter):
    family = "llava_onevision"
    model_types = ("llava_onevision",)
    examples = (
        "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
        "llava-hf/llava-onevision-qwen2-7b-ov-hf",
        "llava-hf/llava-onevision-qwen2-72b-ov-hf",
    )

    def downsample(self, rows: int, cols: int) -> tuple[int, int] | None:
        """pack_image_features: the raster goes to (rows // r, cols // r) when r > 1.1, with r
        the square root of its size over max_num_patches tiles of side x side features."""
        config = self.model.config
        side = int(config.vision_config.image_size) // int(config.vision_config.patch_size)
        max_tiles = int(str(config.vision_aspect_ratio).removeprefix("anyres_max_"))
        ratio = math.sqrt(rows * cols / (max_tiles * side**2))
        if ratio > 1.1:
            return int(rows // ratio), int(cols // ratio)
        return None
