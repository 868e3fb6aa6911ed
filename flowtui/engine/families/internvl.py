"""InternVL as transformers ships it natively (`InternVLForConditionalGeneration`, the "-hf"
checkpoints): InternViT tower, pixel shuffle (downsample ratio 0.5), a Qwen2/Qwen3 decoder.

The processor tiles the image GotOcr2-style (see `_tiles`) and writes each image as
`<img>` + `<IMG_CONTEXT>` x (tokens per tile x tiles) + `</img>`. The pixel shuffle keeps raster
order: token (i, j) of a tile is built from the vision patches of rows 2i..2i+1 and columns
2j..2j+1 (checked against the modeling code and by the region test's back-propagation).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from flowtui.engine.families._tiles import tile_layout
from flowtui.engine.families.base import FamilyAdapter, Layout

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class InternVLAdapter(FamilyAdapter):
    family = "internvl"
    model_types = ("internvl",)
    examples = ("OpenGVLab/InternVL3-1B-hf", "OpenGVLab/InternVL3-2B-hf", "OpenGVLab/InternVL3-8B-hf")
    open_markers = ("<img>",)
    close_markers = ("</img>",)
    reduced_rerun = True  # a Qwen2/Qwen3 decoder with a plain causal mask

    def __init__(self, model: PreTrainedModel, processor: Any) -> None:
        super().__init__(model, processor)
        # The processor names its markers (from the tokenizer); the defaults are the hub's.
        start = getattr(processor, "start_image_token", None)
        end = getattr(processor, "end_image_token", None)
        if start:
            self.open_markers = (start,)
        if end:
            self.close_markers = (end,)

    def layout(self, image_size: tuple[int, int], inputs: dict[str, torch.Tensor]) -> Layout:
        return tile_layout(
            self.processor.image_processor, image_size, inputs, self.image_token_id, "thumbnail"
        )
