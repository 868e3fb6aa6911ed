"""InternVL (transformers-native) as on the hub: GotOcr2 tiling (a 3x2 grid of tiles plus a
thumbnail for this wide image), InternViT, pixel shuffle 0.5, a Qwen2 decoder, and a processor
that needs torchvision for its video part (so it loads through flowtui's image-only path)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    GotOcr2ImageProcessorPil,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLProcessor,
    InternVLVisionConfig,
    Qwen2Config,
)

from flowtui.engine.processors import image_only
from flowtui.selftest.tiny.common import finish, save, token_id, word_tokenizer

FAMILY = "internvl"
QUESTION = "What colour is the shape?"
IMAGE_SIZE = (181, 119)  # aspect 1.52: 3 columns x 2 rows of tiles
BLOCK = ("<img>", "</img>")
# The thumbnail shrinks the image ~2.8x: the bicubic kernel reaches ~6 px past a token's cell.
TOLERANCE = 6.5

TILE = 64  # px; patch 8 -> 8x8 patches -> 4x4 tokens per tile after the pixel shuffle

# Shaped like the hub's: a system turn, then the image as "<IMG_CONTEXT>\n" before the text.
TEMPLATE = (
    "<|im_start|>system\nyou are a helpful model . answer the question .<|im_end|>\n"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<IMG_CONTEXT>\n{% endif %}"
    "{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build(path: Path) -> Path:
    tok = word_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>",
         "<video>"],
        eos="<|im_end|>", pad="<|endoftext|>",
        extra={"start_image_token": "<img>", "end_image_token": "</img>",
               "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"},
    )
    vision = InternVLVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=2, image_size=TILE, patch_size=8)
    text = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                       num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=512, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    per_tile = (TILE // 8 // 2) ** 2
    config = InternVLConfig(vision_config=vision, text_config=text,
                            image_token_id=token_id(tok, "<IMG_CONTEXT>"),
                            image_seq_length=per_tile, downsample_ratio=0.5,
                            tie_word_embeddings=False)
    torch.manual_seed(0)
    model = finish(InternVLForConditionalGeneration(config), tok)
    ip = GotOcr2ImageProcessorPil(size={"height": TILE, "width": TILE}, crop_to_patches=True,
                                  min_patches=1, max_patches=6)
    # No torchvision here: the image-only build of the real class (as flowtui loads it).
    processor = image_only(InternVLProcessor)(image_processor=ip, tokenizer=tok,
                                              image_seq_length=per_tile, chat_template=TEMPLATE)
    return save(model, processor, path, processor_class="InternVLProcessor")
