"""Qwen3-VL-MoE (Qwen3-VL-30B-A3B and 235B-A22B on the hub): the tiny Qwen3-VL with a
mixture-of-experts language model (top-2 of 4 experts in every layer); same processor,
template, geometry and DeepStack as qwen3_vl.py."""

from __future__ import annotations

from pathlib import Path

from transformers import Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration, Qwen3VLProcessor

from flowtui.selftest.tiny import qwen2_vl as base
from flowtui.selftest.tiny import qwen3_vl as dense
from flowtui.selftest.tiny.common import save

FAMILY = "qwen3_vl_moe"
ADAPTER_MODULE = "qwen3_vl"
QUESTION = dense.QUESTION
IMAGE_SIZE = dense.IMAGE_SIZE
MAX_NEW_TOKENS = dense.MAX_NEW_TOKENS
BLOCK = dense.BLOCK
to_channels = dense.to_channels


def build(path: Path, seed: int = 1, scale: float = 40.0, eos_boost: float = 1.0,
          qk_scale: float = 1.0) -> Path:
    tok = base.tokenizer()
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2],
            "mrope_interleaved": True}
    text = base.text_config(tok, head_dim=16, rope_parameters=rope, num_experts=4,
                            num_experts_per_tok=2, moe_intermediate_size=32,
                            decoder_sparse_step=1, mlp_only_layers=[])
    config = Qwen3VLMoeConfig(
        text_config=text,
        vision_config=dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2,
                           out_hidden_size=64, patch_size=dense.PATCH, spatial_merge_size=2,
                           temporal_patch_size=base.TEMPORAL, num_position_embeddings=16,
                           deepstack_visual_indexes=[0, 1, 2]),
        tie_word_embeddings=False, **base.token_ids(tok))
    model = base.build_model(Qwen3VLMoeForConditionalGeneration, config, tok, seed, scale,
                             eos_boost, qk_scale)
    processor = base.processor_for(Qwen3VLProcessor, tok, dense.PATCH, 32 * 32 * 12,
                                   32 * 32 * 64, template=dense.TEMPLATE,
                                   image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return save(model, processor, path, processor_class="Qwen3VLProcessor")
