"""Aya Vision (`AyaVisionForConditionalGeneration`): SigLIP tower, pixel shuffle (downsample
factor 2) and a SwiGLU projector, a Cohere 2 decoder (Cohere for the 32B).

The processor tiles the image GotOcr2-style (see `_tiles`) and writes each image as
`<|START_OF_IMG|>` then, per tile, a tag `TILE_1`, `TILE_2`, ... followed by its
`<|IMG_PATCH|>` features, then `TILE_GLOBAL` and the features of the whole image, then
`<|END_OF_IMG|>`. The tags are inner markers: the whole block is the image group.

Cohere blocks run attention and MLP in parallel from one `input_layernorm`: that norm is the
CAM site (the base adapter's rule). Cohere's causal LM multiplies logits by `logit_scale`;
`AyaVisionForConditionalGeneration` does too from transformers 5.25 on (before, its `lm_head`
alone): the base `logits` follows whichever the installed model does (compat).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from flowtui.engine.families._tiles import tile_layout
from flowtui.engine.families.base import FamilyAdapter, Layout, field

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class AyaVisionAdapter(FamilyAdapter):
    family = "aya_vision"
    model_types = ("aya_vision",)
    examples = ("CohereLabs/aya-vision-8b", "CohereLabs/aya-vision-32b")
    open_markers = ("<|START_OF_IMG|>",)
    close_markers = ("<|END_OF_IMG|>",)
    inner_markers: tuple[str, ...] = ("TILE_GLOBAL", "<|IMG_LINE_BREAK|>")
    # No reduced rerun: Cohere 2 interleaves sliding-window layers (RoPE only there), whose
    # window counts positions; not established for a window shorter than the sequence.
    reduced_rerun = False

    def __init__(self, model: PreTrainedModel, processor: Any) -> None:
        super().__init__(model, processor)
        # Markers as the processor names them; one tile tag per possible tile.
        p = processor
        self.open_markers = (getattr(p, "start_of_img_token", None) or self.open_markers[0],)
        self.close_markers = (getattr(p, "end_of_img_token", None) or self.close_markers[0],)
        tile = getattr(p, "tile_token", None) or "TILE"
        most = int(field(getattr(p, "image_processor", None), "max_patches", 12))
        self.inner_markers = (
            getattr(p, "tile_global_token", None) or "TILE_GLOBAL",
            getattr(p, "img_line_break_token", None) or "<|IMG_LINE_BREAK|>",
            *(f"{tile}_{i}" for i in range(1, most + 1)),
        )

    def layout(self, image_size: tuple[int, int], inputs: dict[str, torch.Tensor]) -> Layout:
        return tile_layout(
            self.processor.image_processor, image_size, inputs, self.image_token_id, "global"
        )
