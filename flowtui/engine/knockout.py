"""Attention knockout between token groups, run on the model (docs/definitions.md, "Knockout
positions and flows"; Zhang, Yadav, Han & Shutova, CVPR 2025).

A flow SRC->DST sets to -inf, before the softmax, every attention logit from a DST query to a
SRC key, in every head of the chosen layers. It rides on the same attention function as
truncation (attention.py): the model's own mask (causal, sliding windows, bidirectional image
blocks) is kept and the knocked-out edges are removed on top of it.

Cost: layers below a window see exactly what the baseline saw, so a window starting at layer lo
runs layers lo..L-1 only, from the recording pass's input of layer lo (as truncation does), and
the flows of one window run as one batch, one flow per batch row. Where exact, only the
positions from the first knocked-out DST position on run from there, reading the recording
pass's keys and values of the earlier ones (docs/definitions.md, "Reduced knockout").
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from flowtui.engine.analysis import Analysis, Progress, ProgressFn, no_progress
from flowtui.engine.errors import Cancelled, InputError
from flowtui.engine.interface import CancelFn
from flowtui.engine.knockout_flows import (
    POSITIONS,
    Flow,
    KnockoutResult,
    default_window,
    parse_flows,
    parse_layers,
    position_kinds,
    window_layers,
)
from flowtui.engine.recording import State
from flowtui.engine.reruns import Reruns

_ANSWER = POSITIONS.index("answer")
# Captured text-model inputs that hold one entry per batch row and image position (Qwen3-VL's
# DeepStack adds vision features at the image rows after its first layers): with these the
# flows of a window run one after another instead of as one batch.
_PER_ROW_INPUTS = ("visual_pos_masks", "deepstack_visual_embeds")


class Knockout:
    """Knocked-out edges in a set of layers; batch row b knocks out flow b.

    `edges` is bool [B, 5, 5] over POSITIONS ([b, src, dst]); `kinds` gives each absolute
    position of the teacher-forced sequence its knockout position (positions past it, decoded
    tokens, are `answer`). Duck-types attention.Truncation (applies / allowed).
    """

    def __init__(self, layers: range, edges: np.ndarray, kinds: np.ndarray) -> None:
        self.layers = range(layers.start, layers.stop)
        self.edges = torch.as_tensor(np.asarray(edges, dtype=bool))
        self.kinds = torch.as_tensor(np.append(np.asarray(kinds, dtype=np.int64), _ANSWER))
        self._blocked: dict = {}

    @property
    def layer(self) -> int:  # where the rerun starts, as Truncation.layer
        return self.layers.start

    def applies(self, layer: int) -> bool:
        return layer in self.layers

    def _kind(self, pos: torch.Tensor) -> torch.Tensor:
        return self.kinds.to(pos.device)[pos.clamp(max=len(self.kinds) - 1)]

    def blocked(self, q_len: int, kv_len: int, q_end: int, device: torch.device) -> torch.Tensor:
        """bool [B, q, kv]: the knocked-out edges among these queries and keys (absolute
        positions as in Truncation.allowed)."""
        key = (q_len, kv_len, q_end, device)
        if key not in self._blocked:
            kq = self._kind(torch.arange(q_end - q_len, q_end, device=device))
            kk = self._kind(torch.arange(q_end - kv_len, q_end, device=device))
            by_dst = self.edges.to(device).transpose(1, 2)  # [B, dst, src]
            self._blocked[key] = by_dst[:, kq][:, :, kk]
        return self._blocked[key]

    def allowed(self, q_len: int, kv_len: int, q_end: int, given: torch.Tensor | None,
                device: torch.device) -> torch.Tensor:
        """What the model allows (`given`, or causal) minus the knocked-out edges: [q, kv] for
        one flow, [B, q, kv] for several. A row left with no key keeps its own (never a NaN;
        parse-time checks refuse the flows that would do that to a row that matters)."""
        q_pos = torch.arange(q_end - q_len, q_end, device=device)
        k_pos = torch.arange(q_end - kv_len, q_end, device=device)
        base = given if given is not None else k_pos[None, :] <= q_pos[:, None]
        allowed = base[None] & ~self.blocked(q_len, kv_len, q_end, device)
        empty = ~allowed.any(dim=-1, keepdim=True)
        allowed = allowed | (empty & (k_pos[None, :] == q_pos[:, None])[None])
        return allowed[0] if allowed.shape[0] == 1 else allowed


def _check_rows(flows: Sequence[Flow], kinds: np.ndarray) -> None:
    """Refuse a flow that leaves some query with nothing to attend to (every earlier key and
    its own knocked out): its softmax would be undefined."""
    present = [int(k) for k in dict.fromkeys(kinds.tolist())]
    for f in flows:
        m = f.matrix()
        for dst in present:
            # Under the causal order a query sees every earlier kind, and its own.
            seen = [k for k in present if k <= dst]
            if all(m[src, dst] for src in seen):
                raise InputError(f"knockout flow {f.name} leaves `{POSITIONS[dst]}` with nothing "
                                 "to attend to")


class Knockouts(Reruns):
    """Attention knockout, for LocalEngine: a kind of rerun (it uses truncation's layer skipping,
    comparison and cached decoding)."""

    def _knockout_start(self, st: State, ko: Knockout) -> int | None:
        """The first position the knockout can change, where a pass over the suffix from there
        is exact (docs/definitions.md, "Reduced knockout"); None for the full pass.

        No knocked-out edge ends before the first DST position s, and under a plain causal mask
        no query reads a later key, so every position < s computes what the recording pass did,
        in every layer: its keys and values are the stored ones. Families with bidirectional
        image blocks or biting sliding windows (no reduced rerun) keep the full pass.
        """
        N = st.hidden[ko.layer].shape[1]
        if (not self.adapter.reduced_rerun or st.text_args
                or self._window_bites(N)):
            return None
        dst = ko.edges.any(dim=(0, 1))  # [5]: kinds that are some flow's DST
        at = torch.nonzero(dst[ko.kinds[:N]])
        s = int(at[0]) if len(at) else N - st.logits.shape[0]
        s = min(s, N - st.logits.shape[0])  # the answer queries always run
        if s <= 0:
            return None
        keep = torch.arange(s, N)
        if self.adapter.reduced_text_kwargs(st.text_kwargs, keep) is None:
            return None
        return s

    def _knockout_suffix(self, st: State, ko: Knockout, rows: int, s: int,
                         record_kv: bool) -> tuple[torch.Tensor, dict | None]:
        """_knockout_logits on positions s..N-1 only: layers ko.layer..L-1 run on the suffix,
        reading the recording pass's keys and values of positions < s through a KV cache (as a
        chunked prefill would), with the suffix's own position ids. Recorded keys and values
        span the whole sequence (the cache hands the attention the prefix and the suffix)."""
        from flowtui.engine import attention, compat

        start, T1 = ko.layer, st.logits.shape[0]
        N = st.hidden[start].shape[1]
        keep = torch.arange(s, N)
        kwargs = self.adapter.reduced_text_kwargs(st.text_kwargs, keep)
        assert kwargs is not None  # _knockout_start asked the family already
        dev = st.hidden[start].device
        # The mask spans prefix and suffix: a 2D mask of ones (the captured one, where given).
        mask = st.text_kwargs.get("attention_mask")
        kwargs["attention_mask"] = (mask if isinstance(mask, torch.Tensor) and mask.dim() == 2
                                    else torch.ones(1, N, dtype=torch.long, device=dev))
        cache = compat.new_cache(self.adapter.text_config)
        for i in range(self.adapter.num_layers):
            k, v = (t[:, :, :s] for t in st.kv[i])
            if i >= start and rows > 1:  # layers below start are skipped: never read
                k, v = k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)
            cache.update(k, v, i)
        hidden = st.hidden[start][:, s:]
        if rows > 1:
            hidden = hidden.expand(rows, -1, -1).contiguous()
        kwargs.update(use_cache=True, **{compat.cache_kwarg(self.adapter.text_model): cache})
        with (torch.no_grad(), self._from_layer(start, hidden),
              attention.truncated(ko),  # type: ignore[arg-type]  # duck-types Truncation
              attention.decoding_at(N)):
            if record_kv:
                with attention.recording_kv() as kv:
                    out = self.adapter.text_model(**kwargs)
            else:
                kv = None
                out = self.adapter.text_model(**kwargs)
        last = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return self.adapter.logits(last[:, -T1:]).float(), kv

    def _knockout_logits(self, st: State, ko: Knockout, rows: int,
                         record_kv: bool = False,
                         reduced: bool = True) -> tuple[torch.Tensor, dict | None]:
        """Teacher-forced logits [rows, T+1, V] at the answer queries and the last position,
        with `ko` applied, running layers ko.layer..L-1 from the recording pass's input there
        (on the suffix from the first position the knockout changes, where that is exact)."""
        from flowtui.engine import attention
        from flowtui.engine.reruns import _without_cache

        s = self._knockout_start(st, ko) if reduced else None
        if s is not None:
            return self._knockout_suffix(st, ko, rows, s, record_kv)
        start, T1 = ko.layer, st.logits.shape[0]
        hidden = st.hidden[start]
        if rows > 1:
            hidden = hidden.expand(rows, -1, -1).contiguous()
        kwargs = {**_without_cache(st.text_kwargs), "use_cache": False}
        with torch.no_grad(), self._from_layer(start, hidden), attention.truncated(ko):  # type: ignore[arg-type]  # duck-types Truncation
            if record_kv:
                with attention.recording_kv() as kv:
                    out = self.adapter.text_model(*st.text_args, **kwargs)
            else:
                kv = None
                out = self.adapter.text_model(*st.text_args, **kwargs)
        last = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return self.adapter.logits(last[:, -T1:]).float(), kv

    def _batchable(self, st: State) -> bool:
        return not st.text_args and all(st.text_kwargs.get(k) is None for k in _PER_ROW_INPUTS)

    def _knockout_greedy(self, a: Analysis, st: State, ko: Knockout, logits: torch.Tensor,
                         kv_of) -> str:
        """The greedy answer under `ko`: the teacher-forced logits give it for as long as it
        follows the baseline; cached decoding (truncation's) goes on from where it departs."""
        _, j, token = self._compare(a, logits)
        b = [int(t) for t in a.answer_token_ids]
        if j is None or token is None:
            return self._decode(b)
        ids = b[:j] + [token]
        if token in self.adapter.eos_token_ids:
            return self._decode(b[:j])
        budget = a.max_new_tokens - len(ids)
        if budget > 0:
            L = self.adapter.num_layers
            kv = kv_of()
            full = {i: st.kv[i] if i < ko.layer else kv[i] for i in range(L)}
            ids = ids + self._continue(st, ko, full, ids, budget)  # type: ignore[arg-type]  # duck-types Truncation
        ids, _ = self._split_eos(ids)
        return self._decode(ids)

    def knockout(
        self,
        analysis: Analysis,
        flows: str | Sequence[str],
        window: int | None = None,
        layers: tuple[int, int] | str | None = None,
        greedy: bool = False,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
        batch: bool = True,
    ) -> KnockoutResult:
        """Knock out each flow in every window of `window` layers (default max(1,
        round(9·L/32))), or once in the layers `layers` = (A, B) / "A:B" (A..B-1). Sets
        analysis.knockout. batch=False runs the flows of a window one after another."""
        report = progress or no_progress
        start = time.perf_counter()
        parsed = parse_flows(flows if isinstance(flows, str) else list(flows))
        L = self.adapter.num_layers
        if layers is not None and window is not None:
            raise InputError("give a window or a layer range, not both")
        if layers is not None:
            span = parse_layers(layers if isinstance(layers, str) else f"{layers[0]}:{layers[1]}",
                                L)
            spans = [span]
        else:
            w = default_window(L) if window is None else window
            if not isinstance(w, int | np.integer) or not 1 <= w <= L:
                raise InputError(f"the knockout window must be 1..{L} layers, got {w!r}")
            spans = [window_layers(c, int(w), L) for c in range(L)]
        b = torch.tensor(analysis.answer_token_ids)
        T, F = len(b), len(parsed)
        first = np.zeros((F, len(spans)), dtype=np.float32)
        logprob = np.zeros_like(first)
        answers: list[list[str]] = [[] for _ in parsed]
        edges = np.stack([f.matrix() for f in parsed])
        with self._lock:
            st = self._state(analysis, report)
            P = st.prompt_len
            kinds = position_kinds(analysis.groups, P, P + T)
            _check_rows(parsed, kinds)
            p0 = float(torch.softmax(st.logits[0].float(), -1)[b[0]])
            together = batch and not greedy and self._batchable(st)
            groups = [list(range(F))] if together else [[i] for i in range(F)]
            for w_i, (lo, hi) in enumerate(spans):
                if cancel is not None and cancel():
                    raise Cancelled(f"knockout cancelled at layers {lo}..{hi - 1}")
                report(Progress("knockout", w_i, len(spans), f"layers {lo}..{hi - 1}"))
                for rows in groups:
                    ko = Knockout(range(lo, hi), edges[rows], kinds)
                    logits, kv = self._knockout_logits(st, ko, len(rows), record_kv=greedy)
                    lp = torch.log_softmax(logits[:, :T], -1)[:, torch.arange(T), b]
                    first[rows, w_i] = torch.softmax(logits[:, 0], -1)[:, b[0]].cpu().numpy()
                    logprob[rows, w_i] = lp.sum(-1).cpu().numpy()
                    if greedy:
                        answers[rows[0]].append(
                            self._knockout_greedy(analysis, st, ko, logits[0], lambda kv=kv: kv))
        rel = (100.0 * (first.astype(np.float64) - p0) / p0).astype(np.float32)
        result = KnockoutResult(
            flows=[f.name for f in parsed], first_prob=first, rel_change=rel, logprob=logprob,
            baseline_first_prob=p0,
            window=None if layers is not None else int(w),
            layers=spans[0] if layers is not None else None,
            answers=answers if greedy else None, seconds=time.perf_counter() - start)
        report(Progress("knockout", len(spans), len(spans), "done"))
        analysis.knockout = result
        return result
