"""LLaVA-1.5 as on the hub: CLIP tower, shortest-edge resize and a centre crop, so a wide
image's sides never reach the model (regions must land on the crop, not the whole image)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    CLIPImageProcessorPil,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from flowtui.selftest.tiny.common import (
    clip_vision,
    finish,
    llama_text,
    save,
    token_id,
    word_tokenizer,
)

FAMILY = "llava"
QUESTION = "Is there a red circle?"
IMAGE_SIZE = (150, 97)
BLOCK = ("<image>", "<image>")
TOLERANCE = 4.0

TEMPLATE = (
    "{{ bos_token }}you are a helpful model . "
    "{% for m in messages %}{% if m['role'] == 'user' %}user : "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image> {% endif %}"
    "{% if c['type'] == 'text' %}{{ c['text'] }} {% endif %}{% endfor %}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}assistant :{% endif %}"
)


def build(path: Path) -> Path:
    tok = word_tokenizer(["<s>", "</s>", "<pad>", "<image>"], bos="<s>",
                         extra={"image_token": "<image>"})
    vision = clip_vision(image_size=56, patch_size=8)
    text = llama_text(tok)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_index=token_id(tok, "<image>"),
                         vision_feature_select_strategy="default", vision_feature_layer=-1)
    torch.manual_seed(1)
    model = finish(LlavaForConditionalGeneration(config), tok)
    ip = CLIPImageProcessorPil(size={"shortest_edge": 56}, do_center_crop=True,
                               crop_size={"height": 56, "width": 56})
    processor = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=8,
                               vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=TEMPLATE,
                               image_token="<image>")
    return save(model, processor, path)
