"""Qwen3-VL: Qwen2-VL's smart resize and 2x2 merge with 16-px patches, interleaved M-RoPE, and
DeepStack (features of early ViT layers added to the hidden states at the image positions
after the first decoder layers).

The prompt block and the regions are Qwen2-VL's. DeepStack needs nothing here: a rerun from
layer K starts from the stored input of layer K (which already holds the additions of the
layers below) and gives the text model the captured DeepStack features for the layers from K on.
"""

from __future__ import annotations

from flowtui.engine.families.qwen2_vl import Qwen2VLAdapter


class Qwen3VLAdapter(Qwen2VLAdapter):
    family = "qwen3_vl"
    model_types = ("qwen3_vl",)
    examples = (
        "Qwen/Qwen3-VL-2B-Instruct",
        "Qwen/Qwen3-VL-4B-Instruct",
        "Qwen/Qwen3-VL-8B-Instruct",
    )


class Qwen3VLMoeAdapter(Qwen3VLAdapter):
    """Qwen3-VL with a mixture-of-experts language model: same vision side and prompt block;
    the CAM site stays the post-attention norm that feeds the (sparse) MLP block."""

    family = "qwen3_vl_moe"
    model_types = ("qwen3_vl_moe",)
    examples = ("Qwen/Qwen3-VL-30B-A3B-Instruct", "Qwen/Qwen3-VL-235B-A22B-Instruct")
