"""Reruns: truncation from K (docs/definitions.md, "Truncation"), the sweep over K, and
flowtui's own cached decoding.

Layers below K see exactly what the baseline saw, so their output is reused: only layers
K..L-1 run, from the stored input of layer K, and where exact only on the positions that still
matter above K (the reduced rerun). Greedy decoding agrees with the teacher-forced baseline up
to the first token where the argmax differs; only from there on does it decode, with a cache.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from flowtui.engine import attention, compat
from flowtui.engine.analysis import (
    Analysis,
    Progress,
    ProgressFn,
    Sweep,
    TruncationRun,
    cliff_layer,
    no_progress,
)
from flowtui.engine.errors import Cancelled, FlowtuiError, InputError
from flowtui.engine.interface import CancelFn, TokenFn
from flowtui.engine.recording import State

if TYPE_CHECKING:
    from flowtui.engine.families import FamilyAdapter

STRATEGIES = ("all", "top", "random")

# Per layer: its keys and values over the whole sequence (recording.py).
_KV = dict[int, tuple[torch.Tensor, torch.Tensor]]



class _Skip(nn.Module):
    """Stands in for a decoder layer below K during a rerun: its output is already known."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        for name in ("attention_type", "layer_type", "is_sliding", "sliding_window", "layer_idx"):
            if hasattr(layer, name):
                setattr(self, name, getattr(layer, name))

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states


