"""render/maps.py: the attention map's per-view scale and the sink-token rule (plain numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from flowtui.engine.analysis import grid_regions
from flowtui.render.cells import CamRenderer
from flowtui.render.maps import (
    SINK_FACTOR,
    attention_map,
    cam_map,
    map_threshold,
    sink_mask,
)


def test_sinks_are_far_above_the_median():
    v = np.full(100, 1.0)
    v[[3, 50]] = [50.0, 11.0]
    v[7] = 9.0  # large, but under 10x the median: part of the map
    assert np.flatnonzero(sink_mask(v)).tolist() == [3, 50]
    assert not sink_mask(np.full(100, 0.3)).any()  # a flat map has no sinks
    assert not sink_mask(np.zeros(100)).any()


def test_sinks_are_at_most_the_largest_two_percent():
    v = np.full(100, 1.0)
    v[[10, 20, 30, 40]] = [20.0, 40.0, 30.0, 50.0]
    assert np.flatnonzero(sink_mask(v)).tolist() == [20, 40]  # 2 of 100: the two largest
    # ceil(2%): a small view may still have one sink.
    small = np.array([1.0, 1.0, 1.0, 100.0, 1.0])
    assert sink_mask(small).tolist() == [False, False, False, True, False]
    # A zero median: any positive token is far above it, still capped.
    zero = np.zeros(200)
    zero[[5, 6, 7, 8, 9]] = [1, 2, 3, 4, 5]
    assert np.flatnonzero(sink_mask(zero)).tolist() == [6, 7, 8, 9]


def test_sink_mask_ignores_non_finite_values():
    v = np.full(50, 1.0)
    v[0], v[1] = np.nan, 30.0
    assert np.flatnonzero(sink_mask(v)).tolist() == [1]
    assert not sink_mask(np.full(4, np.nan)).any()
    assert sink_mask(np.array([3.0, 3.0 * SINK_FACTOR + 1e-6, 3.0]))[1]


def test_attention_scale_per_layer_and_view():
    # Two views of 100 tokens; view 1's values are 10x view 0's, with one sink each.
    base = np.linspace(1.0, 2.0, 100)
    layer = np.concatenate([base, 10 * base])
    layer[[0, 100]] = [40.0, 500.0]
    att = np.stack([layer, 2 * layer]).astype(np.float32)
    views = np.repeat([0, 1], 100)
    m = attention_map(att, views, 2)
    np.testing.assert_allclose(m.vmax, [[40, 500], [80, 1000]])
    assert m.values.max() == pytest.approx(1.0) and m.values.min() >= 0
    np.testing.assert_allclose(m.values[0, :100], att[0, :100] / 40, rtol=1e-6)
    assert not m.sinks.any() and m.sink_count(0, np.arange(200)) == 0

    x = attention_map(att, views, 2, exclude_sinks=True)
    np.testing.assert_allclose(x.vmax, [[2, 20], [4, 40]], rtol=1e-6)
    assert x.sinks[:, [0, 100]].all() and x.sinks.sum() == 4
    assert x.sink_count(1, np.arange(100)) == 1
    assert x.values[0, 0] == 1.0 and x.values[0, 100] == 1.0  # clipped to the top colour
    np.testing.assert_allclose(x.values[0, 1:100], att[0, 1:100] / 2, rtol=1e-6)
    # The peak skips sinks; without the toggle the sink is the peak.
    assert m.peak(0, np.arange(100)) == 0 and x.peak(0, np.arange(100)) == 99


def test_attention_all_zero_and_cam_as_stored():
    m = attention_map(np.zeros((2, 5), np.float32), None, None, exclude_sinks=True)
    assert not m.values.any() and not m.vmax.any() and m.peak(0, np.arange(5)) is None
    cam = np.array([[0.0, 0.5, 1.0], [0.0, 0.0, 0.0]], np.float32)
    c = cam_map(cam, np.array([0, 1, 1]), 2)
    assert c.values is not None and np.array_equal(c.values, cam)
    assert c.vmax.shape == (2, 2) and (c.vmax == 1).all() and not c.sinks.any()
    assert c.peak(0, np.array([0, 1])) == 1 and c.peak(1, np.arange(3)) is None


def test_threshold_applies_to_the_cam_only():
    assert map_threshold("cam", 0.5) == 0.5
    assert map_threshold("attention", 0.5) == 0.0


def test_renderer_with_values_shares_the_image_not_the_cells():
    img = np.full((8, 8, 3), 120, np.uint8)
    regions = grid_regions(2, 2, (0, 0, 8, 8))
    cam = CamRenderer(img, np.array([[1.0, 0.0, 0.0, 0.0]], np.float32), regions)
    other = cam.with_values(np.array([[0.0, 0.0, 0.0, 1.0]], np.float32))
    a, b = cam.cells(0, 8, 4, threshold=0.0), other.cells(0, 8, 4, threshold=0.0)
    assert not np.array_equal(a.top, b.top)
    assert other._owners is cam._owners and other._cells is not cam._cells
    assert np.array_equal(cam.cells(0, 8, 4, threshold=0.0).top, a.top)
