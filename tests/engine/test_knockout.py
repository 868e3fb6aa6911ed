"""Attention knockout (docs/definitions.md, "Knockout positions and flows") on tiny models of
every family, against an independent eager reference that runs the whole model with no reuse,
and the equivalence with truncation."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from support.images import random_image

from flowtui.engine.errors import InputError
from flowtui.engine.knockout_flows import (
    STANDARD_FLOWS,
    TRUNCATION_FLOW,
    default_window,
    parse_flows,
    parse_layers,
    position_kinds,
    window_layers,
)
from flowtui.selftest import tiny
from flowtui.selftest.knockout_reference import KnockoutEager
from flowtui.selftest.reference import MaskedEager

# Not in the fast lane (`-m "not slow"`): every family against the eager knockout reference.
pytestmark = pytest.mark.slow

FAMILIES = tiny.discover()

FLOWS = ",".join(STANDARD_FLOWS) + ",system->answer+question->answer"


# --- plain data -------------------------------------------------------------------------------
def test_windows_follow_the_definition():
    assert default_window(32) == 9 and default_window(24) == 7 and default_window(2) == 1
    assert default_window(4) == 1  # round(1.125)
    assert window_layers(0, 9, 32) == (0, 5)  # layers 0..4
    assert window_layers(10, 9, 32) == (6, 15)  # 10-4 .. 10+4
    assert window_layers(31, 9, 32) == (27, 32)
    assert window_layers(5, 4, 32) == (4, 8)  # even: one more above: 5-1 .. 5+2
    assert window_layers(3, 1, 8) == (3, 4)


@pytest.mark.parametrize("bad,says", [
    ("question->image", "causal order"), ("image->image", "causal order"),
    ("pixels->last", "unknown knockout position"), ("image-last", "SRC->DST"),
    ("", "empty"), ("image->last,image->last", "twice"), ("answer->last", "causal order"),
])
def test_bad_flows_are_refused_in_one_line(bad, says):
    with pytest.raises(InputError, match=says) as info:
        parse_flows(bad)
    assert "\n" not in str(info.value)


def test_flows_parse_in_order_with_combined_edges():
    flows = parse_flows(" image->question + image->last ,last->last")
    assert [f.name for f in flows] == ["image->question+image->last", "last->last"]
    assert flows[0].edges == (("image", "question"), ("image", "last"))
    with pytest.raises(InputError, match="A < B"):
        parse_layers("3:3", 4)
    with pytest.raises(InputError, match="B <= 4"):
        parse_layers("1:5", 4)
    assert parse_layers("1:4", 4) == (1, 4)


def test_positions_split_the_user_group_at_the_last_prompt_position():
    groups = {"system": [(0, 3)], "image": [(3, 7)], "user": [(7, 10)], "output": [(10, 12)]}
    assert position_kinds(groups, 10, 12).tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 4, 4]


# --- on the model ------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=sorted(FAMILIES))
def fam(request, tiny_models):
    spec = FAMILIES[request.param]
    path, engine = tiny_models.path(request.param), tiny_models.engine(request.param)
    a = tiny_models.analysis(request.param)
    return SimpleNamespace(name=request.param, spec=spec, path=path, engine=engine, a=a,
                           ref=KnockoutEager(path))


def test_every_window_matches_the_eager_reference(fam):
    e, a, ref = fam.engine, fam.a, fam.ref
    L = a.num_layers
    w = 2 if L > 2 else 1  # a window wider than one layer where the model has room
    r = e.knockout(a, FLOWS, window=w)
    assert a.knockout is r and r.first_prob.shape == (5, L) and r.window == w
    moved = 0.0
    for f, flow in enumerate(r.flows):
        for c in range(L):
            lo, hi = window_layers(c, w, L)
            p, lp = ref.measure(a, flow, range(lo, hi))
            assert r.first_prob[f, c] == pytest.approx(p, abs=1e-4), (flow, c)
            assert r.logprob[f, c] == pytest.approx(lp, abs=1e-4), (flow, c)
            moved = max(moved, abs(lp - float(a.answer_logprobs.sum())))
    p0 = ref.measure(a, "image->last", range(0))[0]
    assert r.baseline_first_prob == pytest.approx(p0, abs=1e-5)
    np.testing.assert_allclose(r.rel_change, 100 * (r.first_prob - p0) / p0, rtol=1e-4, atol=1e-3)
    assert moved > 1e-3, "no knockout changed anything: the comparison proves nothing"


def test_a_layer_range_matches_the_reference_and_batching_changes_nothing(fam):
    e, a, ref = fam.engine, fam.a, fam.ref
    L = a.num_layers
    r = e.knockout(a, FLOWS, layers=f"0:{L}")
    one = e.knockout(a, FLOWS, layers=(0, L), batch=False)
    assert r.first_prob.shape == (5, 1) and r.layers == (0, L) and r.window is None
    np.testing.assert_allclose(r.logprob, one.logprob, atol=1e-5)
    # Batched rows sum in another order than one at a time: float32 noise of ~1e-6 is expected.
    np.testing.assert_allclose(r.first_prob, one.first_prob, atol=1e-5)
    for f, flow in enumerate(r.flows):
        p, lp = ref.measure(a, flow, range(0, L))
        assert r.first_prob[f, 0] == pytest.approx(p, abs=1e-4), flow
        assert r.logprob[f, 0] == pytest.approx(lp, abs=1e-4), flow


def test_knocking_the_image_out_of_every_later_query_is_truncation(fam):
    """image->question+image->last+image->answer on K..L-1 == truncation from K, strategy all."""
    e, a = fam.engine, fam.a
    L = a.num_layers
    for K in range(L):
        ko = e.knockout(a, TRUNCATION_FLOW, layers=(K, L))
        tr = e.truncate(a, K, record=False)
        assert ko.logprob[0, 0] == pytest.approx(tr.baseline_logprob, abs=1e-4), K


def test_greedy_answers_match_a_no_cache_loop(engines, analyses, tiny_paths):
    e, a = engines["a"], analyses["a"]
    ref = KnockoutEager(tiny_paths["a"])
    L = a.num_layers
    r = e.knockout(a, "image->last+image->answer,question->last", window=2, greedy=True)
    for f, flow in enumerate(r.flows):
        for c in range(L):
            lo, hi = window_layers(c, 2, L)
            ids = ref.greedy(a, flow, range(lo, hi), a.max_new_tokens, e.adapter.eos_token_ids)
            assert r.answers[f][c] == e._decode(ids), (flow, c)


def test_truncation_reference_agrees_with_the_knockout_reference(tiny_paths, analyses):
    """The two independent references agree too (so neither engine path hides a shared slip)."""
    a = analyses["b"]
    L = a.num_layers
    ko = KnockoutEager(tiny_paths["b"])
    tr = MaskedEager(tiny_paths["b"])
    for K in (0, L - 1):
        assert ko.measure(a, TRUNCATION_FLOW, range(K, L))[1] == pytest.approx(
            tr.baseline_logprob(a, K, a.image_positions), abs=1e-4)


def test_bad_requests_are_input_errors(engines, analyses):
    e, a = engines["a"], analyses["a"]
    with pytest.raises(InputError, match="nothing to attend to"):
        e.knockout(a, "system->last+image->last+question->last+last->last")
    with pytest.raises(InputError, match="window must be"):
        e.knockout(a, "image->last", window=a.num_layers + 1)
    with pytest.raises(InputError, match="not both"):
        e.knockout(a, "image->last", window=1, layers=(0, 1))
    with pytest.raises(InputError):
        e.knockout(a, "image->last", layers="2:1")


def test_cancel_stops_between_windows(engines):
    from flowtui.engine.errors import Cancelled

    e = engines["b"]
    a = e.analyze(random_image(9), "Is there a red circle?", max_new_tokens=3, cam=False)
    with pytest.raises(Cancelled):
        e.knockout(a, "image->last", window=1, cancel=lambda: True)
    assert a.knockout is None
