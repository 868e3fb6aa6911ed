"""Qwen3-VL as on the hub: 16-px patches (smart resize to multiples of 32), mean/std 0.5,
interleaved M-RoPE, DeepStack features added after the first decoder layers, and the Qwen3
template, which (unlike Qwen2-VL's) adds no system prompt unless one is given.

The image (90 x 60) is below min_pixels: smart resize scales it up to 160 x 96 (3 x 5 merged
tokens). DeepStack takes three ViT layers, so it lands after LM layers 0, 1 and 2 of 4 and
reruns from K < 3 must reproduce it.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor

from flowtui.selftest.tiny import qwen2_vl as base
from flowtui.selftest.tiny.common import save

FAMILY = "qwen3_vl"
QUESTION = "Is there a red circle?"
IMAGE_SIZE = (90, 60)
MAX_NEW_TOKENS = 6
BLOCK = base.BLOCK
PATCH = 16

to_channels = partial(base.to_channels, patch=PATCH)

# The real Qwen3-VL Instruct template, reduced to the branches a single user turn reaches.
TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "<|im_start|>system\n{{ messages[0]['content'] }}<|im_end|>\n{% endif %}"
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build(path: Path, seed: int = 1, scale: float = 40.0, eos_boost: float = 2.0,
          qk_scale: float = 1.0) -> Path:
    # Seed and EOS boost chosen (see base.build_model) so the baseline stops early and the
    # sweep departs from it mid-answer at K < 3, then decodes past the teacher-forced sequence.
    # q_norm/k_norm already make Qwen3's attention sharp enough to depend on positions.
    tok = base.tokenizer()
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2],
            "mrope_interleaved": True}
    config = Qwen3VLConfig(
        text_config=base.text_config(tok, head_dim=16, rope_parameters=rope),
        vision_config=dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2,
                           out_hidden_size=64, patch_size=PATCH, spatial_merge_size=2,
                           temporal_patch_size=base.TEMPORAL, num_position_embeddings=16,
                           deepstack_visual_indexes=[0, 1, 2]),
        tie_word_embeddings=False, **base.token_ids(tok))
    model = base.build_model(Qwen3VLForConditionalGeneration, config, tok, seed, scale,
                             eos_boost, qk_scale)
    processor = base.processor_for(Qwen3VLProcessor, tok, PATCH, 32 * 32 * 12, 32 * 32 * 64,
                                   template=TEMPLATE, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return save(model, processor, path, processor_class="Qwen3VLProcessor")
