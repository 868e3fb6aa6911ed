"""Gemma 3 as on the hub: SigLIP tower, the whole image stretched to the tower's square, its
patches average-pooled to mm_tokens_per_image tokens between <start_of_image> and
<end_of_image> (the "\\n\\n" around the block is text). The decoder mixes sliding-window and
global layers with two RoPE bases; the window is shorter than the sequence on purpose, so
the masks (and the bidirectional image block from token_type_ids) really matter.

`build(path, pan_and_scan=True)` saves a variant whose image processor asks for pan & scan:
the original image plus crops, one image block each (tests/test_family_gemma3.py)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import (
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessorPil,
    Gemma3Processor,
    Gemma3TextConfig,
    SiglipVisionConfig,
)

from flowtui.selftest.tiny.common import finish, save, token_id, word_tokenizer

FAMILY = "gemma3"
QUESTION = "Is there a red circle?"
IMAGE_SIZE = (150, 97)
BLOCK = ("<start_of_image>", "<end_of_image>")
TOLERANCE = 3.0
# Pan & scan in the family test: a long image gives three crops, the last one narrower.
PAN_AND_SCAN: dict[str, Any] = {"do_pan_and_scan": True, "pan_and_scan_min_crop_size": 32,
                "pan_and_scan_max_num_crops": 4, "pan_and_scan_min_ratio_to_activate": 1.2}
PAN_AND_SCAN_IMAGE_SIZE = (230, 80)

# The real template folds a system message into the first user turn ("...\n\n"); this one
# has a default system prompt there, so the system group has a length of its own.
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' }}"
    "{% if loop.first %}{{ 'you are a helpful model .\\n\\n' }}{% endif %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif c['type'] == 'text' %}{{ c['text'] | trim }}{% endif %}{% endfor %}"
    "{{ '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


def build(path: Path, pan_and_scan: bool = False) -> Path:
    tok = word_tokenizer(
        ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
         "<end_of_image>", "<image_soft_token>"],
        bos="<bos>", eos="<eos>", pad="<pad>",
        extra={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
               "image_token": "<image_soft_token>"},
    )
    ids = partial(token_id, tok)
    # 12x12 patches pooled 3x3 into 4x4 tokens.
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=2, image_size=48, patch_size=4)
    text = Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
        max_position_embeddings=512, sliding_window=8,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}},
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
    )
    config = Gemma3Config(
        vision_config=vision, text_config=text, mm_tokens_per_image=16,
        image_token_index=ids("<image_soft_token>"), boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"), tie_word_embeddings=False,
    )
    torch.manual_seed(1)
    model = Gemma3ForConditionalGeneration(config)
    with torch.no_grad():
        # Random init leaves the projection at zero: the image would not reach the decoder.
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.3)
    model = finish(model, tok)
    # As the hub's generation config: a turn ends at <end_of_turn> as well as at <eos>.
    model.generation_config.eos_token_id = [tok.eos_token_id, ids("<end_of_turn>")]
    ip = Gemma3ImageProcessorPil(size={"height": 48, "width": 48},
                                 **(PAN_AND_SCAN if pan_and_scan else {}))
    processor = Gemma3Processor(image_processor=ip, tokenizer=tok, chat_template=TEMPLATE,
                                image_seq_length=16)
    return save(model, processor, path)
