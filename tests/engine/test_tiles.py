"""The GotOcr2 tile layout shared by InternVL and Aya Vision, against the image processor itself
over many shapes (cheap: no model). The families' region tests check the pixels end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import GotOcr2ImageProcessorPil

from flowtui.engine.errors import InputError
from flowtui.engine.families._tiles import tile_layout

TILE, SIDE = 28, 2  # 2x2 tokens per tile


def _inputs(ip, size: tuple[int, int], **kwargs) -> dict[str, torch.Tensor]:
    out = ip(images=[Image.new("RGB", size)], crop_to_patches=True, return_tensors="pt", **kwargs)
    n = int(out["num_patches"][0])
    return {"input_ids": torch.full((1, n * SIDE * SIDE), 7), "pixel_values": out["pixel_values"]}


@pytest.mark.parametrize("size", [(181, 119), (119, 181), (60, 60), (300, 30), (31, 400),
                                  (500, 500), (97, 150), (640, 480)])
@pytest.mark.parametrize("max_patches", [1, 6, 12])
def test_layout_follows_the_processors_tiles(size, max_patches):
    ip = GotOcr2ImageProcessorPil(size={"height": TILE, "width": TILE}, max_patches=max_patches)
    inputs = _inputs(ip, size)
    n_images = inputs["pixel_values"].shape[0]
    layout = tile_layout(ip, size, inputs, 7, "thumbnail")
    w, h = size
    assert len(layout) == n_images * SIDE * SIDE
    if n_images == 1:
        assert layout.views == ["image"] and layout.grid == (SIDE, SIDE)
        np.testing.assert_allclose(layout.regions[[0, -1]], [[0, 0, w / 2, h / 2], [w / 2, h / 2, w, h]])
        return
    assert layout.views == ["tiles", "thumbnail"] and layout.grid is None
    tiles = layout.regions[layout.token_views == 0]
    # The tiles cover the whole image exactly once: their areas add up to the image's.
    area = ((tiles[:, 2] - tiles[:, 0]) * (tiles[:, 3] - tiles[:, 1])).sum()
    assert area == pytest.approx(w * h, rel=1e-5)
    assert tiles[:, 0].min() == 0 and tiles[:, 2].max() == pytest.approx(w)
    thumb = layout.regions[layout.token_views == 1]
    np.testing.assert_allclose(thumb[-1], [w / 2, h / 2, w, h], rtol=1e-6)


def test_tiles_from_other_settings_are_refused():
    ip = GotOcr2ImageProcessorPil(size={"height": TILE, "width": TILE}, max_patches=6)
    inputs = _inputs(ip, (181, 119), max_patches=2)  # the call overrides the saved setting
    with pytest.raises(InputError, match="tile settings"):
        tile_layout(ip, (181, 119), inputs, 7, "thumbnail")
