"""Truncation and sweeps against a no-cache eager reference with the same masking rule."""

from __future__ import annotations

import numpy as np
import pytest
from support.images import random_image

from flowtui.engine.analysis import cliff_layer
from flowtui.engine.errors import InputError
from flowtui.selftest.reference import MaskedEager


@pytest.fixture(scope="module")
def reference(tiny_paths):
    return {g: MaskedEager(p) for g, p in tiny_paths.items()}


def _eos(engine):
    return engine.adapter.eos_token_ids


def test_k_equals_l_is_the_baseline(engines, analyses):
    for g, e in engines.items():
        a = analyses[g]
        r = e.truncate(a, a.num_layers, record=False)
        assert r.same and r.answer_token_ids == a.answer_token_ids and r.answer == a.answer
        assert r.baseline_logprob == pytest.approx(float(a.answer_logprobs.sum()), abs=1e-4)


def test_k0_does_not_depend_on_the_image(engines):
    e = engines["a"]
    a1 = e.analyze(random_image(3), "is there a red square ?", max_new_tokens=4)
    a2 = e.analyze(random_image(4), "is there a red square ?", max_new_tokens=4)
    # Compare the baseline log-prob of the same answer: score a1's answer under a2's image.
    r1 = e.truncate(a1, 0, record=False)
    a2.answer_token_ids = a1.answer_token_ids
    a2.ended_with_eos = a1.ended_with_eos
    r2 = e.truncate(a2, 0, record=False)
    assert r1.answer_token_ids == r2.answer_token_ids
    assert r1.baseline_logprob == pytest.approx(r2.baseline_logprob, abs=1e-4)
    # ...while with the image in view the two images do give different scores.
    full1 = e.truncate(a1, e.adapter.num_layers, record=False).baseline_logprob
    full2 = e.truncate(a2, e.adapter.num_layers, record=False).baseline_logprob
    assert abs(full1 - full2) > 1e-3


@pytest.mark.slow  # the no-cache reference for every strategy
@pytest.mark.parametrize("geometry", ["a", "b"])
@pytest.mark.parametrize("strategy,keep", [("all", None), ("top", 7), ("random", 5)])
def test_truncation_matches_no_cache_reference(geometry, strategy, keep, engines, analyses, reference):
    e, a, ref = engines[geometry], analyses[geometry], reference[geometry]
    img = a.image_positions
    for K in range(a.num_layers + 1):
        r = e.truncate(a, K, strategy=strategy, keep=keep, seed=3, record=False)
        if strategy == "all":
            masked = img
        elif strategy == "top":
            order = np.argsort(-a.image_attention[max(K - 1, 0)], kind="stable")
            masked = np.delete(img, order[:keep])
        else:
            masked = np.delete(img, np.random.default_rng(3).choice(len(img), keep, replace=False))
        expect = ref.greedy(a, K, masked, a.max_new_tokens, _eos(e))
        assert r.answer_token_ids == expect, (K, strategy)
        assert r.baseline_logprob == pytest.approx(ref.baseline_logprob(a, K, masked), abs=1e-3)
        assert r.same == (expect == a.answer_token_ids)


def test_cached_decoding_equals_teacher_forced_check(engines, analyses, reference):
    """The truncated answer (decoded with the KV cache) is greedy under the same masked model."""
    from flowtui.selftest.reference import full_inputs

    e, a, ref = engines["a"], analyses["a"], reference["a"]
    for K in (0, 1, 2):
        r = e.truncate(a, K, record=False)
        inputs, P = full_inputs(ref.processor, a, r.answer_token_ids)
        ref.K, ref.masked = K, list(a.image_positions)
        logits = ref.logits(inputs)
        greedy = logits[P - 1 : P - 1 + len(r.answer_token_ids)].argmax(-1).tolist()
        assert greedy == r.answer_token_ids


def test_top_with_every_token_kept_is_the_baseline(engines, analyses):
    e, a = engines["b"], analyses["b"]
    n = len(a.image_positions)
    for K in (0, 2):
        r = e.truncate(a, K, strategy="top", keep=n, record=False)
        assert r.answer_token_ids == a.answer_token_ids
        assert r.baseline_logprob == pytest.approx(float(a.answer_logprobs.sum()), abs=1e-4)


