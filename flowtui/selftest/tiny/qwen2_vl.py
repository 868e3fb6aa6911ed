"""Qwen2-VL as on the hub: smart resize to multiples of 28 (patch 14 x merge 2) within
min/max pixels, features one per 2x2 merged window in raster order, M-RoPE positions from
`mm_token_type_ids`, and a template with a default system prompt.

The image (150 x 97) is rounded to 140 x 84: the aspect changes slightly and the merged grid
is 3 x 5. Also the shared builder of the Qwen2.5-VL and Qwen3-VL tiny models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Qwen2VLProcessor,
)

from flowtui.engine.processors import image_only
from flowtui.selftest.tiny.common import finish, save, word_tokenizer

FAMILY = "qwen2_vl"
QUESTION = "Is there a horse?"
IMAGE_SIZE = (150, 97)
BLOCK = ("<|vision_start|>", "<|vision_end|>")
MAX_NEW_TOKENS = 8

PATCH = 14
TEMPORAL = 2

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>"]

# The real Qwen2-VL / Qwen2.5-VL template: a default system prompt when none is given, then
# the image block where the image comes in the user's content.
TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nyou are a helpful assistant .<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tokenizer():
    return word_tokenizer(SPECIALS, eos="<|im_end|>", pad="<|endoftext|>",
                          extra={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"})


def token_ids(tok) -> dict[str, Any]:  # config kwargs (ints)
    return {
        "image_token_id": tok.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tok.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tok.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tok.convert_tokens_to_ids("<|vision_end|>"),
    }


def text_config(tok, **extra) -> dict:
    return dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                bos_token_id=None, **extra)


def processor_for(cls, tok, patch: int, min_pixels: int, max_pixels: int,
                  template: str = TEMPLATE, **image_kwargs):
    """The real processor class without its video processor (no torchvision here); saved
    under the real class name, so loading goes through flowtui's own fallback."""
    ip = Qwen2VLImageProcessorPil(
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels}, patch_size=patch,
        merge_size=2, temporal_patch_size=TEMPORAL, **image_kwargs)
    return image_only(cls)(image_processor=ip, tokenizer=tok, chat_template=template)


def build_model(model_cls, config, tok, seed: int, scale: float, eos_boost: float = 1.0,
                qk_scale: float = 1.0):
    """`eos_boost` scales the end-of-sequence row of the head: a baseline that stops early
    makes truncated runs decode past the teacher-forced sequence (extrapolated positions).
    `qk_scale` sharpens the language model's attention, which random init leaves nearly
    uniform and so blind to positions: wrong M-RoPE positions then change the answers."""
    torch.manual_seed(seed)
    model = finish(model_cls(config), tok, scale)
    with torch.no_grad():
        model.get_output_embeddings().weight[tok.eos_token_id] *= eos_boost
        for layer in model.model.language_model.layers:
            attn = layer.self_attn
            q, k = (attn.q_norm, attn.k_norm) if hasattr(attn, "q_norm") else (attn.q_proj, attn.k_proj)
            q.weight.mul_(qk_scale)
            k.weight.mul_(qk_scale)
    return model


def to_channels(pixel_values: torch.Tensor, patch: int = PATCH) -> torch.Tensor:
    """Flattened patches [N, C*T*P*P] (channel, time, row, column) -> [N, T, C, P, P]."""
    return pixel_values.reshape(-1, 3, TEMPORAL, patch, patch).transpose(1, 2)


def build(path: Path, seed: int = 5, scale: float = 40.0, eos_boost: float = 2.0,
          qk_scale: float = 8.0) -> Path:
    # Seed, EOS boost and sharpness chosen (see build_model) so the baseline stops early and
    # the sweep departs from it mid-answer, then decodes past the teacher-forced sequence.
    tok = tokenizer()
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    config = Qwen2VLConfig(
        text_config=text_config(tok, rope_parameters=rope),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2,
                           patch_size=PATCH, spatial_merge_size=2, temporal_patch_size=TEMPORAL),
        tie_word_embeddings=False, **token_ids(tok))
    model = build_model(Qwen2VLForConditionalGeneration, config, tok, seed, scale, eos_boost,
                        qk_scale)
    # min/max pixels leave 150 x 97 to the plain rounding to multiples of 28.
    processor = processor_for(Qwen2VLProcessor, tok, PATCH, 28 * 28 * 4, 28 * 28 * 40)
    return save(model, processor, path, processor_class="Qwen2VLProcessor")
