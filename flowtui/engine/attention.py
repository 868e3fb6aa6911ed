"""The attention function flowtui registers with transformers' AttentionInterface.

The layer output always comes from the fast SDPA kernel. Around it, two optional jobs read a
per-thread control set by the engine:

- share capture: recompute softmax(QK^T) for the answer-query rows only ([H, T, N], not the full
  [H, N, N]) and reduce it to per-group sums, so shares cost a sliver of a forward;
- truncation: for layers >= K, mask the image key positions for every query (-inf before softmax),
  in the prefill and in every cached decoding step.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

NAME = "flowtui"


@dataclass
class ShareCapture:
    """Collects per-layer head shares for the answer queries of one teacher-forced forward."""

    query_start: int  # first answer query position (the last prompt position)
    query_end: int  # one past the last answer query
    group_onehot: torch.Tensor  # [N, G] float32: which group each key position belongs to
    image_positions: torch.Tensor  # [N_img] long
    head_shares: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [H, G]
    image_attention: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [N_img]

    @classmethod
    def for_groups(
        cls, groups: dict[str, list[tuple[int, int]]], order: tuple[str, ...], answer_len: int
    ) -> ShareCapture:
        """A capture for the answer queries of `prompt + answer`, with groups as position spans."""
        end = max(e for spans in groups.values() for _, e in spans)
        onehot = torch.zeros(end, len(order))
        for gi, g in enumerate(order):
            for s, e in groups[g]:
                onehot[s:e, gi] = 1.0
        image = torch.cat([torch.arange(s, e) for s, e in groups["image"]])
        prompt_len = end - answer_len
        return cls(prompt_len - 1, prompt_len - 1 + answer_len, onehot, image)


@dataclass
class Truncation:
    """Image keys hidden from layer `layer` onward. `masked` are absolute key positions."""

    layer: int
    masked: torch.Tensor  # [M] long: image positions to hide
    _cache: dict = field(default_factory=dict, repr=False)

    def allowed(self, q_len: int, kv_len: int, device: torch.device) -> torch.Tensor:
        """Boolean [q_len, kv_len]: causal, minus the masked image keys.

        A masked image query keeps its own key so its row never becomes all -inf: a NaN there
        would leak into later layers through 0 * NaN. No other position can see it, so the
        answer is unaffected.
        """
        key = (q_len, kv_len, device)
        if key not in self._cache:
            q_pos = torch.arange(kv_len - q_len, kv_len, device=device)
            k_pos = torch.arange(kv_len, device=device)
            causal = k_pos[None, :] <= q_pos[:, None]
            hidden = torch.zeros(kv_len, dtype=torch.bool, device=device)
            m = self.masked.to(device)
            hidden[m[m < kv_len]] = True
            self_key = k_pos[None, :] == q_pos[:, None]
            self._cache[key] = causal & (~hidden[None, :] | self_key)
        return self._cache[key]


class _Control(threading.local):
    capture: ShareCapture | None = None
    truncation: Truncation | None = None
    kv: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None


_control = _Control()


@contextmanager
def capturing(capture: ShareCapture) -> Iterator[ShareCapture]:
    _control.capture = capture
    try:
        yield capture
    finally:
        _control.capture = None


@contextmanager
def recording_kv() -> Iterator[dict[int, tuple[torch.Tensor, torch.Tensor]]]:
    """Keep each layer's keys and values (post-RoPE, before GQA repeat), keyed by layer index.

    They seed a KV cache later, so a rerun can continue decoding without a new prefill.
    """
    _control.kv = {}
    try:
        yield _control.kv
    finally:
        _control.kv = None


@contextmanager
def truncated(truncation: Truncation | None) -> Iterator[None]:
    _control.truncation = truncation
    try:
        yield
    finally:
        _control.truncation = None


def _as_bool_mask(mask: torch.Tensor | None, q_len: int, kv_len: int) -> torch.Tensor | None:
    """A [q, kv] boolean view of whatever mask transformers passed (None means causal)."""
    if mask is None:
        return None
    m = mask[0, 0] if mask.dim() == 4 else mask
    if m.dtype != torch.bool:
        m = m > torch.finfo(m.dtype).min / 2
    return m[-q_len:, -kv_len:]


def _record_shares(
    cap: ShareCapture,
    layer: int,
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    allowed: torch.Tensor | None,
    scaling: float,
) -> None:
    q_len, kv_len = query.shape[2], key.shape[2]
    # Answer queries are absolute positions; this forward covers kv positions [kv_len - q_len, kv_len).
    offset = kv_len - q_len
    qs, qe = cap.query_start - offset, cap.query_end - offset
    if qs < 0 or qe > q_len:
        return
    with torch.no_grad():
        q = query[0, :, qs:qe].float()  # [H, T, d]
        k = key.detach()
        groups = getattr(module, "num_key_value_groups", 1)
        if groups > 1:
            k = repeat_kv(k, groups)
        k = k[0].float()  # [H, N, d]
        scores = torch.matmul(q.detach(), k.transpose(-1, -2)) * scaling  # [H, T, N]
        q_pos = torch.arange(cap.query_start, cap.query_end, device=scores.device)
        ok = torch.arange(kv_len, device=scores.device)[None, :] <= q_pos[:, None]
        if allowed is not None:
            ok = ok & allowed[qs:qe]
        scores = scores.masked_fill(~ok[None], float("-inf"))
        probs = torch.softmax(scores, dim=-1)  # [H, T, N]
        per_group = torch.matmul(probs, cap.group_onehot.to(probs.device))  # [H, T, G]
        cap.head_shares[layer] = per_group.mean(dim=1).cpu()
        img = cap.image_positions.to(probs.device)
        cap.image_attention[layer] = probs[:, 0, img].mean(dim=0).cpu()


def flowtui_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    layer = getattr(module, "layer_idx", None)
    trunc, cap = _control.truncation, _control.capture
    if _control.kv is not None and layer is not None:
        _control.kv[layer] = (key.detach(), value.detach())
    q_len, kv_len = query.shape[2], key.shape[2]
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    allowed = None
    if trunc is not None and layer is not None and layer >= trunc.layer:
        allowed = trunc.allowed(q_len, kv_len, query.device)
        given = _as_bool_mask(attention_mask, q_len, kv_len)
        if given is not None:
            allowed = allowed & given
        attention_mask = allowed[None, None]
        is_causal = False
    out, _ = sdpa_attention_forward(
        module, query, key, value, attention_mask,
        dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs,
    )
    if cap is not None and layer is not None:
        if allowed is None:
            allowed = _as_bool_mask(attention_mask, q_len, kv_len)
        _record_shares(cap, layer, module, query, key, allowed, scaling)
    return out, None


def register() -> None:
    """Make `attn_implementation="flowtui"` available (idempotent)."""
    AttentionInterface.register(NAME, flowtui_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
