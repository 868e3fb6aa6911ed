"""Every supported family on a tiny random model, against the independent references.

For each module in flowtui/selftest/tiny/: load it through the public path, analyse an odd-sized image,
and check shares, attention maps, CAM, every K of the sweep, the truncation strategies, the
regions (by back-propagation to the pixels) and a snapshot round trip with a rerun.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest
from support.images import smooth_image
from support.regions import (
    channels_last3,
    check_regions,
    pixel_support,
    position_image,
    sample_tokens,
)

import flowtui
from flowtui.engine import compat
from flowtui.engine.analysis import cliff_layer
from flowtui.selftest import tiny
from flowtui.selftest.reference import (
    MaskedEager,
    attention_maps_eager,
    cam_per_layer_loop,
    load_eager,
    shares_eager,
)

# Not in the fast lane (`-m "not slow"`): every family against the eager references.
pytestmark = pytest.mark.slow

FAMILIES = tiny.discover()

# Families whose reruns keep the full pass (engine._kept_positions returns None), each for a
# reason; every other family runs layers K..L-1 on the kept positions only and is checked
# against the full masked pass and the no-cache reference below. Enabling one is a decision.
REDUCED_OFF = {
    "gemma3": "bidirectional image block (token_type_ids) and sliding windows",
    "paligemma": "bidirectional prefix and sliding windows",
    "aya_vision": "Cohere 2's sliding-window layers",
}


def _reduced(fam) -> bool:
    return fam.spec.FAMILY not in REDUCED_OFF


@contextmanager
def _reduced_calls(engine) -> Iterator[list[int]]:
    """The layers K at which reruns inside the block go through the reduced path. (No
    monkeypatch fixture: other family modules call the tests below with their own fixtures.)"""
    calls: list[int] = []
    kept = engine._logits_from_layer_kept

    def spy(st, trunc, keep):
        calls.append(trunc.layer)
        return kept(st, trunc, keep)

    engine._logits_from_layer_kept = spy
    try:
        yield calls
    finally:
        del engine._logits_from_layer_kept  # the class's method again


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def fam(request, tiny_models):
    spec = FAMILIES[request.param]
    path, engine = tiny_models.path(request.param), tiny_models.engine(request.param)
    a = engine.analyze(smooth_image(spec.IMAGE_SIZE), spec.QUESTION,
                       max_new_tokens=getattr(spec, "MAX_NEW_TOKENS", 4))
    return SimpleNamespace(name=request.param, spec=spec, path=path, engine=engine, a=a)


def test_loads_through_the_public_path(fam):
    assert fam.engine.info.family == fam.spec.FAMILY
    module = getattr(fam.spec, "ADAPTER_MODULE", fam.name)
    assert type(fam.engine.adapter).__module__ == f"flowtui.engine.families.{module}"


def test_head_and_cache_argument_are_the_models_own(fam):
    """flowtui's LM head (used by every rerun) gives the model's own logits, and its decoder
    takes the cache under the name compat reads: where either changes, transformers changed an
    internal (compat.head_applies_logit_scale / head_applies_final_softcap / cache_kwarg)."""
    import torch

    e, a = fam.engine, fam.a
    st = e._state(a, lambda _p: None)
    last = {}

    def keep(_m, _a, out) -> None:
        last["h"] = out[0] if isinstance(out, tuple) else out.last_hidden_state

    hook = e.adapter.text_model.register_forward_hook(keep)
    try:
        with torch.no_grad():
            logits = e.model(**st.full, use_cache=False).logits[0]
    finally:
        hook.remove()
    ours = e.adapter.logits(last["h"][0])
    np.testing.assert_allclose(ours.float().numpy(), logits.float().numpy(), rtol=1e-5, atol=1e-5)
    assert compat.cache_kwarg(e.adapter.text_model) in compat.CACHE_NAMES


def test_groups_image_block_and_layout(fam):
    a = fam.a
    spans = [s for g in ("system", "image", "user", "output") for s in a.groups[g]]
    assert spans[0][0] == 0 and spans[-1][1] == len(a.tokens)
    assert all(p[1] <= q[0] for p, q in zip(spans, spans[1:], strict=False))
    assert sum(e - s for s, e in spans) == len(a.tokens)
    img = set(a.image_positions.tolist())
    assert set(a.feature_positions.tolist()) <= img
    first, last = fam.spec.BLOCK
    assert a.tokens[a.groups["image"][0][0]] == first
    assert a.tokens[a.groups["image"][-1][1] - 1] == last
    assert a.groups["user"], "the question sits after the image"
    n = len(a.feature_positions)
    assert a.cam_tokens.shape == (a.num_layers, n) and a.token_regions.shape == (n, 4)
    assert a.token_views.shape == (n,) and set(a.token_views.tolist()) == set(range(len(a.views)))
    finite = np.isfinite(a.token_regions).all(axis=1)
    assert finite.any()
    r = a.token_regions[finite]
    w, h = fam.spec.IMAGE_SIZE
    assert (r[:, 0] >= -1e-3).all() and (r[:, 2] <= w + 1e-3).all()
    assert (r[:, 1] >= -1e-3).all() and (r[:, 3] <= h + 1e-3).all()
    assert (r[:, 2] > r[:, 0]).all() and (r[:, 3] > r[:, 1]).all()


def test_shares_match_eager_output_attentions(fam):
    a = fam.a
    shares, head_shares = shares_eager(fam.path, a)
    np.testing.assert_allclose(a.head_shares, head_shares, atol=1e-5)
    np.testing.assert_allclose(a.shares, shares, atol=1e-5)
    np.testing.assert_allclose(a.shares.sum(axis=1), 1.0, atol=1e-5)


def test_attention_maps_match_eager(fam):
    last, answer = attention_maps_eager(fam.path, fam.a)
    np.testing.assert_allclose(fam.a.image_attention, last, atol=1e-5)
    np.testing.assert_allclose(fam.a.attention_tokens, answer, atol=1e-5)


def test_cam_matches_the_papers_per_layer_loop(fam):
    ref = cam_per_layer_loop(fam.path, fam.a)
    np.testing.assert_allclose(fam.a.cam_tokens, ref, atol=1e-4)
    assert (fam.a.cam_tokens.max(axis=1) > 0).any()


@pytest.fixture(scope="module")
def reference(fam):
    return MaskedEager(fam.path)


def test_every_k_of_the_sweep_matches_a_no_cache_masked_loop(fam, reference):
    e, a = fam.engine, fam.a
    with _reduced_calls(e) as reduced:
        sweep = e.sweep(a)
    # Every K < L went through the reduced rerun where the family has it (K = L is the baseline).
    assert reduced == (list(range(a.num_layers)) if _reduced(fam) else [])
    sames = []
    for K in range(a.num_layers + 1):
        expect = reference.greedy(a, K, a.image_positions, a.max_new_tokens, e.adapter.eos_token_ids)
        assert e._decode(expect) == sweep.answers[K], K
        sames.append(expect == a.answer_token_ids)
        assert sweep.logprob[K] == pytest.approx(
            reference.baseline_logprob(a, K, a.image_positions), abs=1e-3
        ), K
    assert sweep.same.tolist() == sames
    assert sweep.cliff_layer == cliff_layer(np.array(sames))
    assert not all(sames), "the tiny model ignores the image: the sweep proves nothing"


@pytest.mark.parametrize("strategy,keep", [("top", 3), ("random", 2)])
def test_strategies_match_the_reference(fam, reference, strategy, keep):
    e, a = fam.engine, fam.a
    feats, img = a.feature_positions, a.image_positions
    Ks = (1, a.num_layers - 1)
    for K in Ks:
        with _reduced_calls(e) as reduced:
            r = e.truncate(a, K, strategy=strategy, keep=keep, seed=7, record=False)
        assert reduced == ([K] if _reduced(fam) else []), K
        if strategy == "top":
            kept = feats[np.argsort(-a.image_attention[K - 1], kind="stable")[:keep]]
        else:
            kept = feats[np.random.default_rng(7).choice(len(feats), keep, replace=False)]
        masked = np.setdiff1d(img, kept)
        expect = reference.greedy(a, K, masked, a.max_new_tokens, e.adapter.eos_token_ids)
        assert r.answer_token_ids == expect, K
        assert r.baseline_logprob == pytest.approx(reference.baseline_logprob(a, K, masked), abs=1e-3)


def test_the_reduced_rerun_is_on_exactly_where_declared(fam):
    """On: at every K the rerun drops exactly the image positions under strategy all, and the
    analysis' self-check compared it with the full pass. Off: never, and no such check."""
    e, a = fam.engine, fam.a
    st = e._state(a, lambda _p: None)
    image = set(a.image_positions.tolist())
    for K in range(a.num_layers):
        kept = e._kept_positions(st, e._truncation(a, st, K, "all", None, 0))
        if not _reduced(fam):
            assert kept is None, K
            continue
        assert kept is not None, K
        assert sorted(set(range(len(a.tokens))) - image) == kept.tolist(), K
    check = next((c for c in a.checks if c.name == "reduced-rerun-equals-full"), None)
    if _reduced(fam):
        assert e.adapter.reduced_rerun and check is not None and check.passed, check
    else:
        assert not e.adapter.reduced_rerun and check is None, REDUCED_OFF[fam.spec.FAMILY]


