"""Qwen3-VL: Qwen2-VL's smart resize and 2x2 merge with 16-px patches, interleaved M-RoPE, and
DeepStack (features of early ViT layers added to the hidden states at the image positions
after the first decoder layers).

The prompt block and the regions are Qwen2-VL's. A full rerun from layer K starts from the
stored input of layer K (which already holds the additions of the layers below) and gives the
text model the captured DeepStack features for the layers from K on; a reduced rerun cuts those
features to the kept image positions (`reduced_text_kwargs`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from flowtui.engine.families.qwen2_vl import Qwen2VLAdapter

DEEPSTACK = ("visual_pos_masks", "deepstack_visual_embeds")


class Qwen3VLAdapter(Qwen2VLAdapter):
    family = "qwen3_vl"
    model_types = ("qwen3_vl",)
    examples: ClassVar[tuple[str, ...]] = (
        "Qwen/Qwen3-VL-2B-Instruct",
        "Qwen/Qwen3-VL-4B-Instruct",
        "Qwen/Qwen3-VL-8B-Instruct",
    )

    def reduced_text_kwargs(
        self, kwargs: dict[str, Any], keep: torch.Tensor
    ) -> dict[str, Any] | None:
        """Qwen2-VL's cut, plus DeepStack's: after each of the first decoder layers the text
        model adds one feature row to every position of `visual_pos_masks`, in order. Kept
        image positions (strategies top/random) keep their own rows; what it would add to a
        dropped position reaches nothing from layer K on, so those rows go with it."""
        rest = {k: v for k, v in kwargs.items() if k not in DEEPSTACK}
        out = super().reduced_text_kwargs(rest, keep)
        where, feats = kwargs.get("visual_pos_masks"), kwargs.get("deepstack_visual_embeds")
        if out is None or (where is None) != (feats is None):
            return None
        if where is None or feats is None:  # both or neither (just above)
            return out
        if not isinstance(where, torch.Tensor) or where.dim() != 2 or where.shape[0] != 1:
            return None
        n_visual = int(where.sum())
        if any(not isinstance(f, torch.Tensor) or f.shape[0] != n_visual for f in feats):
            return None
        keep = keep.to(where.device)
        row = torch.cumsum(where[0].long(), 0) - 1  # each visual position's feature row
        rows = row[keep][where[0, keep]]
        out["visual_pos_masks"] = where[:, keep]
        out["deepstack_visual_embeds"] = [f[rows.to(f.device)] for f in feats]
        return out


class Qwen3VLMoeAdapter(Qwen3VLAdapter):
    """Qwen3-VL with a mixture-of-experts language model: same vision side and prompt block;
    the CAM site stays the post-attention norm that feeds the (sparse) MLP block."""

    family = "qwen3_vl_moe"
    model_types = ("qwen3_vl_moe",)
    examples = ("Qwen/Qwen3-VL-30B-A3B-Instruct", "Qwen/Qwen3-VL-235B-A22B-Instruct")
