"""What the engine needs to know about one model family, and the shared defaults.

A family module subclasses `FamilyAdapter`, names its transformers `model_types`, and overrides
only what differs: usually `layout` (each feature token's region of the original image) and
the marker tokens around its image block. Everything is read from the config and the
processor output, never typed-in offsets (the paper's scripts hard-code 34/35/36 and 576).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np
import torch
from PIL import Image
from torch import nn

from flowtui.engine import compat
from flowtui.engine.analysis import grid_regions
from flowtui.engine.errors import InputError, ModelLoadError

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass
class Layout:
    """Where each feature token's pixels came from, one row per feature token in sequence order.

    regions: float32 [N, 4] (x0, y0, x1, y1) in pixels of the original image, NaN where a
    token has none (e.g. LLaVA-NeXT's row newlines). token_views: int16 [N] into `views`.
    grid: (rows, cols) when all tokens form one raster grid over one view.
    """

    regions: np.ndarray
    views: list[str]
    token_views: np.ndarray
    grid: tuple[int, int] | None = None

    @classmethod
    def single_grid(
        cls, rows: int, cols: int, box: tuple[float, float, float, float], view: str = "image"
    ) -> Layout:
        regions = grid_regions(rows, cols, box)
        return cls(regions, [view], np.zeros(rows * cols, dtype=np.int16), (rows, cols))

    @classmethod
    def through(
        cls, aff: Affine, rows: int, cols: int, box: tuple[float, float, float, float],
        width: int, height: int, view: str = "image",
    ) -> Layout:
        """One rows x cols grid over `box` of the processed image, laid on the original one."""
        regions = regions_through(aff, rows, cols, box, width, height)
        return cls(regions, [view], np.zeros(rows * cols, dtype=np.int16), (rows, cols))

    @classmethod
    def concat(cls, parts: list[tuple[str, np.ndarray]]) -> Layout:
        """Join per-view region blocks, in sequence order; a view name may recur."""
        views: list[str] = []
        regions, idx = [], []
        for name, reg in parts:
            if name not in views:
                views.append(name)
            regions.append(np.asarray(reg, dtype=np.float32).reshape(-1, 4))
            idx.append(np.full(len(regions[-1]), views.index(name), dtype=np.int16))
        return cls(np.concatenate(regions), views, np.concatenate(idx))

    def __len__(self) -> int:
        return int(self.regions.shape[0])


def field(obj: Any, name: str, default: Any = None) -> Any:
    """Read `name` from a config object, a SizeDict or a plain dict (processors mix them)."""
    if obj is None:
        return default
    if isinstance(obj, dict):
        value = obj.get(name, default)
    else:
        value = getattr(obj, name, default)
    return default if value is None else value


@dataclass(frozen=True)
class Affine:
    """The geometric part of a processor pipeline: processed = original * s + t, per axis.

    Build it in the order the processor works (pad, resize, crop), then `invert` boxes of the
    processed image back to the original one.
    """

    sx: float = 1.0
    sy: float = 1.0
    tx: float = 0.0
    ty: float = 0.0

    def pad(self, left: float, top: float) -> Affine:
        return Affine(self.sx, self.sy, self.tx + left, self.ty + top)

    def crop(self, left: float, top: float) -> Affine:
        return self.pad(-left, -top)

    def scale(self, fx: float, fy: float) -> Affine:
        return Affine(self.sx * fx, self.sy * fy, self.tx * fx, self.ty * fy)

    def resize(self, old: tuple[int, int], new: tuple[int, int]) -> Affine:
        """A resize from (width, height) `old` to `new`."""
        return self.scale(new[0] / old[0], new[1] / old[1])

    def invert(self, boxes: np.ndarray) -> np.ndarray:
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        out = np.empty_like(b)
        out[:, 0::2] = (b[:, 0::2] - self.tx) / self.sx
        out[:, 1::2] = (b[:, 1::2] - self.ty) / self.sy
        return out


def clip_regions(regions: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip regions to the image; a region with no pixel left (all padding) becomes NaN."""
    r = np.asarray(regions, dtype=np.float64).copy()
    r[:, 0::2] = np.clip(r[:, 0::2], 0, width)
    r[:, 1::2] = np.clip(r[:, 1::2], 0, height)
    empty = (r[:, 2] - r[:, 0] <= 1e-6) | (r[:, 3] - r[:, 1] <= 1e-6)
    r[empty] = np.nan
    return r.astype(np.float32)


def regions_through(aff: Affine, rows: int, cols: int, box: tuple[float, float, float, float],
                    width: int, height: int) -> np.ndarray:
    """A rows x cols grid over `box` of the processed image, as (clipped) regions of the
    original image, through the inverse of the processor's geometry `aff`."""
    return clip_regions(aff.invert(grid_regions(rows, cols, box)), width, height)


def stretch_box(width: int, height: int) -> tuple[float, float, float, float]:
    """The whole image: processors that resize to a fixed size (no crop, no pad) see all of it."""
    return 0.0, 0.0, float(width), float(height)


class FamilyAdapter:
    """One model family: structure, inputs, image blocks, feature tokens and their regions."""

    family: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()
    # Example hub ids, for help texts and the README's support table.
    examples: ClassVar[tuple[str, ...]] = ()
    # Tokens that open / close an image block, and tokens inside it between runs of features
    # (row breaks, tile tags). They belong to the image group, not the user's text. Not class
    # constants: a family may read them from its processor (InternVL, Aya Vision).
    open_markers: tuple[str, ...] = ()
    close_markers: tuple[str, ...] = ()
    inner_markers: tuple[str, ...] = ()
    # Per-token processor outputs extended over the answer in teacher-forced passes: the value
    # answer tokens get (text is 0; PaliGemma marks the answer 1).
    answer_token_type: ClassVar[dict[str, int]] = {}
    # Reduced reruns (engine._kept_positions): from layer K on no query reads a masked
    # position, so layers K..L-1 may run on the kept positions alone, each with its own
    # position ids and a causal mask among them. Exact only where the text model's mask is plain
    # causal over the positions it is given and every per-position input is cut with them (see
    # `reduced_text_kwargs`); a family that has not established that keeps the full pass.
    reduced_rerun: ClassVar[bool] = False
    # Captured text-model kwargs that run over positions, with the axis their positions are on
    # (M-RoPE's position_ids are [3 or 4, B, N]: the last axis). Anything captured that is
    # neither here nor in `constant_text_kwargs` makes the rerun refuse to reduce.
    per_position_kwargs: ClassVar[dict[str, int]] = {
        "inputs_embeds": 1, "attention_mask": -1, "position_ids": -1,
    }
    # Captured kwargs that hold nothing per position: passed on as captured.
    constant_text_kwargs: ClassVar[frozenset[str]] = frozenset(
        {"use_cache", "return_dict", "logits_to_keep", "output_router_logits"}
    )

    def __init__(self, model: PreTrainedModel, processor: Any) -> None:
        self.model = model
        self.processor = processor

    # --- structure -----------------------------------------------------------------------
    @property
    def text_model(self) -> nn.Module:
        """The decoder stack (a `*Model` with `.layers`, `.norm` and `.embed_tokens`)."""
        stack = compat.decoder_stack(self.model)
        if stack is not None:
            return stack
        raise ModelLoadError(f"{type(self.model).__name__}: cannot find the language model")

    @property
    def layers(self) -> nn.ModuleList:
        return cast(nn.ModuleList, self.text_model.layers)  # nn.Module's __getattr__ is untyped

    def cam_site_name(self, layer: nn.Module) -> str:
        """The norm whose output is the MLP input: the paper's LLaVA-CAM site.

        Gemma 2/3 blocks normalise the attention output with `post_attention_layernorm` and
        feed the MLP from `pre_feedforward_layernorm`; parallel blocks (Cohere 2) feed attention
        and MLP from the one `input_layernorm`; Llama/Qwen-style blocks use the post-attention
        norm.
        """
        if hasattr(layer, "pre_feedforward_layernorm"):
            return "pre_feedforward_layernorm"
        if not hasattr(layer, "post_attention_layernorm"):
            return "input_layernorm"
        return "post_attention_layernorm"

    def cam_site(self, layer: nn.Module) -> nn.Module:
        return getattr(layer, self.cam_site_name(layer))

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
        """The feature placeholder token (`<image>`, `<|image_pad|>`, `<IMG_CONTEXT>`, ...)."""
        config = self.model.config
        for name in ("image_token_id", "image_token_index"):
            value = getattr(config, name, None)
            if value is not None:
                return int(value)
        token = getattr(self.processor, "image_token", None)
        if token is not None:
            return int(self.tokenizer.convert_tokens_to_ids(token))
        raise ModelLoadError(f"{type(self.model).__name__}: cannot find the image token id")

    @property
    def suppressed_token_ids(self) -> list[int]:
        """Input-only placeholders: generating one would corrupt a later teacher-forced pass."""
        ids = {self.image_token_id}
        for name in ("video_token_id", "video_token_index"):
            value = getattr(self.model.config, name, None)
            if value is not None:
                ids.add(int(value))
        return sorted(ids)

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def eos_token_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return set(eos if isinstance(eos, list) else [eos]) - {None}

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head on final-norm hidden states, exactly as the model's own forward does:
        with Cohere's `logit_scale` and Gemma's final soft-cap where that forward applies them
        (which changed across transformers releases: see compat)."""
        logits = self.model.get_output_embeddings()(hidden)
        if compat.head_applies_logit_scale(self.model):
            logits = logits * float(self.text_config.logit_scale)
        cap = getattr(self.text_config, "final_logit_softcapping", None)
        if cap is not None and compat.head_applies_final_softcap(self.model):
            logits = torch.tanh(logits / cap) * cap
        return logits

    def reduced_text_kwargs(
        self, kwargs: dict[str, Any], keep: torch.Tensor
    ) -> dict[str, Any] | None:
        """The text model's captured kwargs cut to the kept positions `keep` (sorted absolute
        positions), or None where some input cannot be cut: the rerun then runs the full pass.

        A 2D attention mask is cut with the positions; a prepared mask (a dict or 4D tensor,
        as Gemma's bidirectional image blocks come) is refused. Missing position ids become
        the positions themselves, as the text model would number the full sequence; an explicit
        mask also stops transformers from reading their jumps as packed sequences.
        """
        given = {k: v for k, v in kwargs.items() if v is not None and k not in compat.CACHE_NAMES}
        embeds = given.get("inputs_embeds")
        if not isinstance(embeds, torch.Tensor) or embeds.dim() != 3 or embeds.shape[0] != 1:
            return None
        dev, N = embeds.device, embeds.shape[1]
        given.setdefault("position_ids", torch.arange(N, device=dev)[None])
        given.setdefault("attention_mask", torch.ones(1, N, dtype=torch.long, device=dev))
        mask = given["attention_mask"]
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
            return None
        out: dict[str, Any] = {}
        for name, value in given.items():
            if name in self.constant_text_kwargs:
                out[name] = value
                continue
            axis = self.per_position_kwargs.get(name)
            if axis is None or not isinstance(value, torch.Tensor) or value.shape[axis] != N:
                return None
            out[name] = value.index_select(axis, keep.to(value.device))
        return out

    # --- inputs ----------------------------------------------------------------------------
    def build_prompt(self, question: str) -> str:
        conversation = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
        ]
        return self.processor.apply_chat_template(conversation, add_generation_prompt=True)

    def processor_inputs(self, image: Image.Image, prompt: str) -> dict[str, torch.Tensor]:
        return dict(self.processor(images=[image], text=prompt, return_tensors="pt"))

    def build_inputs(self, image: Image.Image, question: str) -> tuple[str, dict[str, torch.Tensor]]:
        prompt = self.build_prompt(question)
        return prompt, self.processor_inputs(image, prompt)

    def teacher_forced(
        self, inputs: dict[str, torch.Tensor], answer_ids: list[int]
    ) -> dict[str, torch.Tensor]:
        """Model inputs for the sequence prompt + answer, from the prompt's processor output.

        Every per-token input (token_type_ids, mm_token_type_ids, ...) is extended over the
        answer: forgetting one silently changes Gemma 3's image mask or Qwen's M-RoPE.
        """
        ids = inputs["input_ids"]
        P = ids.shape[1]
        answer = torch.tensor([answer_ids], dtype=ids.dtype, device=ids.device)
        out = {}
        for key, value in inputs.items():
            if key == "input_ids":
                value = torch.cat([ids, answer], dim=1)
            elif key == "attention_mask":
                value = torch.ones(1, P + len(answer_ids), dtype=value.dtype, device=value.device)
            elif (
                isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape == (1, P)
                and not value.is_floating_point()
            ):
                fill = self.answer_token_type.get(key, 0)
                value = torch.cat([value, torch.full_like(answer, fill, dtype=value.dtype)], 1)
            out[key] = value
        return out

    # --- the image block and feature tokens ------------------------------------------------
    def _ids_of(self, tokens: tuple[str, ...]) -> set[int]:
        ids = set()
        unk = self.tokenizer.unk_token_id
        for t in tokens:
            i = self.tokenizer.convert_tokens_to_ids(t)
            if i is not None and i != unk:
                ids.add(int(i))
        return ids

    def feature_positions(self, input_ids: np.ndarray) -> np.ndarray:
        positions = np.flatnonzero(np.asarray(input_ids) == self.image_token_id)
        if positions.size == 0:
            raise InputError("the processor put no image tokens in the prompt")
        return positions

    def image_spans(self, input_ids: np.ndarray) -> list[tuple[int, int]]:
        """The image block(s) as half-open ranges: feature runs joined through inner markers
        and widened over the open/close markers next to them (the `image` group of docs/definitions.md)."""
        ids = np.asarray(input_ids)
        feats = self.feature_positions(ids)
        inner = self._ids_of(self.inner_markers)
        opens, closes = self._ids_of(self.open_markers), self._ids_of(self.close_markers)
        is_img = np.zeros(len(ids), dtype=bool)
        is_img[feats] = True
        edges = np.flatnonzero(np.diff(np.concatenate([[0], is_img.astype(np.int8), [0]])))
        runs = [[int(s), int(e)] for s, e in zip(edges[::2], edges[1::2], strict=True)]
        merged: list[list[int]] = [runs[0]]
        for s, e in runs[1:]:
            gap = ids[merged[-1][1]:s]
            if all(int(t) in inner for t in gap):
                merged[-1][1] = e
            else:
                merged.append([s, e])
        spans = []
        for s, e in merged:
            while s > 0 and int(ids[s - 1]) in opens | inner:
                s -= 1
            while e < len(ids) and int(ids[e]) in closes | inner:
                e += 1
            spans.append((s, e))
        return spans

    def layout(self, image_size: tuple[int, int], inputs: dict[str, torch.Tensor]) -> Layout:
        """Each feature token's region of the original image (width, height) and its view."""
        raise NotImplementedError


class GridFamily(FamilyAdapter):
    """A family whose features are one raster grid over a fixed-size square input (SigLIP/CLIP
    towers that resize the whole image): `grid_side` tokens per side, stretched over the image."""

    def grid_side(self, num_features: int) -> int:
        side = int(round(num_features**0.5))
        if side * side != num_features:
            raise InputError(f"cannot lay {num_features} image tokens on a square grid")
        return side

    def layout(self, image_size: tuple[int, int], inputs: dict[str, torch.Tensor]) -> Layout:
        n = int((inputs["input_ids"][0] == self.image_token_id).sum())
        side = self.grid_side(n)
        return Layout.single_grid(side, side, stretch_box(*image_size))
