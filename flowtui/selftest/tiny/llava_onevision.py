"""LLaVA-OneVision as on the hub (llava-onevision-qwen2): a SigLIP tower (no CLS, "full"
features), anyres tiles plus a base view, unpadding, and "anyres_max_2" so the 6 x 12 unpadded
tile raster is more than two tiles' worth and the model shrinks it bilinearly to 4 x 8."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessorPil,
    Qwen2Config,
    SiglipVisionConfig,
)

from flowtui.engine.processors import image_only, processor_class
from flowtui.selftest.tiny.common import finish, save, token_id, word_tokenizer

FAMILY = "llava_onevision"
QUESTION = "Is there a red circle?"
IMAGE_SIZE = (150, 70)
BLOCK = ("<image>", "<image>")
TOLERANCE = 4.0

PINPOINTS = [[28, 28], [28, 56], [56, 28], [56, 56], [56, 84], [84, 56]]
ASPECT = "anyres_max_2"

# Shaped like llava-onevision-qwen2's template (ChatML): a system turn, the user turn with
# "<image>\n" before the question, "<|im_start|>assistant\n" as the generation prompt.
TEMPLATE = (
    "<|im_start|>system\nyou are a helpful model .<|im_end|>\n"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build(path: Path) -> Path:
    tok = word_tokenizer(["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<image>", "<video>"],
                         eos="<|im_end|>", pad="<|endoftext|>",
                         extra={"image_token": "<image>", "video_token": "<video>"})
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=2, image_size=28, patch_size=7)
    text = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                       num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=512, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    config = LlavaOnevisionConfig(vision_config=vision, text_config=text,
                                  image_token_index=token_id(tok, "<image>"),
                                  video_token_index=token_id(tok, "<video>"),
                                  image_grid_pinpoints=PINPOINTS, vision_aspect_ratio=ASPECT,
                                  vision_feature_select_strategy="full", vision_feature_layer=-1,
                                  tie_word_embeddings=False)
    torch.manual_seed(0)
    model = finish(LlavaOnevisionForConditionalGeneration(config), tok)
    ip = LlavaOnevisionImageProcessorPil(size={"height": 28, "width": 28},
                                         image_grid_pinpoints=PINPOINTS)
    # The real class minus its video processor (no torchvision here), saved under its name.
    onevision = processor_class("LlavaOnevisionProcessor")
    assert onevision is not None  # transformers has it (its module imports without torchvision)
    # mypy reads a class's own __hash__ as the instance method: classes are hashable.
    processor = image_only(onevision)(  # type: ignore[arg-type]
        image_processor=ip, tokenizer=tok, num_image_tokens=16,
        vision_feature_select_strategy="full", vision_aspect_ratio=ASPECT,
        chat_template=TEMPLATE, image_token="<image>", video_token="<video>")
    return save(model, processor, path, processor_class="LlavaOnevisionProcessor")