def _without_cache(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A captured call's kwargs with no cache under any name: a rerun is a fresh pass, and
    handing a decoder both names makes transformers 5.24+ warn."""
    return {k: v for k, v in kwargs.items() if k not in compat.CACHE_NAMES}


class Reruns:
    """Truncation, sweeps and cached decoding, for LocalEngine (mixed in)."""

    # What LocalEngine (and Recording) provide (declared for the type checker only).
    adapter: FamilyAdapter
    device: torch.device
    _lock: threading.RLock
    if TYPE_CHECKING:
        def _decode(self, ids: list[int]) -> str: ...
        def _split_eos(self, ids: list[int]) -> tuple[list[int], bool]: ...
        def _state(self, a: Analysis, report: ProgressFn) -> State: ...

    def _truncation(
        self, a: Analysis, st: State, layer: int, strategy: str, keep: int | None, seed: int
    ) -> attention.Truncation:
        L = self.adapter.num_layers
        if not isinstance(layer, int | np.integer) or not 0 <= layer <= L:
            raise InputError(f"truncation layer must be between 0 and {L}, got {layer!r}")
        if strategy not in STRATEGIES:
            raise InputError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
        img, feats = a.image_positions, np.asarray(a.feature_positions)
        if strategy == "all":
            masked = img
        else:
            if keep is None or not 0 <= int(keep) <= len(feats):
                raise InputError(
                    f"strategy {strategy!r} needs keep=R with 0 <= R <= {len(feats)} image tokens"
                )
            keep = int(keep)
            if strategy == "top":
                # FastV: rank by attention from the last prompt position at the last intact layer.
                ranked = np.argsort(-st.rank_attention[max(layer - 1, 0)], kind="stable")
                kept = feats[ranked[:keep]]
            else:
                kept = feats[np.random.default_rng(seed).choice(len(feats), size=keep, replace=False)]
            # Markers and separators carry no feature of their own: only kept features stay.
            masked = np.setdiff1d(img, kept)
        return attention.Truncation(int(layer), torch.as_tensor(np.sort(masked), dtype=torch.long))

    @contextmanager
    def _from_layer(self, K: int, hidden: torch.Tensor) -> Iterator[None]:
        """Layers below K become pass-throughs and layer K gets the baseline's input: the text
        model's own forward then builds masks, positions and DeepStack additions as usual."""
        layers = self.adapter.layers
        saved = [layers[i] for i in range(K)]

        def inject(_mod, args, kwargs):
            if args:
                return (hidden, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": hidden}

        handle = layers[K].register_forward_pre_hook(inject, with_kwargs=True)
        try:
            for i in range(K):
                layers[i] = _Skip(saved[i])
            yield
        finally:
            for i, layer in enumerate(saved):
                layers[i] = layer
            handle.remove()

    def _logits_from_layer(
        self, st: State, trunc: attention.Truncation, reduced: bool = True
    ) -> tuple[torch.Tensor, Callable[[], _KV]]:
        """Teacher-forced logits (answer queries + last position) with layers >= K truncated,
        and a function giving the keys/values of every layer under that truncation (only
        decoding needs them, only where the answer departs from the baseline).

        Layers below K see exactly what the baseline saw, so their output is reused: only layers
        K..L-1 run, from the stored input of layer K.
        """
        K = trunc.layer
        T1 = st.logits.shape[0]
        keep = self._kept_positions(st, trunc) if reduced else None
        if keep is not None:
            return self._logits_from_layer_kept(st, trunc, keep)
        kwargs = {**_without_cache(st.text_kwargs), "use_cache": False}
        with (
            torch.no_grad(),
            self._from_layer(K, st.hidden[K]),
            attention.truncated(trunc),
            attention.recording_kv() as kv,
        ):
            out = self.adapter.text_model(*st.text_args, **kwargs)
        kv = {i: st.kv[i] if i < K else kv[i] for i in range(self.adapter.num_layers)}
        last = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return self.adapter.logits(last[0, -T1:]).float(), lambda: kv

    def _kept_positions(self, st: State, trunc: attention.Truncation) -> torch.Tensor | None:
        """The positions a rerun from K must compute, or None to run the full sequence.

        From layer K on, no query attends to a masked position, so what those positions compute
        there reaches nothing: layers K..L-1 need only the others, with their own position ids
        (RoPE sees the same relative positions) and a causal mask among them. Under strategy
        `all` that drops every image position: for LLaVA-1.5, 576 of about 600. Only where the
        family declares it exact (FamilyAdapter.reduced_rerun) and can cut every captured input
        to the kept positions (FamilyAdapter.reduced_text_kwargs), and never under a sliding
        window that is shorter than the sequence: its span counts positions.
        """
        if (not self.adapter.reduced_rerun or st.text_args or trunc.masked.numel() == 0
                or self._window_bites(st.hidden[trunc.layer].shape[1])):
            return None
        N = st.hidden[trunc.layer].shape[1]
        kept = torch.ones(N, dtype=torch.bool)
        kept[trunc.masked.cpu()] = False
        if not bool(kept[N - st.logits.shape[0]:].all()):  # the answer queries must stay
            return None
        keep = torch.nonzero(kept).squeeze(1)
        if self.adapter.reduced_text_kwargs(st.text_kwargs, keep) is None:
            return None  # an input the family cannot cut: the full pass
        return keep

    def _window_bites(self, n: int) -> bool:
        """Whether a sliding window could hide a key from a query in a sequence of n positions
        (a window of n or more never does, and then counts nothing)."""
        cfg = self.adapter.text_config
        types = getattr(cfg, "layer_types", None) or ()
        sliding = any("sliding" in str(t) for t in types) or (
            getattr(cfg, "sliding_window", None) is not None
            and getattr(cfg, "use_sliding_window", True) is not False)
        window = getattr(cfg, "sliding_window", None)
        return sliding and (window is None or int(window) < n)

    def _logits_from_layer_kept(
        self, st: State, trunc: attention.Truncation, keep: torch.Tensor
    ) -> tuple[torch.Tensor, Callable[[], _KV]]:
        """_logits_from_layer on the kept positions only (see _kept_positions). The keys and
        values it returns span the full sequence again: the masked positions keep the
        baseline's, which decoding under the same truncation never reads."""
        K = trunc.layer
        T1 = st.logits.shape[0]
        idx = keep.to(st.hidden[K].device)
        kwargs = self.adapter.reduced_text_kwargs(st.text_kwargs, keep)
        if kwargs is None:  # _kept_positions asked the family already
            raise FlowtuiError(f"{self.adapter.family}: cannot cut the text inputs to {len(keep)} "
                               "positions")
        kwargs["use_cache"] = False
        with (
            torch.no_grad(),
            self._from_layer(K, st.hidden[K][:, idx]),
            attention.recording_kv() as kv,
        ):
            out = self.adapter.text_model(**kwargs)

        def full() -> _KV:  # full-length copies, built only if decoding continues
            spans: _KV = {}
            for i in range(self.adapter.num_layers):
                if i < K:
                    spans[i] = st.kv[i]
                    continue
                k, v = (t.clone() for t in st.kv[i])
                k[:, :, idx.to(k.device)] = kv[i][0].to(k.dtype)
                v[:, :, idx.to(v.device)] = kv[i][1].to(v.dtype)
                spans[i] = (k, v)
            return spans

        last = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return self.adapter.logits(last[0, -T1:]).float(), full

    def _masked_argmax(self, logits: torch.Tensor) -> torch.Tensor:
        """Greedy picks as generate() makes them: the input-only placeholders suppressed."""
        banned = torch.tensor(self.adapter.suppressed_token_ids, device=logits.device)
        return logits.index_fill(-1, banned, float("-inf")).argmax(dim=-1)

    def _compare(self, a: Analysis, logits: torch.Tensor) -> tuple[float, int | None, int | None]:
        """(baseline log-prob, first index where greedy departs from the baseline, its token)."""
        b = torch.tensor(a.answer_token_ids, device=logits.device)
        T = len(b)
        logprob = float(torch.log_softmax(logits[:T], dim=-1)[torch.arange(T), b].sum())
        pred = self._masked_argmax(logits)
        diff = torch.nonzero(pred[:T] != b)
        if len(diff):
            j = int(diff[0])
            return logprob, j, int(pred[j])
        if a.ended_with_eos and int(pred[T]) not in self.adapter.eos_token_ids:
            return logprob, T, int(pred[T])
        return logprob, None, None

    def _position_ids(self, st: State, n: int) -> torch.Tensor:
        """Position ids of absolute position n, as the model's own forward would give them.

        They come from the baseline's (so Qwen's M-RoPE offsets after the image carry over) and
        step by one per token past the end of the teacher-forced sequence.
        """
        given = st.text_kwargs.get("position_ids")
        if given is None:
            return torch.tensor([[n]], device=self.device)
        N = given.shape[-1]
        if n < N:
            return given[..., n:n + 1]
        return given[..., N - 1:N] + (n - (N - 1))

    def _cache_before(self, kv: _KV, n: int) -> Any:
        """A KV cache holding every layer's keys/values of positions < n."""
        cache = compat.new_cache(self.adapter.text_config)
        for i in range(self.adapter.num_layers):
            # update() keeps each layer's own kind: a sliding layer trims to its window.
            cache.update(kv[i][0][:, :, :n], kv[i][1][:, :, :n], i)
        return cache

    def _step(self, st: State, cache: Any, tok: int, n: int) -> torch.Tensor:
        """One cached decoding step: token `tok` at absolute position n; logits [1, V]."""
        text = self.adapter.text_model
        with attention.decoding_at(n + 1):
            out = text(
                input_ids=torch.tensor([[tok]], device=self.device),
                position_ids=self._position_ids(st, n),
                use_cache=True,
                **{compat.cache_kwarg(text): cache},
            )
        last = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return self.adapter.logits(last[0, -1:]).float()

    def _cached_step(
        self, st: State, trunc: attention.Truncation | None, kv: _KV, ids: list[int]
    ) -> torch.Tensor:
        """Logits after the answer prefix `ids`, by one cached decoding step (the self-check
        compares it with the recording pass)."""
        n = st.prompt_len + len(ids) - 1
        with torch.no_grad(), attention.truncated(trunc):
            return self._step(st, self._cache_before(kv, n), ids[-1], n)

    def _continue(
        self,
        st: State,
        trunc: attention.Truncation,
        kv: _KV,
        ids: list[int],
        budget: int,
        on_ids=None,
        cancel: CancelFn | None = None,
    ) -> list[int]:
        """Greedy decoding under `trunc` after the answer prefix `ids`, with a KV cache holding
        everything before the last of them (baseline below K, the truncated pass from K on)."""
        n = st.prompt_len + len(ids) - 1
        cache = self._cache_before(kv, n)
        eos = self.adapter.eos_token_ids
        tok, more = ids[-1], []
        with torch.no_grad(), attention.truncated(trunc):
            for _ in range(budget):
                tok = int(self._masked_argmax(self._step(st, cache, tok, n))[0])
                if tok in eos:
                    break
                more.append(tok)
                n += 1
                if on_ids is not None:
                    on_ids(more)
                if cancel is not None and cancel():
                    raise Cancelled("cancelled")
        return more

    def _rerun(
        self,
        a: Analysis,
        st: State,
        trunc: attention.Truncation,
        on_token: TokenFn | None = None,
        cancel: CancelFn | None = None,
    ) -> tuple[list[int], float, bool]:
        """Greedy answer and baseline log-prob under truncation `trunc`.

        Greedy decoding agrees with the teacher-forced baseline up to the first token where the
        argmax differs; only from there on does it need real cached decoding (with the mask).
        """
        b = list(a.answer_token_ids)
        if trunc.layer >= self.adapter.num_layers:
            # K = L is the unmodified model: the baseline itself, by definition.
            T = len(b)
            lp = torch.log_softmax(st.logits[:T], dim=-1)[torch.arange(T), torch.tensor(b)]
            if on_token:
                on_token(self._decode(b))
            return b, float(lp.sum()), True
        logits, kv_of = self._logits_from_layer(st, trunc)
        logprob, j, token = self._compare(a, logits)
        if j is None or token is None:  # both or neither
            if on_token:
                on_token(self._decode(b))
            return b, logprob, True
        ids = b[:j] + [token]
        if on_token:
            on_token(self._decode(ids))
        if token in self.adapter.eos_token_ids:
            return b[:j], logprob, False
        budget = a.max_new_tokens - len(ids)
        if budget > 0:
            def on_ids(new: list[int]) -> None:
                if on_token:
                    on_token(self._decode(ids + new))

            ids = ids + self._continue(st, trunc, kv_of(), ids, budget, on_ids, cancel)
        ids, _ = self._split_eos(ids)
        return ids, logprob, False

    def truncate(
        self,
        analysis: Analysis,
        layer: int,
        strategy: str = "all",
        keep: int | None = None,
        seed: int = 0,
        on_token: TokenFn | None = None,
        progress: ProgressFn | None = None,
        record: bool = True,
    ) -> TruncationRun:
        report = progress or no_progress
        start = time.perf_counter()
        with self._lock:
            st = self._state(analysis, report)
            trunc = self._truncation(analysis, st, layer, strategy, keep, seed)
            report(Progress("truncating", 0, 1, f"K={layer}"))
            ids, logprob, same = self._rerun(analysis, st, trunc, on_token)
        run = TruncationRun(
            layer=int(layer),
            strategy=strategy,
            keep=None if strategy == "all" else int(keep),  # type: ignore[arg-type]
            seed=seed if strategy == "random" else None,
            answer=self._decode(ids),
            answer_token_ids=ids,
            baseline_logprob=logprob,
            same=same,
            seconds=time.perf_counter() - start,
        )
        report(Progress("truncating", 1, 1, f"K={layer}"))
        if record:
            analysis.truncations.append(run)
        return run

    def sweep(
        self,
        analysis: Analysis,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
        strategy: str = "all",
        keep: int | None = None,
        seed: int = 0,
    ) -> Sweep:
        report = progress or no_progress
        start = time.perf_counter()
        L = self.adapter.num_layers
        logprob = np.zeros(L + 1, dtype=np.float32)
        same = np.zeros(L + 1, dtype=bool)
        answers: list[str] = []
        with self._lock:
            st = self._state(analysis, report)
            for K in range(L + 1):
                if cancel is not None and cancel():
                    raise Cancelled(f"sweep cancelled at K={K}")
                report(Progress("sweep", K, L + 1, f"K={K}"))
                trunc = self._truncation(analysis, st, K, strategy, keep, seed)
                ids, logprob[K], same[K] = self._rerun(analysis, st, trunc, cancel=cancel)
                answers.append(self._decode(ids))
        result = Sweep(logprob, same, answers, cliff_layer(same), time.perf_counter() - start,
                       strategy, None if strategy == "all" else keep,
                       seed if strategy == "random" else None)
        report(Progress("sweep", L + 1, L + 1, "done"))
        if strategy == "all":  # the analysis keeps the sweep the cliff is defined on (docs/definitions.md)
            analysis.set_sweep(result)
        return result
