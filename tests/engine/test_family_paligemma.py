"""PaliGemma beyond the generic family test: the processor's own prompt format (no chat
template, image first) and proof that the tiny model's soft-caps and masks matter, so the
generic test's agreement with the references is not vacuous."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.images import smooth_image

from flowtui.engine import compat
from flowtui.selftest.reference import full_inputs, load_eager
from flowtui.selftest.tiny import paligemma

# Not in the fast lane (`-m "not slow"`): PaliGemma's tiny model against the references.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pg(tiny_models):
    path, engine = tiny_models.path("paligemma"), tiny_models.engine("paligemma")
    a = engine.analyze(smooth_image(paligemma.IMAGE_SIZE), paligemma.QUESTION, max_new_tokens=3)
    return path, engine, a


def test_prompt_is_image_then_bos_prompt_newline(pg):
    _, engine, a = pg
    n = len(a.feature_positions)
    assert a.prompt == "<image>" + paligemma.QUESTION
    assert a.tokens[:n] == ["<image>"] * n and a.tokens[n] == "<bos>"
    assert a.tokens[a.prompt_length - 1] == "\n"
    assert a.groups["system"] == [] and a.groups["image"] == [(0, n)]
    assert a.groups["user"] == [(n, a.prompt_length)]
    assert a.views == ["image"] and a.image_grid == (6, 6)
    _, inputs = engine.adapter.build_inputs(smooth_image(paligemma.IMAGE_SIZE), "a")
    assert "labels" not in inputs and "token_type_ids" in inputs


def test_the_tiny_models_caps_and_masks_matter(pg):
    """Each of these changes the answer's logits: a rerun or reference that dropped one
    could not agree with the other. (The final soft-cap only where the installed transformers'
    PaliGemma forward applies it: 5.23 on.)"""
    path, _, a = pg
    model, processor = load_eager(path)
    inputs, P = full_inputs(processor, a, model_type="paligemma")
    assert (inputs["token_type_ids"][0, P:] == 1).all()
    text = model.config.text_config
    assert len(a.tokens) > 2 * text.sliding_window

    def logits(**change):
        with torch.no_grad():
            return model(**{**inputs, **change}).logits[0, P - 1:]

    base = logits()
    zeros = torch.zeros_like(inputs["token_type_ids"])
    assert (logits(token_type_ids=zeros) - base).abs().max() > 1e-3, "answer marked as prefix"
    attn = [layer.self_attn for layer in model.model.language_model.layers]
    changes = [
        (attn, "attn_logit_softcapping", None),  # each attention layer reads its own copy
        ([text], "sliding_window", 4096),
    ]
    if compat.head_applies_final_softcap(model):
        changes.append(([text], "final_logit_softcapping", None))
    for owners, name, value in changes:
        with pytest.MonkeyPatch.context() as patch:
            for owner in owners:
                patch.setattr(owner, name, value)
            assert (logits() - base).abs().max() > 1e-3, name
    np.testing.assert_allclose(logits().numpy(), base.numpy())
