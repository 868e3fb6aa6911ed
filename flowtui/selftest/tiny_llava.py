"""Tiny LLaVA models built from configs with random weights, saved with save_pretrained.

They go through the same loading path as a user's model, so the tests exercise the real code.
Two geometries differ in image grid, system prompt length, heads (GQA) and depth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from flowtui.selftest.tiny.common import token_id

WORDS = (
    "system user assistant : . , ? a the is there an of in on what colour color shape "
    "red green blue yellow circle square triangle horse cat dog yes no how many one two three "
    "you are helpful model answer question image photo describe this picture"
).split()


@dataclass(frozen=True)
class Geometry:
    name: str
    image_size: int
    patch_size: int
    system_prompt: str
    num_layers: int
    num_heads: int
    num_kv_heads: int
    hidden: int = 64
    vision_hidden: int = 32
    # The context length: flowtui refuses a prompt past it, so geometries with many image
    # tokens (the benches' 576) need more than the default.
    max_positions: int = 512

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


GEOMETRIES = {
    # 6x6 grid, long system prompt, plain multi-head attention.
    "a": Geometry("a", 48, 8, "you are a helpful model . answer the question", 4, 4, 4),
    # 5x5 grid (not square-power of the LLaVA default), short system prompt, GQA.
    "b": Geometry("b", 40, 8, "system :", 5, 4, 2),
}


def _tokenizer() -> PreTrainedTokenizerFast:
    specials = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    return fast


def _chat_template(system_prompt: str) -> str:
    # LLaVA-1.5 style: BOS, system prompt, USER: <image> question ASSISTANT:
    return (
        "{{ bos_token }}" + system_prompt + " "
        "{% for m in messages %}{% if m['role'] == 'user' %}user : "
        "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image> {% endif %}"
        "{% if c['type'] == 'text' %}{{ c['text'] }} {% endif %}{% endfor %}"
        "{% elif m['role'] == 'assistant' %}assistant : {{ m['content'][0]['text'] }} {{ eos_token }} "
        "{% endif %}{% endfor %}{% if add_generation_prompt %}assistant :{% endif %}"
    )


def build_tiny_llava(path: Path, geometry: str | Geometry = "a", seed: int = 0) -> Path:
    """Build, save and return the folder of a tiny random LLaVA with its processor."""
    g = GEOMETRIES[geometry] if isinstance(geometry, str) else geometry
    tokenizer = _tokenizer()
    image_token_id = token_id(tokenizer, "<image>")
    vision = CLIPVisionConfig(
        hidden_size=g.vision_hidden,
        intermediate_size=g.vision_hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=g.image_size,
        patch_size=g.patch_size,
        projection_dim=g.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=g.hidden,
        intermediate_size=g.hidden * 2,
        num_hidden_layers=g.num_layers,
        num_attention_heads=g.num_heads,
        num_key_value_heads=g.num_kv_heads,
        max_position_embeddings=g.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    # Random init gives near-uniform logits; scaling the head makes greedy answers decisive, so
    # they depend on the image and argmax ties do not make the tests flaky.
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    image_processor = CLIPImageProcessorPil(
        size={"height": g.image_size, "width": g.image_size},
        do_center_crop=False,
        crop_size={"height": g.image_size, "width": g.image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=g.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=_chat_template(g.system_prompt),
        image_token="<image>",
    )
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
