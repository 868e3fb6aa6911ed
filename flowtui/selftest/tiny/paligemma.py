"""PaliGemma 2 as on the hub: SigLIP tower (every patch a token, no pooling) over the whole
image stretched to its square, a Gemma 2 decoder with attention-logit and final-logit
soft-capping and sliding-window layers. No chat template: the processor writes
`<image>` x N + <bos> + prompt + "\\n" itself, so the image comes first (the system group is
empty); the prefix is bidirectional and token_type_ids mark the answer (the suffix) with 1.

The caps are small on purpose, so that dropping either changes the numbers: a cap of 50 on
a tiny random model's attention logits would be the identity."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    Gemma2Config,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PaliGemmaProcessor,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
)

from flowtui.selftest.tiny.common import WORDS, finish, save, token_id, word_tokenizer

FAMILY = "paligemma"
# The mix checkpoints take a task prefix ("answer en", "caption en"): part of the question.
QUESTION = "answer en Is there a red circle?"
IMAGE_SIZE = (150, 97)
BLOCK = ("<image>", "<image>")
TOLERANCE = 4.0


def build(path: Path) -> Path:
    # The hub tokenizer names no image token: the processor adds "<image>" (and the
    # <locXXXX>/<segXXX> tokens) itself.
    tok = word_tokenizer(["<pad>", "<eos>", "<bos>", "<image>"], bos="<bos>", eos="<eos>",
                         pad="<pad>", words=[*WORDS, "en"])
    # transformers 5.22 leaves vision_use_head out of the signature (5.25 has it)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,  # type: ignore[call-arg, unused-ignore]
                                num_attention_heads=2, image_size=48, patch_size=8,
                                vision_use_head=False)
    text = Gemma2Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
        max_position_embeddings=512, sliding_window=8,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        attn_logit_softcapping=5.0, final_logit_softcapping=8.0,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
    )
    config = PaliGemmaConfig(vision_config=vision, text_config=text, projection_dim=64,
                             hidden_size=64, vocab_size=len(tok),
                             image_token_index=token_id(tok, "<image>"),
                             tie_word_embeddings=False)
    torch.manual_seed(0)
    model = PaliGemmaForConditionalGeneration(config)
    with torch.no_grad():
        # Random init gives attention logits of ~0.1, which no cap bends: sharpen them to a
        # few units, so the attention soft-capping changes the numbers.
        for layer in model.model.language_model.layers:
            layer.self_attn.q_proj.weight.mul_(10.0)
            layer.self_attn.k_proj.weight.mul_(10.0)
    model = finish(model, tok, seed_scale=10.0)
    ip = SiglipImageProcessorPil(size={"height": 48, "width": 48}, image_seq_length=36)
    processor = PaliGemmaProcessor(image_processor=ip, tokenizer=tok)
    return save(model, processor, path)
