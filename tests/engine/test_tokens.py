"""Every answer token on its own (docs/definitions.md, "Per-token quantities"), on tiny models
of several families, against independent references: eager output_attentions for the shares and
attention, and the paper's per-layer loop with one answer token's logit as the target for the
CAM."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from support.images import smooth_image

from flowtui.engine import overlap, tokens
from flowtui.engine.snapshot import load_snapshot
from flowtui.selftest import tiny
from flowtui.selftest.reference import cam_per_layer_loop, token_rows_eager

# Not in the fast lane (`-m "not slow"`): tiny family models against the per-token references.
pytestmark = pytest.mark.slow

FAMILIES = ("llava", "qwen2_vl", "gemma3", "idefics3")


@pytest.fixture(scope="module", params=FAMILIES)
def fam(request, tiny_models):
    spec = tiny.discover()[request.param]
    path, engine = tiny_models.path(request.param), tiny_models.engine(request.param)
    image = smooth_image(spec.IMAGE_SIZE)
    a = engine.analyze(image, spec.QUESTION, max_new_tokens=5, per_token=True)
    return SimpleNamespace(name=request.param, spec=spec, path=path, engine=engine, a=a,
                           image=image)


def test_answer_has_several_tokens(fam):
    # A one-token answer would make every per-token check a copy of the whole-answer one.
    assert len(fam.a.answer_token_ids) >= 3


def test_token_shares_and_attention_match_eager_rows(fam):
    a = fam.a
    T, L, H, N = len(a.answer_token_ids), a.num_layers, a.num_heads, a.num_features
    head, attn = token_rows_eager(fam.path, a)
    assert a.token_head_shares.shape == (T, L, H, 4)
    assert a.token_shares.shape == (T, L, 4)
    assert a.token_attention.shape == (T, L, N)
    np.testing.assert_allclose(a.token_head_shares, head, atol=1e-5)
    np.testing.assert_allclose(a.token_shares, head.mean(axis=2), atol=1e-5)
    np.testing.assert_allclose(a.token_attention, attn, atol=1e-5)
    np.testing.assert_allclose(a.token_shares.sum(axis=2), 1.0, atol=1e-5)
    # The whole-answer values are the mean over answer tokens, and stay as they were.
    np.testing.assert_allclose(a.token_shares.mean(axis=0), a.shares, atol=1e-6)
    np.testing.assert_allclose(a.token_attention.mean(axis=0), a.attention_tokens, atol=1e-6)
    # Tokens differ from each other: the per-token rows are not one row repeated.
    assert np.abs(a.token_shares[0] - a.token_shares[-1]).max() > 1e-4


def test_token_cam_matches_the_papers_loop_for_each_token(fam):
    a = fam.a
    T, L, N = len(a.answer_token_ids), a.num_layers, a.num_features
    assert a.token_cam.shape == (T, L, N)
    for t in range(T):
        ref = cam_per_layer_loop(fam.path, a, token=t)
        np.testing.assert_allclose(a.token_cam[t], ref, atol=1e-4, err_msg=f"token {t}")
    assert a.token_cam.min() >= 0 and a.token_cam.max() <= 1 + 1e-6
    # Different targets give different maps somewhere.
    assert np.abs(a.token_cam[0] - a.token_cam[-1]).max() > 1e-3


def test_whole_answer_cam_unchanged_by_per_token(fam):
    a = fam.a
    plain = fam.engine.analyze(fam.image, fam.spec.QUESTION, max_new_tokens=5)
    assert plain.answer_token_ids == a.answer_token_ids
    assert plain.token_cam is None  # only on request: it costs batched backwards
    np.testing.assert_allclose(plain.token_head_shares, a.token_head_shares, atol=1e-6)
    np.testing.assert_allclose(a.cam_tokens, plain.cam_tokens, atol=1e-5)
    np.testing.assert_allclose(a.shares, plain.shares, atol=1e-7)
    np.testing.assert_allclose(a.cam_tokens, cam_per_layer_loop(fam.path, a), atol=1e-4)


def test_per_token_snapshot_round_trip(fam, tmp_path):
    a = fam.a
    b = load_snapshot(a.save(tmp_path / "t.flowtui"))
    for name in ("token_head_shares", "token_attention", "token_cam"):
        np.testing.assert_array_equal(getattr(b, name), getattr(a, name), err_msg=name)
    np.testing.assert_allclose(b.token_shares, a.token_shares, atol=1e-7)


def test_chunks_give_each_targets_own_gradient():
    # logit t of answer token t is (t + 1) * the sum of the site: its gradient is t + 1
    # everywhere, whatever the chunking of the batched backward.
    answer = torch.arange(4)
    feats = torch.tensor([1, 3])
    expect = torch.stack([torch.full((2, 3), float(t + 1)) for t in range(4)])
    for chunk in (1, 3, 8):
        x = torch.randn(1, 5, 3, requires_grad=True)
        site = x * 2.0
        logits = torch.stack([torch.nn.functional.one_hot(torch.tensor(t), 6).float()
                              * site.sum() * (t + 1) for t in range(4)])
        g = tokens.site_gradients(logits, answer, [site], feats, chunk=chunk)[0]
        torch.testing.assert_close(g, expect)


def test_token_overlap_and_changed_words_by_hand():
    assert overlap.words("A red circle, left.") == ["a", "red", "circle", ",", "left", "."]
    assert overlap.token_overlap("a red circle", "a red circle") == 1.0
    assert overlap.token_overlap("a red circle", "A RED circle") == 1.0  # case is not a change
    assert overlap.token_overlap("a red circle and a blue square", "a blue circle") == 2 / 7  # "a circle"
    assert overlap.token_overlap("a red circle", "") == 0.0
    assert overlap.token_overlap("", "") == 1.0
    assert overlap.token_overlap("", "yes") == 0.0
    # Order matters: a subsequence, not a bag of words.
    assert overlap.token_overlap("red blue", "blue red") == 0.5
    assert overlap.word_changes("a red circle", "a Blue circle .") == [
        ("a", False), ("Blue", True), ("circle", False), (".", True)]