def test_random_is_seeded(engines, analyses):
    e, a = engines["a"], analyses["a"]
    r1 = e.truncate(a, 1, strategy="random", keep=4, seed=7, record=False)
    r2 = e.truncate(a, 1, strategy="random", keep=4, seed=7, record=False)
    assert r1.baseline_logprob == r2.baseline_logprob
    others = {e.truncate(a, 1, strategy="random", keep=4, seed=s, record=False).baseline_logprob for s in range(5)}
    assert len(others) > 1


@pytest.mark.slow  # L+1 independent truncations
def test_sweep_equals_independent_truncations_and_cliff_definition(engines, reference):
    e, ref = engines["b"], reference["b"]
    a = e.analyze(random_image(5), "what colour is the shape ?", max_new_tokens=4)
    progress = []
    s = e.sweep(a, progress=progress.append)
    L = a.num_layers
    assert s.logprob.shape == (L + 1,) and s.same.shape == (L + 1,)
    for K in range(L + 1):
        expect = ref.greedy(a, K, a.image_positions, a.max_new_tokens, _eos(e))
        assert s.same[K] == (expect == a.answer_token_ids)
        assert s.answers[K] == e.tokenizer.decode(expect, skip_special_tokens=True).strip()
        assert s.logprob[K] == pytest.approx(ref.baseline_logprob(a, K, a.image_positions), abs=1e-3)
    assert a.cliff_layer == s.cliff_layer and a.sweep_same is s.same
    c = s.cliff_layer
    assert c is not None and s.same[c:].all() and (c == 0 or not s.same[c - 1])
    assert [p.done for p in progress if p.stage == "sweep"][:L + 1] == list(range(L + 1))


def test_sweep_cancel(engines, analyses):
    from flowtui.engine.errors import Cancelled

    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        engines["a"].sweep(analyses["a"], cancel=cancel)


def test_cliff_layer_definition():
    assert cliff_layer(np.array([False, False, True, True])) == 2
    assert cliff_layer(np.array([False, True, False, True])) == 3
    assert cliff_layer(np.array([True, True, True])) == 0
    assert cliff_layer(np.array([True, True, False])) is None


def test_truncate_streams_and_records(engines, analyses):
    e, a = engines["a"], analyses["a"]
    before = len(a.truncations)
    texts = []
    r = e.truncate(a, 0, on_token=texts.append)
    assert texts and texts[-1] == r.answer
    assert a.truncations[-1] is r and len(a.truncations) == before + 1


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"layer": -1}, "between 0 and"),
        ({"layer": 99}, "between 0 and"),
        ({"layer": 1, "strategy": "fastv"}, "unknown strategy"),
        ({"layer": 1, "strategy": "top"}, "keep=R"),
        ({"layer": 1, "strategy": "random", "keep": 10_000}, "keep=R"),
    ],
)
def test_bad_truncation_arguments(engines, analyses, kwargs, match):
    with pytest.raises(InputError, match=match):
        engines["a"].truncate(analyses["a"], **kwargs)


def test_rerun_after_snapshot_reload(engines, analyses, tmp_path):
    import flowtui

    e, a = engines["a"], analyses["a"]
    path = a.save(tmp_path / "s.flowtui")
    b = flowtui.load_snapshot(path)
    e._states.clear()  # force the rebuild path a reopened snapshot takes
    r1 = e.truncate(b, 1, record=False)
    r2 = e.truncate(a, 1, record=False)
    assert r1.answer_token_ids == r2.answer_token_ids
    assert r1.baseline_logprob == pytest.approx(r2.baseline_logprob, abs=1e-5)
    with pytest.raises(InputError, match="made with tiny_a"):
        engines["b"].truncate(b, 1)


@pytest.mark.parametrize("strategy,keep", [("top", 5), ("random", 4)])
def test_sweep_with_a_strategy_equals_single_truncations(engines, analyses, strategy, keep):
    e, a = engines["a"], analyses["a"]
    before = (a.sweep_same, len(a.truncations))
    s = e.sweep(a, strategy=strategy, keep=keep, seed=2)
    assert (s.strategy, s.keep) == (strategy, keep)
    for K in range(a.num_layers + 1):
        r = e.truncate(a, K, strategy=strategy, keep=keep, seed=2, record=False)
        assert s.answers[K] == r.answer and s.same[K] == r.same
        assert s.logprob[K] == pytest.approx(r.baseline_logprob, abs=1e-5)
    # The analysis' own sweep (and its cliff) is the `all` one: left as it was.
    assert a.sweep_same is before[0] and len(a.truncations) == before[1]
