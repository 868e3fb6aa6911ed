"""Self-checks run with every analysis (docs/definitions.md, "Self-checks").

A new transformers release, a torch kernel or a model's own code can change what flowtui's
reruns compute without any error: the numbers just become wrong. These checks compare the
paths flowtui takes against the model's own recording pass, on every analysis and on any model
(including checkpoints no test here can load), for a few percent of an analysis' time:

- `answer-is-argmax`: the baseline answer (from the model's own generate()) is the argmax of
  the teacher-forced recording pass at every answer query;
- `rerun-reproduces-baseline`: the rerun machinery (layers below K skipped, layer K fed the
  stored residual, the text model's captured arguments replayed, flowtui's LM head) with
  nothing truncated gives the recording pass's logits, answer and log-prob;
- `cached-decoding-reproduces-baseline`: one step of flowtui's own cached decoding (the path a
  truncated answer continues on) gives the recording pass's next-token logits;
- `reduced-rerun-equals-full`: where the rerun runs only the positions that still matter, it
  agrees with the full masked pass (at K = L-1, strategy all);
- `shares-sum-to-one` and `finite`: what is stored is a distribution per layer, and finite.

Tolerances scale with the dtype: float32 reruns agree to ~1e-5, half precision to ~1e-2.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from flowtui.engine import attention
from flowtui.engine.analysis import Analysis, Check

# The engine and its rerun state come in as arguments (LocalEngine, recording.State): this module
# reads the rerun paths it checks and is imported by local.py, never the other way round.
LocalEngine = Any
State = Any

NAMES = (
    "answer-is-argmax",
    "rerun-reproduces-baseline",
    "cached-decoding-reproduces-baseline",
    "reduced-rerun-equals-full",
    "shares-sum-to-one",
    "finite",
)


def tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance on logits (of their largest magnitude) for this compute dtype."""
    return 1e-4 if dtype in (torch.float32, torch.float64) else 2e-2


def make(name: str, passed: bool, detail: str = "", **numbers: float) -> Check:
    """A Check whose numbers are finite (JSON and snapshots hold no NaN): others go to detail."""
    finite = {k: float(v) for k, v in numbers.items() if math.isfinite(float(v))}
    odd = [f"{k} {float(v)}" for k, v in numbers.items() if not math.isfinite(float(v))]
    if odd:
        detail = "; ".join([d for d in (detail, ", ".join(odd)) if d])
    return Check(name, bool(passed), finite, detail)


