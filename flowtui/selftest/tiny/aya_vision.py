"""Aya Vision as on the hub: GotOcr2 tiling (a 2x3 grid of tiles plus the global view for this
tall image), tile tags TILE_1.. and TILE_GLOBAL inside <|START_OF_IMG|> .. <|END_OF_IMG|>, SigLIP
with a pixel shuffle (factor 2), and a Cohere 2 decoder whose sliding-window layers (RoPE only
there) see a window much shorter than the sequence, next to full-attention layers (no RoPE)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AyaVisionConfig,
    AyaVisionForConditionalGeneration,
    AyaVisionProcessor,
    Cohere2Config,
    GotOcr2ImageProcessorPil,
    SiglipVisionConfig,
)

from flowtui.selftest.tiny.common import finish, save, token_id, word_tokenizer

FAMILY = "aya_vision"
QUESTION = "Is there a red circle?"
IMAGE_SIZE = (131, 197)  # aspect 0.66: 2 columns x 3 rows of tiles
BLOCK = ("<|START_OF_IMG|>", "<|END_OF_IMG|>")
# The global view shrinks the height ~3.1x: the bicubic kernel reaches ~6 px past a token's cell.
TOLERANCE = 6.5

TILE = 64  # px; patch 8 -> 8x8 patches -> 4x4 tokens per tile after the pixel shuffle
MAX_TILES = 6

# Shaped like the hub's: BOS, a system turn, then the user turn with the image before the text.
TEMPLATE = (
    "{{ bos_token }}<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>you are a helpful model . answer "
    "the question here .<|END_OF_TURN_TOKEN|>"
    "{% for m in messages %}{% if m['role'] == 'user' %}<|START_OF_TURN_TOKEN|><|USER_TOKEN|>"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% endif %}"
    "{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}<|END_OF_TURN_TOKEN|>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>{% endif %}"
)


def build(path: Path) -> Path:
    tok = word_tokenizer(
        ["<PAD>", "<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>", "<|START_OF_TURN_TOKEN|>",
         "<|SYSTEM_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>", "<image>",
         "<|START_OF_IMG|>", "<|END_OF_IMG|>", "<|IMG_PATCH|>", "<|IMG_LINE_BREAK|>",
         "TILE_GLOBAL", *(f"TILE_{i}" for i in range(1, MAX_TILES + 1))],
        bos="<BOS_TOKEN>", eos="<|END_OF_TURN_TOKEN|>", pad="<PAD>",
    )
    # transformers 5.22 leaves vision_use_head out of the signature (5.25 has it)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,  # type: ignore[call-arg, unused-ignore]
                                num_attention_heads=2, image_size=TILE, patch_size=8,
                                vision_use_head=False)
    # ~150 positions: a 24-token window keeps the answer's sliding layers off the image.
    text = Cohere2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, sliding_window=24,
                         layer_types=["sliding_attention", "full_attention",
                                      "sliding_attention", "full_attention"],
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    config = AyaVisionConfig(vision_config=vision, text_config=text, downsample_factor=2,
                             image_token_index=token_id(tok, "<|IMG_PATCH|>"),
                             vision_feature_select_strategy="full", vision_feature_layer=-1,
                             tie_word_embeddings=False)
    torch.manual_seed(0)
    model = finish(AyaVisionForConditionalGeneration(config), tok)
    ip = GotOcr2ImageProcessorPil(size={"height": TILE, "width": TILE}, crop_to_patches=True,
                                  min_patches=1, max_patches=MAX_TILES)
    processor = AyaVisionProcessor(image_processor=ip, tokenizer=tok, patch_size=8, img_size=TILE,
                                   downsample_factor=2, chat_template=TEMPLATE)
    return save(model, processor, path)