@pytest.mark.parametrize("strategy,keep", [("all", None), ("top", 3), ("random", 2)])
def test_the_reduced_rerun_equals_the_full_masked_pass(fam, strategy, keep):
    """At several K: the same logits (1e-4 of their scale), the same keys and values at the
    kept positions, and, from the full-length KV it splices back, the same next cached
    decoding step past the answer (positions, M-RoPE included, continue the baseline's)."""
    import torch

    e, a = fam.engine, fam.a
    st = e._state(a, lambda _p: None)
    L = a.num_layers
    for K in sorted({0, 1, L // 2, L - 1}):
        trunc = e._truncation(a, st, K, strategy, keep, 7)
        kept = e._kept_positions(st, trunc)
        if not _reduced(fam):  # full pass only, under every strategy (REDUCED_OFF says why)
            assert kept is None, (K, REDUCED_OFF[fam.spec.FAMILY])
            continue
        assert kept is not None and len(kept) < len(a.tokens), K
        fast, fast_kv = e._logits_from_layer(st, trunc)
        full, full_kv = e._logits_from_layer(st, trunc, reduced=False)
        scale = float(full.abs().max())
        np.testing.assert_allclose(fast.numpy(), full.numpy(), atol=1e-4 * scale, err_msg=f"K={K}")
        spliced, whole = fast_kv(), full_kv()
        for i in range(K, L):
            for x, y in zip(spliced[i], whole[i], strict=True):
                np.testing.assert_allclose(x[:, :, kept].numpy(), y[:, :, kept].numpy(),
                                           atol=1e-5, err_msg=f"K={K} layer {i}")
        ids = list(a.answer_token_ids)
        with torch.no_grad():
            step_fast = e._cached_step(st, trunc, spliced, ids)
            step_full = e._cached_step(st, trunc, whole, ids)
        np.testing.assert_allclose(step_fast.numpy(), step_full.numpy(),
                                   atol=1e-4 * float(step_full.abs().max()), err_msg=f"K={K}")
        # Greedy decoding past the teacher-forced sequence (extrapolated positions) from each.
        assert e._continue(st, trunc, spliced, ids, 3) == e._continue(st, trunc, whole, ids, 3), K


def test_the_comparison_sees_a_wrong_cut(fam, monkeypatch):
    """The equality above is not vacuous: handing the kept positions the ids 0..n-1 (what a
    rerun that forgot their own position ids would do) changes the logits, and so, where
    DeepStack adds features to kept image positions, does giving them each other's rows."""
    import torch

    e, a = fam.engine, fam.a
    st = e._state(a, lambda _p: None)
    cut = e.adapter.reduced_text_kwargs
    if not _reduced(fam):
        # Full pass only: a rerun never cuts the inputs, so even a wrong cut changes nothing.
        def never(kwargs, keep):
            raise AssertionError(f"cut the inputs: {REDUCED_OFF[fam.spec.FAMILY]}")

        monkeypatch.setattr(e.adapter, "reduced_text_kwargs", never)
        logits, _ = e._logits_from_layer(st, e._truncation(a, st, 0, "all", None, 0))
        assert torch.isfinite(logits).all()
        return

    def renumbered(kwargs, keep):
        out = cut(kwargs, keep)
        pos = out["position_ids"]
        out["position_ids"] = torch.arange(pos.shape[-1]).expand_as(pos).contiguous()
        return out

    def swapped(kwargs, keep):
        out = cut(kwargs, keep)
        out["deepstack_visual_embeds"] = [f.flip(0) for f in out["deepstack_visual_embeds"]]
        return out

    wrong = [(renumbered, "all", None)]
    if "deepstack_visual_embeds" in st.text_kwargs:
        wrong.append((swapped, "top", 3))
    for fn, strategy, keep in wrong:
        monkeypatch.setattr(e.adapter, "reduced_text_kwargs", fn)
        trunc = e._truncation(a, st, 0, strategy, keep, 0)
        fast, _ = e._logits_from_layer(st, trunc)
        full, _ = e._logits_from_layer(st, trunc, reduced=False)
        assert float((fast - full).abs().max()) > 1e-3 * float(full.abs().max()), fn.__name__


def test_regions_are_the_pixels_each_token_is_computed_from(fam):
    spec = fam.spec
    w, h = spec.IMAGE_SIZE
    image = position_image(w, h)
    a = fam.engine.analyze(image, spec.QUESTION, max_new_tokens=1)
    model, processor = load_eager(fam.path)
    support = pixel_support(model, processor, image, a.prompt, sample_tokens(a),
                            getattr(spec, "to_channels", channels_last3))
    check_regions(a, support, getattr(spec, "TOLERANCE", 3.0))


def test_snapshot_round_trip_and_rerun(fam, tmp_path):
    e, a = fam.engine, fam.a
    b = flowtui.load_snapshot(a.save(tmp_path / "s.flowtui"))
    assert b.views == a.views and b.image_grid == a.image_grid
    np.testing.assert_array_equal(b.token_regions, a.token_regions)
    np.testing.assert_array_equal(b.feature_positions, a.feature_positions)
    e._states.clear()  # the rebuild path a reopened snapshot takes
    for K in (0, a.num_layers // 2):
        r1 = e.truncate(b, K, record=False)
        r2 = e.truncate(a, K, record=False)
        assert r1.answer_token_ids == r2.answer_token_ids
        assert r1.baseline_logprob == pytest.approx(r2.baseline_logprob, abs=1e-5)


def test_every_supported_model_type_has_a_tiny_model_and_a_readme_row():
    from pathlib import Path

    from flowtui.engine.families import adapters

    tiny_types = {m.FAMILY for m in FAMILIES.values()}
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = readme[readme.index("## Supported models"):readme.index("## The built-in toy model")]
    for cls in adapters():
        assert cls.family in tiny_types, f"{cls.family} has no tiny model in flowtui/selftest/tiny"
        for model_type in cls.model_types:
            assert f"`{model_type}`" in table, f"{model_type} missing from the README's table"


@pytest.fixture(scope="module")
def mistral3(tiny_models):
    spec = FAMILIES["mistral3"]
    engine = tiny_models.engine("mistral3")
    return engine, engine.analyze(smooth_image(spec.IMAGE_SIZE), spec.QUESTION, max_new_tokens=4,
                                  cam=False, self_check=False)


def test_a_sliding_window_refuses_the_reduced_rerun_only_where_it_hides_keys(mistral3,
                                                                               monkeypatch):
    """A window counts positions, and the reduced rerun drops positions: on Mistral's decoder
    (which reads its window at every forward) a window shorter than the sequence changes the
    full pass and refuses the reduced one; a window as long as the sequence hides nothing, and
    the reduced rerun runs and equals the full pass."""
    e, a = mistral3
    st = e._state(a, lambda _p: None)
    cfg = e.adapter.text_model.config
    assert cfg is e.adapter.text_config and cfg.sliding_window is None
    N = len(a.tokens)
    trunc = e._truncation(a, st, 1, "all", None, 0)
    plain, _ = e._logits_from_layer(st, trunc, reduced=False)
    scale = 1e-4 * float(plain.abs().max())

    monkeypatch.setattr(cfg, "sliding_window", N // 2)
    assert e._kept_positions(st, trunc) is None
    windowed, _ = e._logits_from_layer(st, trunc, reduced=False)
    assert float((windowed - plain).abs().max()) > 10 * scale, "the window hid nothing"

    monkeypatch.setattr(cfg, "sliding_window", N)
    assert e._kept_positions(st, trunc) is not None
    fast, _ = e._logits_from_layer(st, trunc)
    full, _ = e._logits_from_layer(st, trunc, reduced=False)
    np.testing.assert_allclose(fast.numpy(), full.numpy(), atol=scale)
    np.testing.assert_allclose(full.numpy(), plain.numpy(), atol=scale)
