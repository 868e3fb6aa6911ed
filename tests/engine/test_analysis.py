"""Shares, head shares and LLaVA-CAM against independent references (docs/definitions.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.images import random_image

from flowtui.selftest.reference import cam_per_layer_loop, shares_eager


@pytest.mark.parametrize("geometry", ["a", "b"])
def test_shares_match_eager_output_attentions(geometry, tiny_paths, analyses):
    a = analyses[geometry]
    shares, head_shares = shares_eager(tiny_paths[geometry], a)
    assert a.shares.shape == shares.shape
    assert a.head_shares.shape == head_shares.shape
    np.testing.assert_allclose(a.shares, shares, atol=1e-5)
    np.testing.assert_allclose(a.head_shares, head_shares, atol=1e-5)
    np.testing.assert_allclose(a.shares.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("geometry", ["a", "b"])
def test_cam_matches_per_layer_loop_of_the_paper(geometry, tiny_paths, analyses):
    a = analyses[geometry]
    ref = cam_per_layer_loop(tiny_paths[geometry], a).reshape(a.cam.shape)
    assert a.cam.shape == ref.shape
    np.testing.assert_allclose(a.cam, ref, atol=1e-4)
    assert a.cam.min() >= 0 and a.cam.max() <= 1 + 1e-6
    assert (a.cam.reshape(len(a.cam), -1).max(axis=1) > 0).any()


def test_groups_come_from_the_processor_not_offsets(engines, analyses):
    a, b = analyses["a"], analyses["b"]
    # Different system prompts and grids give different spans; none is typed in.
    assert a.image_grid == (6, 6) and b.image_grid == (5, 5)
    assert a.groups["image"] == [(a.groups["system"][0][1], a.groups["system"][0][1] + 36)]
    assert b.groups["image"][0][1] - b.groups["image"][0][0] == 25
    assert a.groups["system"][0][1] != b.groups["system"][0][1]
    for x in (a, b):
        spans = [s for g in ("system", "image", "user", "output") for s in x.groups[g]]
        assert spans[0][0] == 0 and spans[-1][1] == len(x.tokens)
        assert all(p[1] == q[0] for p, q in zip(spans, spans[1:], strict=False))
        assert all(t == "<image>" for t in x.tokens[x.groups["image"][0][0] : x.groups["image"][0][1]])
        assert x.groups["output"] == [(x.prompt_length, x.prompt_length + len(x.answer_token_ids))]


def test_analysis_fields_and_logprobs(engines, analyses):
    a = analyses["a"]
    T = len(a.answer_token_ids)
    assert a.answer_logprobs.shape == (T,) and (a.answer_logprobs <= 0).all()
    assert a.answer == engines["a"].tokenizer.decode(a.answer_token_ids, skip_special_tokens=True).strip()
    assert a.model.num_layers == 4 and a.model.num_heads == 4
    assert a.image_attention.shape == (4, 36) and a.attention_tokens.shape == (4, 36)
    assert a.cam_tokens.shape == (4, 36) and a.cam.shape == (4, 6, 6)
    assert a.views == ["image"] and a.image_grid == (6, 6)
    assert a.token_regions.shape == (36, 4) and a.token_views.shape == (36,)
    assert a.token_regions[0].tolist() == pytest.approx([0, 0, 80 / 6, 64 / 6])
    assert a.cam_settings.site == "post_attention_layernorm"
    assert a.image.dtype == np.uint8 and a.image.shape == (64, 80, 3)


def test_answer_depends_on_image_and_progress_is_reported(engines):
    seen = []
    e = engines["b"]
    a1 = e.analyze(random_image(10), "is there a cat ?", max_new_tokens=3, progress=seen.append)
    stages = [p.stage for p in seen]
    assert stages[0] == "generating" and "capturing" in stages and "cam" in stages
    # The self-checks come last, once the answer, shares and CAM are known.
    assert stages[-1] == "checking" and stages.index("cam") < stages.index("checking")
    a2 = e.analyze(random_image(11), "is there a cat ?", max_new_tokens=3)
    assert not np.allclose(a1.cam, a2.cam)
    assert not np.allclose(a1.shares, a2.shares)


def test_image_attention_is_head_mean_of_last_prompt_row(tiny_paths, analyses):
    import torch

    from flowtui.selftest.reference import full_inputs, load_eager

    a = analyses["b"]
    model, processor = load_eager(tiny_paths["b"])
    inputs, P = full_inputs(processor, a)
    with torch.no_grad():
        att = model(**inputs, output_attentions=True).attentions
    img = a.image_positions
    ref = np.stack([A[0, :, P - 1, img].mean(0).numpy() for A in att])
    np.testing.assert_allclose(a.image_attention, ref, atol=1e-5)


def test_llava_regions_follow_center_crop_and_pad(engines):
    """A centre-cropping processor (as LLaVA-1.5's on the hub) shows the model only the middle
    square; a padding one (LlavaImageProcessor) squeezes the whole image into the square."""
    from transformers import CLIPImageProcessorPil, LlavaImageProcessorPil

    from flowtui.engine.families.llava import LlavaAdapter

    def layout(ip, size):
        class _P:
            image_processor = ip

        adapter = LlavaAdapter(engines["a"].model, _P())
        n = 36
        ids = torch.full((1, n + 3), adapter.image_token_id)
        return adapter.layout(size, {"input_ids": ids[:, :n]})

    cropping = CLIPImageProcessorPil(size={"shortest_edge": 48}, do_center_crop=True,
                                     crop_size={"height": 48, "width": 48})
    reg = layout(cropping, (300, 200)).regions
    assert reg[:, 0].min() == pytest.approx(50) and reg[:, 2].max() == pytest.approx(250)
    assert reg[:, 1].min() == pytest.approx(0) and reg[:, 3].max() == pytest.approx(200)
    assert reg[0].tolist() == pytest.approx([50, 0, 50 + 200 / 6, 200 / 6])
    tall = layout(cropping, (100, 160)).regions
    # 160 px resize to int(48 * 1.6) = 76 rows (truncated, as the processor does), crop 14 off.
    assert tall[:, 1].min() == pytest.approx(14 / 0.475) and tall[:, 3].max() == pytest.approx(62 / 0.475)
    padding = LlavaImageProcessorPil(size={"height": 48, "width": 48}, do_pad=True,
                                     do_center_crop=False)
    lay = layout(padding, (300, 150))
    # Padded to 300x300 (75 px above and below): the first row is all padding, so no region.
    assert np.isnan(lay.regions[:6]).all() and np.isfinite(lay.regions[6:30]).all()
    assert np.nanmin(lay.regions[:, 1]) == pytest.approx(0)
    assert np.nanmax(lay.regions[:, 3]) == pytest.approx(150)
    assert lay.regions[6].tolist() == pytest.approx([0, 0, 50, 25])


def test_analysis_without_cam_skips_the_backward_and_says_so(engines, analyses):
    e, a = engines["a"], analyses["a"]
    b = e.analyze(a.image, a.question, max_new_tokens=a.max_new_tokens, cam=False)
    assert b.answer_token_ids == a.answer_token_ids
    np.testing.assert_allclose(b.shares, a.shares, atol=1e-6)
    assert not b.cam_settings.computed and a.cam_settings.computed
    assert not b.cam_tokens.any()
    r = e.truncate(b, 1, record=False)  # reruns do not need the CAM
    assert r.answer_token_ids == e.truncate(a, 1, record=False).answer_token_ids
