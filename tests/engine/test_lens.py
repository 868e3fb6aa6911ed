"""The logit lens on image tokens, on a tiny model of every family, against the independent
eager reference (flowtui/selftest/lens_reference.py: the model's own forward cut after each
layer): top-5 ids exact, probabilities to 1e-4; and the chunking does not change a number."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from flowtui.engine import compat
from flowtui.engine.errors import InputError
from flowtui.engine.lens import lens_rows, word_token
from flowtui.selftest import tiny
from flowtui.selftest.lens_reference import lens_eager

# Not in the fast lane (`-m "not slow"`): every family's lens against the eager reference.
pytestmark = pytest.mark.slow

FAMILIES = tiny.discover()


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def fam(request, tiny_models):
    spec = FAMILIES[request.param]
    path, engine = tiny_models.path(request.param), tiny_models.engine(request.param)
    a = tiny_models.analysis(request.param)
    return SimpleNamespace(name=request.param, spec=spec, path=path, engine=engine, a=a)


def _check(lens, ref) -> None:
    ids, probs, word = ref
    L, N = word.shape
    assert lens.top_ids.shape == (L, N, 5) and lens.top_probs.shape == (L, N, 5)
    assert lens.word_prob.shape == (L, N)
    np.testing.assert_array_equal(lens.top_ids, ids)
    np.testing.assert_allclose(lens.top_probs, probs, atol=1e-4)
    np.testing.assert_allclose(lens.word_prob, word, atol=1e-4)


def test_lens_equals_the_eager_reference(fam):
    e, a = fam.engine, fam.a
    lens = e.lens(a)
    assert a.lens is lens  # the default word is kept with the analysis
    assert lens.word_id == a.answer_token_ids[0]
    assert lens.top_ids.shape[1] == a.num_features
    _check(lens, lens_eager(fam.path, a, lens.word_id))
    # The lens is not trivially constant: some token's top word changes across layers.
    assert len({tuple(lens.top_ids[layer, :, 0]) for layer in range(a.num_layers)}) > 1


def test_a_typed_word_is_its_own_lens(fam):
    e, a = fam.engine, fam.a
    e.lens(a)
    default = a.lens
    # A word of the question, which every family's tokenizer has.
    wid, text = word_token(e.tokenizer, "circle")
    other = e.lens(a, "circle")
    assert a.lens is default and other.word_id == wid and text
    _check(other, lens_eager(fam.path, a, wid))


def test_chunking_changes_nothing():
    torch.manual_seed(0)
    norm = torch.nn.LayerNorm(16)
    head = torch.nn.Linear(16, 50)
    x = torch.randn(23, 16)
    whole = lens_rows(norm, head, x, word_id=7, chunk_elements=1 << 20)
    for chunk in (1, 50, 120, 50 * 23 - 1):  # one row, one row, two rows, all but one element
        parts = lens_rows(norm, head, x, word_id=7, chunk_elements=chunk)
        np.testing.assert_array_equal(parts[0], whole[0])
        # A matmul over fewer rows may round differently in the last bit, no more.
        np.testing.assert_allclose(parts[1], whole[1], rtol=1e-5)
        np.testing.assert_allclose(parts[2], whole[2], rtol=1e-5)
    p = torch.softmax(head(norm(x)), -1)
    np.testing.assert_allclose(whole[2], p[:, 7].detach().numpy(), atol=1e-6)


def test_a_bad_word_is_a_clear_error(toy_engine):
    with pytest.raises(InputError, match="empty"):
        word_token(toy_engine.tokenizer, "  ")
    with pytest.raises(InputError, match="vocabulary"):
        word_token(toy_engine.tokenizer, "zebra")  # the toy's word-level vocabulary has no zebra
    assert word_token(toy_engine.tokenizer, "Red")[1] == "red"  # its normaliser lowercases


def test_final_norm_is_where_compat_says():
    from transformers import LlamaConfig, LlamaModel

    m = LlamaModel(LlamaConfig(num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                               hidden_size=8, intermediate_size=8, vocab_size=8))
    assert compat.final_norm(m) is m.norm
