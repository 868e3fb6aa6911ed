"""The attention function flowtui registers with transformers' AttentionInterface.

The layer output always comes from the fast SDPA kernel (or the eager formula where the family
soft-caps attention logits, which SDPA cannot). Around it, two optional jobs read a per-thread
control set by the engine:

- share capture: recompute softmax(QK^T) for the answer-query rows only ([H, T, N], not the full
  [H, N, N]) and reduce it to per-group sums, so shares cost a sliver of a forward;
- truncation: for layers >= K, mask the image key positions for every query (-inf before softmax),
  in the prefill and in every cached decoding step.

Key columns are not always absolute positions: in cached decoding a sliding-window layer gets
only the last window of keys. So positions are counted back from the last query's absolute
position (`query_end`), which the engine sets while decoding.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from flowtui.engine.compat import (
    ALL_MASK_ATTENTION_FUNCTIONS,
    AttentionInterface,
    repeat_kv,
    sdpa_attention_forward,
    sdpa_mask,
)

NAME = "flowtui"


@dataclass
class ShareCapture:
    """Collects per-layer head shares for the answer queries of one teacher-forced forward."""

    query_start: int  # first answer query position (the last prompt position)
    query_end: int  # one past the last answer query
    group_onehot: torch.Tensor  # [N, G] float32: which group each key position belongs to
    feature_positions: torch.Tensor  # [N_feat] long
    head_shares: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [H, G]
    # layer -> [N_feat]: head-mean attention of the last prompt position (FastV's ranking)
    rank_attention: dict[int, torch.Tensor] = field(default_factory=dict)
    # layer -> [N_feat]: attention of the answer, mean over heads and answer queries
    answer_attention: dict[int, torch.Tensor] = field(default_factory=dict)
    # Per answer token (docs/definitions.md, "Per-token quantities"): layer -> [H, T, G], the
    # head shares before the mean over answer queries, and layer -> [T, N_feat], the head-mean
    # attention of each answer query on each feature token.
    token_head_shares: dict[int, torch.Tensor] = field(default_factory=dict)
    token_attention: dict[int, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def for_groups(
        cls,
        groups: dict[str, list[tuple[int, int]]],
        order: tuple[str, ...],
        answer_len: int,
        feature_positions,
    ) -> ShareCapture:
        """A capture for the answer queries of `prompt + answer`, with groups as position spans."""
        end = max(e for spans in groups.values() for _, e in spans)
        onehot = torch.zeros(end, len(order))
        for gi, g in enumerate(order):
            for s, e in groups[g]:
                onehot[s:e, gi] = 1.0
        feats = torch.as_tensor(feature_positions, dtype=torch.long)
        prompt_len = end - answer_len
        return cls(prompt_len - 1, prompt_len - 1 + answer_len, onehot, feats)


@dataclass
class Truncation:
    """Image keys hidden from layer `layer` onward. `masked` are absolute key positions."""

    layer: int
    masked: torch.Tensor  # [M] long: image positions to hide
    _hidden: dict = field(default_factory=dict, repr=False)

    def applies(self, layer: int) -> bool:
        """Whether layer `layer` is masked (a knockout.Knockout answers for its own layers)."""
        return layer >= self.layer

    def _hidden_keys(self, k_start: int, kv_len: int, device: torch.device) -> torch.Tensor:
        key = (k_start, kv_len, device)
        if key not in self._hidden:
            m = self.masked.to(device) - k_start
            hidden = torch.zeros(kv_len, dtype=torch.bool, device=device)
            hidden[m[(m >= 0) & (m < kv_len)]] = True
            self._hidden[key] = hidden
        return self._hidden[key]

    def allowed(
        self, q_len: int, kv_len: int, q_end: int, given: torch.Tensor | None, device: torch.device
    ) -> torch.Tensor:
        """Boolean [q_len, kv_len]: what the model allows (`given`, or causal), minus the
        masked image keys. Queries are absolute positions [q_end - q_len, q_end), keys
        [q_end - kv_len, q_end).

        A masked image query keeps its own key so its row never becomes all -inf: a NaN there
        would leak into later layers through 0 * NaN. No other position can see it, so the
        answer is unaffected.
        """
        q_pos = torch.arange(q_end - q_len, q_end, device=device)
        k_pos = torch.arange(q_end - kv_len, q_end, device=device)
        base = given if given is not None else k_pos[None, :] <= q_pos[:, None]
        hidden = self._hidden_keys(q_end - kv_len, kv_len, device)
        self_key = k_pos[None, :] == q_pos[:, None]
        return base & (~hidden[None, :] | self_key)


class _Control(threading.local):
    capture: ShareCapture | None = None
    # A Truncation, or anything with its applies()/allowed() (knockout.Knockout).
    truncation: Truncation | None = None
    kv: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None
    query_end: int | None = None  # absolute position of the last query + 1, while decoding


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


@contextmanager
def decoding_at(query_end: int) -> Iterator[None]:
    """The queries of the next forward end at absolute position `query_end` (exclusive)."""
    _control.query_end = query_end
    try:
        yield
    finally:
        _control.query_end = None


def _as_bool_mask(mask: torch.Tensor | None, q_len: int, kv_len: int) -> torch.Tensor | None:
    """A [q, kv] boolean view of whatever mask transformers passed (None means causal)."""
    if mask is None:
        return None
    m = mask[0, 0] if mask.dim() == 4 else mask
    if m.dtype != torch.bool:
        m = m > torch.finfo(m.dtype).min / 2
    return m[-q_len:, -kv_len:]


def _scores(module, query, key, scaling: float, softcap: float | None) -> torch.Tensor:
    groups = getattr(module, "num_key_value_groups", 1)
    k = repeat_kv(key, groups) if groups > 1 else key
    scores = torch.matmul(query, k.transpose(-1, -2)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    return scores


def _eager_attention(module, query, key, value, allowed, scaling, softcap) -> torch.Tensor:
    """The eager formula, for families that soft-cap attention logits (Gemma 2)."""
    q_len, kv_len = query.shape[2], key.shape[2]
    scores = _scores(module, query, key, scaling, softcap)
    if allowed is None:
        allowed = torch.ones(kv_len, kv_len, dtype=torch.bool, device=query.device).tril()
        allowed = allowed[-q_len:]
    mask = allowed[None, None] if allowed.dim() == 2 else allowed[:, None]
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).to(query.dtype)
    groups = getattr(module, "num_key_value_groups", 1)
    v = repeat_kv(value, groups) if groups > 1 else value
    return torch.matmul(probs, v).transpose(1, 2).contiguous()


def _record_shares(
    cap: ShareCapture,
    layer: int,
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    allowed: torch.Tensor | None,
    scaling: float,
    softcap: float | None,
) -> None:
    q_len, kv_len = query.shape[2], key.shape[2]
    if q_len != kv_len:  # shares come from the teacher-forced pass, never a cached step
        return
    qs, qe = cap.query_start, cap.query_end
    if qs < 0 or qe > q_len:
        return
    with torch.no_grad():
        q = query[:, :, qs:qe].detach().float()  # [1, H, T, d]
        scores = _scores(module, q, key.detach().float(), scaling, softcap)[0]  # [H, T, N]
        q_pos = torch.arange(qs, qe, device=scores.device)
        ok = torch.arange(kv_len, device=scores.device)[None, :] <= q_pos[:, None]
        if allowed is not None:
            ok = allowed[qs:qe]
        scores = scores.masked_fill(~ok[None], float("-inf"))
        probs = torch.softmax(scores, dim=-1)  # [H, T, N]
        per_group = torch.matmul(probs, cap.group_onehot.to(probs.device))  # [H, T, G]
        cap.head_shares[layer] = per_group.mean(dim=1).cpu()
        cap.token_head_shares[layer] = per_group.cpu()
        feats = probs[:, :, cap.feature_positions.to(probs.device)]  # [H, T, N_feat]
        cap.rank_attention[layer] = feats[:, 0].mean(dim=0).cpu()
        cap.token_attention[layer] = feats.mean(dim=0).cpu()  # [T, N_feat]
        cap.answer_attention[layer] = feats.mean(dim=(0, 1)).cpu()


def flowtui_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    softcap: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    layer = getattr(module, "layer_idx", None)
    trunc, cap = _control.truncation, _control.capture
    if _control.kv is not None and layer is not None:
        _control.kv[layer] = (key.detach(), value.detach())
    q_len, kv_len = query.shape[2], key.shape[2]
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    given = _as_bool_mask(attention_mask, q_len, kv_len)
    allowed = given
    if trunc is not None and layer is not None and trunc.applies(layer):
        q_end = _control.query_end if _control.query_end is not None else kv_len
        allowed = trunc.allowed(q_len, kv_len, q_end, given, query.device)
        # [q, kv], or [B, q, kv] from a knockout that runs one flow per batch row.
        attention_mask = allowed[None, None] if allowed.dim() == 2 else allowed[:, None]
        is_causal = False
    if softcap is not None:
        out = _eager_attention(module, query, key, value, allowed, scaling, softcap)
    else:
        out, _ = sdpa_attention_forward(
            module, query, key, value, attention_mask,
            dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs,
        )
    if cap is not None and layer is not None:
        _record_shares(cap, layer, module, query, key, allowed, scaling, softcap)
    return out, None


def register() -> None:
    """Make `attn_implementation="flowtui"` available (idempotent).

    The mask function must be registered under the same name: without it transformers hands
    the attention function `attention_mask=None` in every layer, which silently drops sliding
    windows and bidirectional image blocks (Gemma 3).
    """
    AttentionInterface.register(NAME, flowtui_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
