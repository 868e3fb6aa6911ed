"""Every transformers internal flowtui relies on, named in one place.

flowtui reaches past transformers' public API: it registers its own attention function, builds
masks through transformers' mask registry, hands decoder stacks a cache of its own, replaces
decoder layers during reruns and rebuilds processors without their video part. A release that
renames or changes one of these does not fail: it computes other numbers. So each internal is
reached here, by name, and `probes()` checks each one on the installed release (the tests run
them, `flowtui doctor` shows them). The versions these are tested with are in `flowtui.versions`.

Known changes inside the supported range:
- 5.24 renamed the decoders' `past_key_values` argument to `cache` (the old name warns until
  5.40 and is then gone): `cache_kwarg` reads the name from the forward's own signature.
- 5.23 made `PaliGemmaForConditionalGeneration` soft-cap its logits with the text config's
  `final_logit_softcapping` (PaliGemma 2's Gemma 2 decoder has one): `head_applies_final_softcap`.
- 5.25 made `AyaVisionForConditionalGeneration` multiply its logits by the Cohere text config's
  `logit_scale`, as `CohereForCausalLM` always did: `head_applies_logit_scale` reads it from
  the model's own forward.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
from torch import nn

# --- names flowtui imports from transformers (each one a probe below) -------------------------
from transformers import AttentionInterface, DynamicCache
from transformers.generation.streamers import BaseStreamer
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
from transformers.models.auto.configuration_auto import model_type_to_module_name
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES
from transformers.processing_utils import ProcessorMixin

__all__ = [
    "ALL_MASK_ATTENTION_FUNCTIONS",
    "AttentionInterface",
    "BaseStreamer",
    "DynamicCache",
    "PROCESSOR_MAPPING_NAMES",
    "Probe",
    "ProcessorMixin",
    "cache_kwarg",
    "decoder_stack",
    "final_norm",
    "head_applies_final_softcap",
    "head_applies_logit_scale",
    "model_type_to_module_name",
    "new_cache",
    "output_cache",
    "probes",
    "repeat_kv",
    "sdpa_attention_forward",
    "sdpa_mask",
]

# Where a vision-language model keeps its decoder stack: model.model.<one of these>.
DECODER_STACKS = ("language_model", "text_model")


def decoder_stack(model: nn.Module) -> nn.Module | None:
    """The text decoder (a `*Model` with `.layers`, `.norm`, `.embed_tokens`) inside a
    `*ForConditionalGeneration`, or None where transformers moved it."""
    inner = getattr(model, "model", None)
    for name in DECODER_STACKS:
        if inner is not None and hasattr(inner, name):
            return getattr(inner, name)
    return None


def final_norm(stack: nn.Module) -> nn.Module:
    """The norm a decoder stack applies after its last layer, before the LM head (the logit
    lens applies it to every layer's output: docs/definitions.md)."""
    norm = getattr(stack, "norm", None)
    if not isinstance(norm, nn.Module):
        raise RuntimeError(
            f"transformers changed an internal flowtui relies on: {type(stack).__name__} has no "
            "final norm at .norm"
        )
    return norm


# The argument a decoder stack takes its KV cache by, newest name first.
CACHE_NAMES = ("cache", "past_key_values")


@cache
def _forward_parameters(cls: type[nn.Module]) -> tuple[str, ...]:
    # inspect.signature follows functools.wraps through transformers' decorators
    # (deprecate_kwarg, capture_outputs, ...) to the real forward.
    return tuple(inspect.signature(cls.forward).parameters)


def cache_kwarg(module: nn.Module) -> str:
    """The keyword `module.forward` takes its cache by: `cache` from transformers 5.24 on,
    `past_key_values` before. Passing the other name warns (5.24–5.39) or fails (5.40+)."""
    # mypy reads a class's own __hash__ as the instance method: classes are hashable.
    params = _forward_parameters(type(module))  # type: ignore[arg-type]
    for name in CACHE_NAMES:
        if name in params:
            return name
    raise RuntimeError(
        f"transformers changed an internal flowtui relies on: {type(module).__name__}.forward "
        f"takes no cache argument ({' or '.join(CACHE_NAMES)})"
    )


def output_cache(out: Any) -> Any:
    """The cache a decoder returned: `out.cache` from 5.24 on (`out.past_key_values` there is a
    deprecated alias that warns), `out.past_key_values` before."""
    fields = getattr(type(out), "__dataclass_fields__", {})
    for name in CACHE_NAMES:
        if name in fields:
            return getattr(out, name)
    raise RuntimeError(
        f"transformers changed an internal flowtui relies on: {type(out).__name__} holds no cache "
        f"({' or '.join(CACHE_NAMES)})"
    )


def new_cache(config: Any) -> Any:
    """An empty dynamic cache laid out for `config` (sliding layers trim to their window)."""
    return DynamicCache(config=config)


@cache
def _source(fn: Callable) -> str:
    try:
        return inspect.getsource(inspect.unwrap(fn))
    except (OSError, TypeError):
        return ""


def head_applies_logit_scale(model: nn.Module) -> bool:
    """Whether the model's own forward multiplies the LM head's output by `logit_scale`
    (Cohere's heads do; Aya Vision's wrapper does from transformers 5.25 on)."""
    return "logit_scale" in _source(type(model).forward)


def head_applies_final_softcap(model: nn.Module) -> bool:
    """Whether the model's own forward soft-caps the LM head's output with the text config's
    `final_logit_softcapping` (Gemma 2/3 heads do; PaliGemma's wrapper does from 5.23 on)."""
    return "final_logit_softcapping" in _source(type(model).forward)


# --- probes: each internal checked on the installed release -------------------------------------
@dataclass(frozen=True)
class Probe:
    """One internal: its name, whether the installed transformers still has it as flowtui
    expects, and what changed when not."""

    name: str
    ok: bool
    detail: str = ""


def _probe(name: str, fn: Callable[[], None]) -> Probe:
    try:
        fn()
    except Exception as exc:  # a probe reports, whatever broke
        return Probe(name, False, f"{type(exc).__name__}: {exc}")
    return Probe(name, True)


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise AssertionError(message)


def _attention_registry() -> None:
    _check(hasattr(AttentionInterface, "register"), "AttentionInterface.register is gone")
    _check(hasattr(ALL_MASK_ATTENTION_FUNCTIONS, "register"),
           "ALL_MASK_ATTENTION_FUNCTIONS.register is gone")
    params = inspect.signature(sdpa_attention_forward).parameters
    for p in ("module", "query", "key", "value", "attention_mask"):
        _check(p in params, f"sdpa_attention_forward lost its {p!r} argument")


def _mask_function() -> None:
    # flowtui registers sdpa_mask as its mask function and reads what it builds as a boolean
    # [.., q, kv] mask (True = may attend): a causal one for a plain decoder.
    params = inspect.signature(sdpa_mask).parameters
    for p in ("batch_size", "q_length", "kv_length", "allow_is_causal_skip"):
        _check(p in params, f"sdpa_mask lost its {p!r} argument")
    mask = sdpa_mask(batch_size=1, q_length=3, kv_length=3, allow_is_causal_skip=False,
                     device="cpu")
    _check(mask is not None and mask.dtype == torch.bool and tuple(mask.shape[-2:]) == (3, 3),
           f"sdpa_mask returns {None if mask is None else (mask.dtype, tuple(mask.shape))}, "
           "not a boolean [.., q, kv] mask")
    _check(mask is not None
           and torch.equal(mask[0, 0], torch.ones(3, 3, dtype=torch.bool).tril()),
           "sdpa_mask's mask is no longer causal")


def _cache_api() -> None:
    from transformers import LlamaConfig

    cfg = LlamaConfig(num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                      hidden_size=8, intermediate_size=8, vocab_size=8)
    c = new_cache(cfg)
    k = torch.randn(1, 1, 3, 4)
    v = torch.randn(1, 1, 3, 4)
    for layer in range(2):
        ko, vo = c.update(k, v, layer)
        _check(torch.equal(ko, k) and torch.equal(vo, v),
               "DynamicCache.update no longer returns the keys/values it was given")
    ko, _ = c.update(k[:, :, :1], v[:, :, :1], 0)
    _check(ko.shape[2] == 4, "DynamicCache.update no longer appends along the sequence axis")
    _check(c.get_seq_length(1) == 3, "DynamicCache.get_seq_length counts differently")


def _cache_argument() -> None:
    from transformers import LlamaConfig, LlamaModel

    _check(cache_kwarg(LlamaModel(LlamaConfig(
        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, hidden_size=8,
        intermediate_size=8, vocab_size=8))) in CACHE_NAMES, "no cache argument")


def _streamer() -> None:
    _check(callable(getattr(BaseStreamer, "put", None)) and callable(getattr(BaseStreamer, "end",
                                                                              None)),
           "BaseStreamer lost put()/end()")


def _processor_internals() -> None:
    _check(callable(getattr(ProcessorMixin, "get_attributes", None)),
           "ProcessorMixin.get_attributes is gone (image-only processors need it)")
    _check("llava" in PROCESSOR_MAPPING_NAMES, "PROCESSOR_MAPPING_NAMES no longer maps llava")
    _check(model_type_to_module_name("qwen2_5_vl") == "qwen2_5_vl",
           "model_type_to_module_name maps differently")


def _decoder_layers() -> None:
    from transformers import LlamaConfig, LlamaModel, LlavaConfig, LlavaForConditionalGeneration

    vlm = LlavaForConditionalGeneration(LlavaConfig(
        text_config={"model_type": "llama", "num_hidden_layers": 1, "num_attention_heads": 2,
                     "num_key_value_heads": 1, "hidden_size": 8, "intermediate_size": 8,
                     "vocab_size": 40},
        vision_config={"model_type": "clip_vision_model", "num_hidden_layers": 1,
                       "num_attention_heads": 2, "hidden_size": 8, "intermediate_size": 8,
                       "image_size": 8, "patch_size": 4},
        image_token_index=39))
    _check(isinstance(getattr(decoder_stack(vlm), "layers", None), nn.ModuleList),
           f"the decoder stack is no longer at model.model.{{{','.join(DECODER_STACKS)}}}")
    m = LlamaModel(LlamaConfig(num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                               hidden_size=8, intermediate_size=8, vocab_size=8))
    _check(isinstance(getattr(m, "layers", None), nn.ModuleList), "decoder stacks lost .layers")
    _check(isinstance(getattr(m, "norm", None), nn.Module), "decoder stacks lost their final .norm")
    layer = m.layers[0]
    _check(hasattr(layer, "post_attention_layernorm"), "decoder layers lost their MLP-input norm")
    _check(getattr(layer.self_attn, "layer_idx", None) == 0, "attention modules lost layer_idx")


def probes() -> list[Probe]:
    """Each internal flowtui relies on, checked on the installed transformers."""
    return [
        _probe("attention-function registry", _attention_registry),
        _probe("mask construction (sdpa_mask)", _mask_function),
        _probe("cache class API (DynamicCache)", _cache_api),
        _probe("cache argument name", _cache_argument),
        _probe("decoder layer paths", _decoder_layers),
        _probe("generation streamer", _streamer),
        _probe("processor internals", _processor_internals),
    ]
