"""Family adapters: where a loaded LVLM keeps its decoder layers, CAM sites, image tokens and grid.

Everything is read from the model config and the processor output, never typed-in offsets (the
paper's scripts hard-code 34/35/36 and 576 for LLaVA-1.5). A new family (LLaVA-NeXT, Qwen2-VL,
InternVL, Gemma 3) plugs in by subclassing `FamilyAdapter` and adding itself to `ADAPTERS`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from flowtui.engine.errors import InputError, ModelLoadError


class FamilyAdapter:
    """What the engine needs to know about one model family."""

    family: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: nn.Module, processor: Any) -> None:
        self.model = model
        self.processor = processor

    # --- structure -------------------------------------------------------------------------
    @property
    def text_model(self) -> nn.Module:
        """The decoder stack (a `*Model` with `.layers`, `.norm`, `.embed_tokens`)."""
        raise NotImplementedError

    @property
    def layers(self) -> nn.ModuleList:
        return self.text_model.layers

    def cam_site(self, layer: nn.Module) -> nn.Module:
        """The module whose output is the CAM site: the post-attention norm (the MLP input)."""
        return layer.post_attention_layernorm

    @property
    def text_config(self) -> Any:
        return self.model.config.get_text_config()

    @property
    def num_layers(self) -> int:
        return int(self.text_config.num_hidden_layers)

    @property
    def num_heads(self) -> int:
        return int(self.text_config.num_attention_heads)

    @property
    def image_token_id(self) -> int:
        return int(self.model.config.image_token_id)

    @property
    def eos_token_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.processor.tokenizer.eos_token_id
        return set(eos if isinstance(eos, list) else [eos]) - {None}

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.get_output_embeddings()(hidden)

    # --- inputs ----------------------------------------------------------------------------
    def build_prompt(self, question: str) -> str:
        conversation = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
        ]
        return self.processor.apply_chat_template(conversation, add_generation_prompt=True)

    def build_inputs(self, image: Image.Image, question: str) -> tuple[str, dict[str, torch.Tensor]]:
        prompt = self.build_prompt(question)
        inputs = self.processor(images=image, text=prompt, return_tensors="pt")
        return prompt, dict(inputs)

    def visible_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The region of the original image the patch grid covers, as (left, top, right, bottom).

        CLIP-style processors resize the shortest edge and center-crop (LLaVA-1.5 on the hub
        does), so a wide photo's sides never reach the model; the CAM must be drawn over the
        crop, not the whole photo.
        """
        ip = getattr(self.processor, "image_processor", None)
        if ip is None or not getattr(ip, "do_center_crop", False):
            return 0, 0, width, height
        def field(obj: Any, name: str) -> Any:  # transformers 5 uses SizeDict, older configs dicts
            return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)

        size, crop = getattr(ip, "size", None), getattr(ip, "crop_size", None)
        short = field(size, "shortest_edge")
        ch, cw = field(crop, "height"), field(crop, "width")
        if not (short and ch and cw):
            return 0, 0, width, height
        scale = short / min(width, height)
        w, h = min(width, round(cw / scale)), min(height, round(ch / scale))
        left, top = (width - w) // 2, (height - h) // 2
        return left, top, left + w, top + h

    def image_spans(self, input_ids: np.ndarray) -> list[tuple[int, int]]:
        """Runs of image-token positions, as half-open ranges."""
        is_img = input_ids == self.image_token_id
        if not is_img.any():
            raise InputError("the processor put no image tokens in the prompt")
        edges = np.flatnonzero(np.diff(np.concatenate([[0], is_img.astype(np.int8), [0]])))
        return [(int(s), int(e)) for s, e in zip(edges[::2], edges[1::2], strict=True)]

    def image_grid(self, num_image_tokens: int) -> tuple[int, int]:
        raise NotImplementedError


class LlavaAdapter(FamilyAdapter):
    """LLaVA-1.5 and any vision tower + language model `LlavaForConditionalGeneration` combines."""

    family = "llava"
    model_types = ("llava",)

    @property
    def text_model(self) -> nn.Module:
        return self.model.model.language_model

    def image_grid(self, num_image_tokens: int) -> tuple[int, int]:
        vc = self.model.config.vision_config
        side = int(vc.image_size) // int(vc.patch_size)
        if side * side != num_image_tokens:
            # e.g. a "full" feature strategy that keeps the CLS token: fall back to a square grid.
            root = int(round(num_image_tokens**0.5))
            if root * root != num_image_tokens:
                raise InputError(
                    f"cannot lay {num_image_tokens} image tokens on a grid (vision tower "
                    f"{vc.image_size}px / patch {vc.patch_size})"
                )
            side = root
        return side, side


ADAPTERS: tuple[type[FamilyAdapter], ...] = (LlavaAdapter,)


def supported_families() -> str:
    return ", ".join(f"{a.family} ({'/'.join(a.model_types)})" for a in ADAPTERS)


def adapter_for(model: nn.Module, processor: Any) -> FamilyAdapter:
    model_type = getattr(model.config, "model_type", "?")
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            return cls(model, processor)
    raise ModelLoadError(
        f"model type {model_type!r} is not supported yet; supported: {supported_families()}"
    )
