"""Mistral 3 (Mistral Small 3.1 / 3.2) as on the hub: a Pixtral tower that reads the image at its
own aspect (longest edge fitted, sides rounded up to patch x merge), 2x2 patch merging, and a
prompt of [IMG] rows closed by [IMG_BREAK], the last by [IMG_END]. A wide image gives a
non-square 5 x 7 grid; the tower's own limit is below the image size, so it is shrunk."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    Mistral3Config,
    Mistral3ForConditionalGeneration,
    MistralConfig,
    PixtralImageProcessorPil,
    PixtralVisionConfig,
)

from flowtui.engine.processors import processor_class
from flowtui.selftest.tiny.common import finish, save, token_id, word_tokenizer

FAMILY = "mistral3"
QUESTION = "Is there a red circle?"
IMAGE_SIZE = (150, 97)
BLOCK = ("[IMG]", "[IMG_END]")
TOLERANCE = 4.0

SPECIALS = ["<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
            "[IMG]", "[IMG_BREAK]", "[IMG_END]"]

# Shaped like Mistral Small 3.1's template: BOS, a default system prompt in its own tags, the
# user turn in [INST] ... [/INST] with [IMG] where the image block goes, no generation prompt.
TEMPLATE = (
    "{{ bos_token }}[SYSTEM_PROMPT]you are a helpful model . answer the question .[/SYSTEM_PROMPT]"
    "{% for m in messages %}{% if m['role'] == 'user' %}[INST]"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}[IMG]{% endif %}"
    "{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}[/INST]"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)


def build(path: Path) -> Path:
    tok = word_tokenizer(SPECIALS, bos="<s>")
    patch, merge = 4, 2
    vision = PixtralVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 # head_dim reaches the config through **kwargs, unannotated
                                 num_attention_heads=2, head_dim=16,  # type: ignore[call-arg]
                                 image_size=56, patch_size=patch)
    text = MistralConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=16, max_position_embeddings=512, sliding_window=None,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    config = Mistral3Config(vision_config=vision, text_config=text,
                            image_token_index=token_id(tok, "[IMG]"),
                            spatial_merge_size=merge, vision_feature_layer=-1,
                            tie_word_embeddings=False)
    torch.manual_seed(0)
    model = finish(Mistral3ForConditionalGeneration(config), tok)
    ip = PixtralImageProcessorPil(size={"longest_edge": 56}, patch_size={"height": patch,
                                                                         "width": patch})
    pixtral = processor_class("PixtralProcessor")
    assert pixtral is not None  # transformers has it (importable without torchvision)
    processor = pixtral(
        image_processor=ip, tokenizer=tok, patch_size=patch, spatial_merge_size=merge,
        chat_template=TEMPLATE, image_token="[IMG]", image_break_token="[IMG_BREAK]",
        image_end_token="[IMG_END]")
    return save(model, processor, path)
