"""Shared pieces of the tiny models: a word-level tokenizer, the finishing touches, saving."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

WORDS = (
    "system user assistant model : . , ? a the is there an of in on what colour color shape "
    "red green blue yellow circle square triangle horse cat dog yes no how many one two three "
    "you are helpful answer question image photo describe this picture here crops"
).split()


def token_id(tok: PreTrainedTokenizerBase, token: str) -> int:
    """The id of one token (convert_tokens_to_ids is typed for a list of them too)."""
    ident = tok.convert_tokens_to_ids(token)
    assert isinstance(ident, int)
    return ident


def word_tokenizer(
    specials: list[str],
    bos: str | None = None,
    eos: str = "</s>",
    pad: str = "<pad>",
    extra: dict[str, str] | None = None,
    words: list[str] | None = None,
) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer whose vocabulary is `specials` then WORDS.

    Special tokens are matched whole before splitting (as real tokenizers' added tokens are);
    "\\n" is a word of its own, so templates can put newlines where the real ones do.
    """
    vocab: dict[str, int] = {}
    for w in ["<unk>", *specials, *(words or WORDS), "\n"]:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    kwargs = {"unk_token": "<unk>", "eos_token": eos, "pad_token": pad}
    if bos:
        kwargs["bos_token"] = bos
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, extra_special_tokens=extra or {}, **kwargs)
    fast.add_special_tokens({"additional_special_tokens": [s for s in specials if s not in (bos, eos, pad)]})
    fast.add_tokens([AddedToken("\n", normalized=False, special=False)])
    return fast


def finish(model, tokenizer, seed_scale: float = 40.0):
    """Random init gives near-uniform logits; scaling the head makes greedy answers decisive,
    so they depend on the image and argmax ties do not make the tests flaky."""
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(seed_scale)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model.eval()


def save(model, processor, path: Path, processor_class: str | None = None) -> Path:
    """Save as a hub folder is laid out; `processor_class` names the real class where the
    test built an image-only stand-in (no torchvision here)."""
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    if processor_class:
        for name in ("processor_config.json", "tokenizer_config.json"):
            f = path / name
            if f.exists():
                data = json.loads(f.read_text())
                if "processor_class" in data:
                    data["processor_class"] = processor_class
                    f.write_text(json.dumps(data, indent=2))
    return path


def llama_text(tok, **overrides):
    """The tiny Llama decoder most tiny models share: 4 layers, hidden 64, GQA 4/2 heads."""
    from transformers import LlamaConfig

    kwargs = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                  num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=512, bos_token_id=tok.bos_token_id,
                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                  tie_word_embeddings=False)
    return LlamaConfig(**{**kwargs, **overrides})


def clip_vision(image_size: int, patch_size: int):
    """A two-layer CLIP tower of width 32."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=2, image_size=image_size, patch_size=patch_size,
                            projection_dim=32)
