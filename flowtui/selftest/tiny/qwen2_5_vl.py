"""Qwen2.5-VL as on the hub: Qwen2-VL's processor and prompt block, a ViT with window
attention (patches regrouped into windows and the merged features put back in raster order).

The image (230 x 150) is larger than max_pixels allows: smart resize scales it down to
112 x 84 (3 x 4 merged tokens), changing the aspect; windows of 2 x 2 merged tokens do not
tile that grid, so the regrouping pads.
"""

from __future__ import annotations

from pathlib import Path

from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

from flowtui.selftest.tiny import qwen2_vl as base
from flowtui.selftest.tiny.common import save

FAMILY = "qwen2_5_vl"
ADAPTER_MODULE = "qwen2_vl"
QUESTION = "Is there a red circle?"
IMAGE_SIZE = (230, 150)
MAX_NEW_TOKENS = 6
BLOCK = base.BLOCK
to_channels = base.to_channels


def build(path: Path, seed: int = 2, scale: float = 40.0, eos_boost: float = 1.0,
          qk_scale: float = 8.0) -> Path:
    # Seed, EOS boost and sharpness chosen (see base.build_model) so the baseline stops early
    # and the sweep departs from it mid-answer, then decodes past the teacher-forced sequence.
    tok = base.tokenizer()
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    config = Qwen2_5_VLConfig(
        text_config=base.text_config(tok, rope_parameters=rope),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                           out_hidden_size=64, patch_size=base.PATCH, spatial_merge_size=2,
                           temporal_patch_size=base.TEMPORAL, window_size=56,
                           fullatt_block_indexes=[1]),
        tie_word_embeddings=False, **base.token_ids(tok))
    model = base.build_model(Qwen2_5_VLForConditionalGeneration, config, tok, seed, scale,
                             eos_boost, qk_scale)
    processor = base.processor_for(Qwen2_5_VLProcessor, tok, base.PATCH, 28 * 28 * 4, 28 * 28 * 16)
    return save(model, processor, path, processor_class="Qwen2_5_VLProcessor")
