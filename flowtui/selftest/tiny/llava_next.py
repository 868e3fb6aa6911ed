"""LLaVA-NeXT as on the hub (llava-v1.6-vicuna): a CLIP tower, "anyres" tiles over the best of
the grid pinpoints plus a base view, unpadding and a learned newline after each tile row. A wide
image picks the 2 x 3 pinpoint, is padded above and below, and loses padding rows of features."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
)

from flowtui.selftest.tiny.common import (
    clip_vision,
    finish,
    llama_text,
    save,
    token_id,
    word_tokenizer,
)

FAMILY = "llava_next"
QUESTION = "Is there a red circle?"
IMAGE_SIZE = (150, 70)
BLOCK = ("<image>", "<image>")
TOLERANCE = 4.0

PINPOINTS = [[28, 56], [56, 28], [56, 56], [56, 84], [84, 56]]

# Shaped like llava-v1.6-vicuna's template: a system sentence, "USER: <image>\n question",
# "ASSISTANT:" as the generation prompt.
TEMPLATE = (
    "{{ bos_token }}you are a helpful model . answer the question . "
    "{% for m in messages %}{% if m['role'] == 'user' %}user : "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }} {% endif %}{% endfor %}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}assistant :{% endif %}"
)


def build(path: Path) -> Path:
    tok = word_tokenizer(["<s>", "</s>", "<pad>", "<image>"], bos="<s>",
                         extra={"image_token": "<image>"})
    vision = clip_vision(image_size=28, patch_size=7)
    text = llama_text(tok)
    config = LlavaNextConfig(vision_config=vision, text_config=text,
                             image_token_index=token_id(tok, "<image>"),
                             image_grid_pinpoints=PINPOINTS,
                             vision_feature_select_strategy="default", vision_feature_layer=-1)
    torch.manual_seed(0)
    model = finish(LlavaNextForConditionalGeneration(config), tok)
    ip = LlavaNextImageProcessorPil(size={"shortest_edge": 28},
                                    crop_size={"height": 28, "width": 28},
                                    image_grid_pinpoints=PINPOINTS)
    processor = LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=7,
                                   vision_feature_select_strategy="default",
                                   num_additional_image_tokens=1, chat_template=TEMPLATE,
                                   image_token="<image>")
    return save(model, processor, path)
