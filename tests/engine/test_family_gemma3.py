"""Gemma 3 beyond the generic family test: pan & scan (several image blocks with text between
them, views "global" and "crops") and proof that the tiny model's masks matter.

The references call the processor with pan & scan as transformers documents it, as call-time
options (`processor(..., do_pan_and_scan=True, ...)`), not through flowtui's adapter.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import test_families as generic
import torch
from support.images import smooth_image
from transformers import Gemma3ImageProcessorPil

from flowtui.engine.families.gemma3 import pan_and_scan_boxes
from flowtui.selftest import reference as references
from flowtui.selftest.reference import full_inputs, load_eager
from flowtui.selftest.tiny import gemma3

# Not in the fast lane (`-m "not slow"`): Gemma 3's tiny model against the references.
pytestmark = pytest.mark.slow


class PanAndScan:
    """A processor whose every call asks for pan & scan, as a transformers user would."""

    def __init__(self, processor) -> None:
        self._processor = processor

    def __getattr__(self, name: str):
        return getattr(self._processor, name)

    def __call__(self, *args, **kwargs):
        return self._processor(*args, **{**gemma3.PAN_AND_SCAN, **kwargs})


@pytest.fixture(scope="module")
def pas(tiny_models):
    path = tiny_models.path("gemma3", pan_and_scan=True)
    load = references.load_processor
    patch = pytest.MonkeyPatch()
    patch.setattr(references, "load_processor", lambda *a, **k: PanAndScan(load(*a, **k)))
    spec = SimpleNamespace(FAMILY="gemma3", QUESTION=gemma3.QUESTION,
                           IMAGE_SIZE=gemma3.PAN_AND_SCAN_IMAGE_SIZE, BLOCK=gemma3.BLOCK,
                           TOLERANCE=gemma3.TOLERANCE)
    engine = tiny_models.engine("gemma3", pan_and_scan=True)
    a = engine.analyze(smooth_image(spec.IMAGE_SIZE), spec.QUESTION, max_new_tokens=4)
    yield SimpleNamespace(name="gemma3_pas", spec=spec, path=path, engine=engine, a=a)
    patch.undo()


@pytest.mark.parametrize("size", [(230, 80), (80, 230), (150, 97), (100, 90), (64, 400), (33, 70)])
def test_crop_boxes_are_the_image_processors_crops(size):
    w, h = size
    ip = Gemma3ImageProcessorPil()
    # Each pixel holds its own index, so a crop's first pixel and shape give its box.
    index = np.arange(w * h, dtype=np.int64).reshape(1, h, w)
    crops = ip.pan_and_scan(index, pan_and_scan_min_crop_size=32, pan_and_scan_max_num_crops=4,
                            pan_and_scan_min_ratio_to_activate=1.2)
    expect = []
    for c in crops:
        y, x = divmod(int(c[0, 0, 0]), w)
        expect.append((x, y, x + c.shape[2], y + c.shape[1]))
    assert pan_and_scan_boxes(w, h, 32, 4, 1.2) == expect


def test_pan_and_scan_blocks_groups_and_views(pas):
    a = pas.a
    crops = pan_and_scan_boxes(*gemma3.PAN_AND_SCAN_IMAGE_SIZE, 32, 4, 1.2)
    assert len(crops) == 3 and crops[-1][2] - crops[-1][0] < crops[0][2] - crops[0][0]
    # One block per view image, each from <start_of_image> to <end_of_image>.
    image = a.groups["image"]
    assert len(image) == 1 + len(crops)
    for s, e in image:
        assert a.tokens[s] == "<start_of_image>" and a.tokens[e - 1] == "<end_of_image>"
        assert e - s == 16 + 2
    # The text between the blocks is the user's, and the groups cover every position once.
    covered = np.zeros(len(a.tokens), dtype=int)
    for spans in a.groups.values():
        for s, e in spans:
            covered[s:e] += 1
    assert (covered == 1).all()
    assert len(a.groups["user"]) == len(image)
    assert "crops" in [a.tokens[i] for s, e in a.groups["user"] for i in range(s, e)]
    assert a.views == ["global", "crops"] and a.image_grid is None
    assert np.bincount(a.token_views).tolist() == [16, 16 * len(crops)]
    # The global view covers the whole image; each crop's cells tile its own box.
    glob = a.token_regions[a.token_views == 0]
    assert glob[:, :2].min(0).tolist() == [0, 0]
    assert glob[:, 2:].max(0).tolist() == list(gemma3.PAN_AND_SCAN_IMAGE_SIZE)
    for i, box in enumerate(crops):
        cells = a.token_regions[16 * (i + 1):16 * (i + 2)]
        assert cells[:, :2].min(0).tolist() == list(box[:2])
        assert cells[:, 2:].max(0).tolist() == list(box[2:])
    np.testing.assert_allclose(a.shares.sum(axis=1), 1.0, atol=1e-5)


def test_pan_and_scan_shares_match_eager(pas):
    generic.test_shares_match_eager_output_attentions(pas)


def test_pan_and_scan_cam_matches_the_papers_loop(pas):
    generic.test_cam_matches_the_papers_per_layer_loop(pas)


def test_pan_and_scan_sweep_matches_a_no_cache_masked_loop(pas):
    generic.test_every_k_of_the_sweep_matches_a_no_cache_masked_loop(
        pas, references.MaskedEager(pas.path)
    )


def test_pan_and_scan_regions_by_back_propagation(pas):
    generic.test_regions_are_the_pixels_each_token_is_computed_from(pas)


def test_the_tiny_models_masks_matter(tiny_models):
    """The window is shorter than the sequence and images attend within their block: dropping
    either changes the logits, so a rerun that lost them could not pass the family test."""
    path, engine = tiny_models.path("gemma3"), tiny_models.engine("gemma3")
    a = engine.analyze(smooth_image(gemma3.IMAGE_SIZE), gemma3.QUESTION, max_new_tokens=2)
    model, processor = load_eager(path)
    inputs, P = full_inputs(processor, a)
    assert len(a.tokens) > 2 * model.config.text_config.sliding_window
    assert set(model.config.text_config.layer_types) == {"sliding_attention", "full_attention"}

    def logits(**change):
        with torch.no_grad():
            return model(**{**inputs, **change}).logits[0, P - 1:]

    base = logits()
    assert (base - logits(token_type_ids=torch.zeros_like(inputs["token_type_ids"]))).abs().max() > 1e-3
    model.config.text_config.sliding_window = 4096
    assert (base - logits()).abs().max() > 1e-3
