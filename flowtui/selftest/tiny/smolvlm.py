"""SmolVLM2 as on the hub: the Idefics3 geometry (tiles of `max_image_size`, a global image,
pixel shuffle) with SmolVLM's own classes; its processor has a video part that needs
torchvision, so the test builds it image-only and names the real class in the saved folder,
which flowtui must then load like a hub folder."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
    SmolVLMImageProcessorPil,
    SmolVLMProcessor,
    SmolVLMVisionConfig,
)

from flowtui.engine.processors import image_only
from flowtui.selftest.tiny.common import finish, save
from flowtui.selftest.tiny.idefics3 import IMAGE_SIZE, SCALE, TEMPLATE, TOLERANCE, parts  # noqa: F401

FAMILY = "smolvlm"
QUESTION = "What colour is the shape?"
BLOCK = ("<fake_token_around_image>", "<fake_token_around_image>")


def build(path: Path) -> Path:
    # The SmolVLM2 template is Idefics3's with <|im_start|> for the BOS; its tokenizer has the
    # tile tags as tokens.
    tok, vision, text, ip, seq = parts("<|im_start|>", tag_tokens=True)
    config = SmolVLMConfig(vision_config=SmolVLMVisionConfig(**vision), text_config=text,
                           scale_factor=SCALE, image_token_id=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(12)
    model = finish(SmolVLMForConditionalGeneration(config), tok)
    processor = image_only(SmolVLMProcessor)(
        image_processor=SmolVLMImageProcessorPil(**ip), tokenizer=tok, video_processor=None,
        image_seq_len=seq, chat_template=TEMPLATE.replace("<|begin_of_text|>", "<|im_start|>"),
    )
    return save(model, processor, path, processor_class="SmolVLMProcessor")