def _rel_diff(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.float(), y.float()
    scale = max(float(y.abs().max()), 1.0)
    return float((x.to(y.device) - y).abs().max()) / scale


def _argmax(engine: LocalEngine, a: Analysis, st: State, tol: float) -> Check:
    logits = st.logits  # [T+1, V] float32 from the recording pass
    T = len(a.answer_token_ids)
    b = torch.tensor(a.answer_token_ids, device=logits.device)
    masked = logits.index_fill(
        -1, torch.tensor(engine.adapter.suppressed_token_ids, device=logits.device), float("-inf")
    )
    top = masked[:T].max(dim=-1).values
    chosen = logits[torch.arange(T, device=logits.device), b]
    # Generation and the teacher-forced pass are different kernels: a near-tie may flip. A
    # real break puts the answer far below the top logit.
    gap = (top - chosen) / max(float(logits.abs().max()), 1.0)
    worst = int(gap.argmax())
    passed = bool((gap <= tol).all())
    detail = "" if passed else (
        f"answer token {worst} ({a.answer_token_ids[worst]}) is not the recording pass' argmax "
        f"({int(masked[worst].argmax())})")
    return make("answer-is-argmax", passed, detail, max_relative_gap=float(gap.max()),
                tolerance=tol)


def _rerun(engine: LocalEngine, a: Analysis, st: State, tol: float) -> Check:
    L = engine.adapter.num_layers
    empty = attention.Truncation(L - 1, torch.zeros(0, dtype=torch.long))
    logits, _ = engine._logits_from_layer(st, empty)
    logprob, j, _ = engine._compare(a, logits)
    base = float(np.sum(a.answer_logprobs, dtype=np.float64))
    diff = _rel_diff(logits, st.logits)
    lp_tol = max(10 * tol * len(a.answer_token_ids), tol * abs(base))
    passed = j is None and abs(logprob - base) <= lp_tol and diff <= tol
    detail = "" if passed else (
        f"the answer departs at token {j}" if j is not None else
        "the rerun's logits differ from the recording pass")
    return make("rerun-reproduces-baseline", passed, detail, logprob=logprob,
                baseline_logprob=base, max_relative_logit_diff=diff, tolerance=tol)


def _cached(engine: LocalEngine, a: Analysis, st: State, tol: float) -> Check:
    """One cached decoding step after the whole answer: the recording pass' last row."""
    logits = engine._cached_step(st, None, st.kv, list(a.answer_token_ids))
    diff = _rel_diff(logits, st.logits[-1:])
    passed = diff <= tol
    return make("cached-decoding-reproduces-baseline", passed,
                "" if passed else "a cached decoding step differs from the recording pass",
                max_relative_logit_diff=diff, tolerance=tol)


def _reduced(engine: LocalEngine, a: Analysis, st: State, tol: float) -> Check | None:
    L = engine.adapter.num_layers
    trunc = engine._truncation(a, st, L - 1, "all", None, 0)
    keep = engine._kept_positions(st, trunc)
    if keep is None:
        return None  # this family runs the full pass: nothing to compare
    reduced, _ = engine._logits_from_layer_kept(st, trunc, keep)
    full, _ = engine._logits_from_layer(st, trunc, reduced=False)
    diff = _rel_diff(reduced, full)
    passed = diff <= tol
    return make("reduced-rerun-equals-full", passed,
                "" if passed else "the reduced rerun differs from the full masked pass",
                max_relative_logit_diff=diff, tolerance=tol, layer=L - 1)


def _stored(a: Analysis) -> list[Check]:
    sums = np.asarray(a.shares, dtype=np.float64).sum(axis=1)
    err = float(np.abs(sums - 1).max()) if sums.size else 0.0
    shares = make("shares-sum-to-one", bool(np.isfinite(err) and err <= 1e-3),
                  "" if err <= 1e-3 else f"layer {int(np.nanargmax(np.abs(sums - 1)))}",
                  max_abs_error=err)
    arrays: dict[str, Any] = {
        "shares": a.shares, "head_shares": a.head_shares, "answer_logprobs": a.answer_logprobs,
        "cam_tokens": a.cam_tokens, "image_attention": a.image_attention,
        "attention_tokens": a.attention_tokens,
    }
    bad = [k for k, v in arrays.items() if v is not None and not np.isfinite(np.asarray(v)).all()]
    finite = make("finite", not bad, f"non-finite values in {', '.join(bad)}" if bad else "",
                  arrays_checked=sum(v is not None for v in arrays.values()))
    return [shares, finite]


def run(engine: LocalEngine, a: Analysis, st: State) -> list[Check]:
    """Every self-check on a fresh analysis and its rerun state. A check that raises is a
    failed check (with the error), never a failed analysis."""
    tol = tolerance(next(engine.model.parameters()).dtype)
    checks: list[Check] = []
    for name, fn in (("answer-is-argmax", _argmax), ("rerun-reproduces-baseline", _rerun),
                     ("cached-decoding-reproduces-baseline", _cached),
                     ("reduced-rerun-equals-full", _reduced)):
        try:
            with torch.no_grad():
                c = fn(engine, a, st, tol)
        except Exception as exc:  # a broken internal may raise instead of miscomputing
            c = make(name, False, f"raised {type(exc).__name__}: {str(exc).splitlines()[0]}"
                     if str(exc) else f"raised {type(exc).__name__}")
        if c is not None:
            checks.append(c)
    return checks + _stored(a)
