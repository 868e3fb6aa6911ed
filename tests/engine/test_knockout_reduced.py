"""The reduced knockout (docs/definitions.md, "Reduced knockout"): from a window's first layer
only the positions from the first knocked-out DST position on run, reading the recording pass's
keys and values of the earlier ones. It must give what the full pass gives, and what the
independent eager reference gives, on families where it applies; and fall back to the full pass
where it is not exact (Gemma 3's bidirectional image block)."""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from flowtui.engine.knockout import Knockout, Knockouts
from flowtui.engine.knockout_flows import STANDARD_FLOWS, parse_flows, position_kinds
from flowtui.selftest import tiny
from flowtui.selftest.knockout_reference import KnockoutEager

# Builds family models: the slow lane.
pytestmark = pytest.mark.slow

FAMILIES = tiny.discover()
REDUCED = ("llava", "qwen2_vl", "idefics3", "mistral3")
FULL_ONLY = ("gemma3",)  # bidirectional image block: the reduced pass would not be exact
FLOWS = [*STANDARD_FLOWS, "system->answer+question->answer"]


@pytest.fixture(scope="module", params=[*REDUCED, *FULL_ONLY])
def fam(request, tiny_models):
    e = tiny_models.engine(request.param)
    a = tiny_models.analysis(request.param)
    st = e._state(a, lambda p: None)
    kinds = position_kinds(a.groups, st.prompt_len, st.prompt_len + len(a.answer_token_ids))
    return SimpleNamespace(name=request.param, engine=e, a=a, st=st, kinds=kinds,
                           path=tiny_models.path(request.param))


@contextmanager
def _starts(engine):
    """The suffix start of every knockout pass run inside the block (None: the full pass)."""
    seen: list[int | None] = []
    orig = Knockouts._knockout_start

    def spy(self, st, ko):
        s = orig(self, st, ko)
        seen.append(s)
        return s

    Knockouts._knockout_start = spy  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        Knockouts._knockout_start = orig  # type: ignore[method-assign]


def _ko(fam, flows, lo, hi) -> Knockout:
    edges = np.stack([f.matrix() for f in parse_flows(flows)])
    return Knockout(range(lo, hi), edges, fam.kinds)


def test_the_suffix_pass_equals_the_full_pass(fam):
    """Every flow alone and the four together, at windows from the bottom, middle and top:
    the same logits (1e-5), and the suffix starts where the first DST position is."""
    e, st = fam.engine, fam.st
    L, N = fam.a.num_layers, st.hidden[0].shape[1]
    T1 = st.logits.shape[0]
    for lo, hi in {(0, 1), (0, L), (L // 2, L), (L - 1, L)}:
        for rows in [[f] for f in FLOWS] + [list(STANDARD_FLOWS)]:
            ko = _ko(fam, rows, lo, hi)
            s = e._knockout_start(st, ko)
            if fam.name in FULL_ONLY:
                assert s is None
            else:
                dst = ko.edges.any(dim=(0, 1)).numpy()
                first = int(np.flatnonzero(dst[fam.kinds])[0])
                assert s == min(first, N - T1) and 0 < s < N, (rows, s)
            full, _ = e._knockout_logits(st, ko, len(rows), reduced=False)
            red, _ = e._knockout_logits(st, ko, len(rows))
            assert red.shape == full.shape == (len(rows), T1, full.shape[-1])
            scale = float(full.abs().max())
            torch.testing.assert_close(red, full, atol=1e-5 * max(scale, 1.0), rtol=0)


def test_last_and_answer_destinations_run_only_the_short_suffix(fam):
    st = fam.st
    N, P = st.hidden[0].shape[1], st.prompt_len
    ko = _ko(fam, ["image->last", "question->last", "last->last"], 1, 2)
    if fam.name in FULL_ONLY:
        assert fam.engine._knockout_start(st, ko) is None
        return
    assert fam.engine._knockout_start(st, ko) == P - 1
    assert N - (P - 1) == len(fam.a.answer_token_ids) + 1 < N // 2


def test_the_recorded_keys_and_values_span_the_sequence(fam):
    """Greedy decoding continues from them: the suffix pass hands back the same keys and values
    as the full pass, prefix included, in every layer of the window and above."""
    e, st = fam.engine, fam.st
    L = fam.a.num_layers
    ko = _ko(fam, ["question->last"], L // 2, L)
    _, full = e._knockout_logits(st, ko, 1, record_kv=True, reduced=False)
    _, red = e._knockout_logits(st, ko, 1, record_kv=True)
    assert full is not None and red is not None
    for i in range(L // 2, L):
        for x, y in zip(red[i], full[i], strict=True):
            assert x.shape == y.shape
            torch.testing.assert_close(x, y, atol=1e-5 * max(float(y.abs().max()), 1.0), rtol=0)


def test_the_sweep_matches_the_eager_reference_through_the_reduced_pass(fam):
    e, a = fam.engine, fam.a
    L = a.num_layers
    ref = KnockoutEager(fam.path)
    with _starts(e) as seen:
        r = e.knockout(a, ",".join(FLOWS), window=2 if L > 2 else 1)
        g = e.knockout(a, "question->last", layers=(0, L), greedy=True)
    if fam.name in FULL_ONLY:
        assert seen and all(s is None for s in seen)
    else:
        assert seen and all(s is not None for s in seen)
    for f, flow in enumerate(r.flows):
        for c in (0, L // 2, L - 1):
            lo, hi = max(0, c - (r.window - 1) // 2), min(L - 1, c + r.window // 2) + 1
            p, lp = ref.measure(a, flow, range(lo, hi))
            assert r.first_prob[f, c] == pytest.approx(p, abs=1e-5), (flow, c)
            assert r.logprob[f, c] == pytest.approx(lp, abs=1e-4), (flow, c)
    ids = ref.greedy(a, "question->last", range(0, L), a.max_new_tokens, e.adapter.eos_token_ids)
    assert g.answers is not None and g.answers[0][0] == e._decode(ids)
