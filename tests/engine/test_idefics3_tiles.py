"""Idefics3 / SmolVLM specifics beyond the generic family test: the tile grid the adapter
predicts against the one the image processor actually makes, over many image shapes and
processor settings, and the regions of an image that is not split (one global view)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from support.regions import check_regions, pixel_support, position_image
from transformers import Idefics3ImageProcessorPil, SmolVLMImageProcessorPil

import flowtui
import flowtui.selftest.tiny.idefics3 as spec
from flowtui.engine.families.idefics3 import tile_geometry
from flowtui.selftest.reference import load_eager

# Not in the fast lane (`-m "not slow"`): tiles of a tiny Idefics3 by back-propagation.
pytestmark = pytest.mark.slow

SIZES = [(150, 97), (97, 150), (34, 34), (20, 33), (33, 20), (300, 31), (31, 300), (101, 100),
         (100, 101), (68, 67), (135, 69), (69, 135), (1, 40), (137, 136), (35, 35), (500, 499)]
SETTINGS = [
    {"size": {"longest_edge": 96}, "max_image_size": {"longest_edge": 34}},
    {"size": {"longest_edge": 136}, "max_image_size": {"longest_edge": 34}},
    {"size": {"longest_edge": 100}, "max_image_size": {"longest_edge": 30}},
    {"size": {"longest_edge": 20}, "max_image_size": {"longest_edge": 34}},  # never split
    {"size": {"height": 70, "width": 50}, "max_image_size": {"longest_edge": 34}},
    {"size": {"longest_edge": 96}, "max_image_size": {"longest_edge": 34}, "do_resize": False},
    {"size": {"longest_edge": 96}, "max_image_size": {"longest_edge": 34},
     "do_image_splitting": False},
]


@pytest.mark.parametrize("cls", [Idefics3ImageProcessorPil, SmolVLMImageProcessorPil])
@pytest.mark.parametrize("settings", SETTINGS)
def test_tile_grid_matches_the_image_processor(cls, settings):
    ip = cls(resample=2, **settings)
    for w, h in SIZES:
        out = ip([Image.new("RGB", (w, h), (200, 10, 10))], return_row_col_info=True)
        rows, cols, tile, _ = tile_geometry(ip, w, h)
        assert (rows, cols) == (out["rows"][0][0], out["cols"][0][0]), (w, h)
        n = rows * cols + 1 if rows else 1
        assert np.asarray(out["pixel_values"]).shape[1:] == (n, 3, tile, tile), (w, h)


def test_unsplit_image_has_one_view_and_its_regions(tmp_path):
    path = spec.build(tmp_path / "m")
    cfg = path / "processor_config.json"
    data = json.loads(cfg.read_text())
    data["image_processor"]["do_image_splitting"] = False
    cfg.write_text(json.dumps(data))
    engine = flowtui.load_engine(str(path), device="cpu", dtype="float32")
    w, h = 61, 45
    image = position_image(w, h)
    a = engine.analyze(image, spec.QUESTION, max_new_tokens=1)
    assert a.views == ["image"] and a.image_grid == (4, 4)
    ((s, e),) = a.groups["image"]
    block = a.tokens[s:e]
    # <fake_token_around_image><global-img> (plain text here, as in SmolVLM v1) <image>x16 <fake...>
    assert block[0] == block[-1] == "<fake_token_around_image>"
    assert "".join(block[1:6]) == "<global-img>" and block[6:-1] == ["<image>"] * 16
    model, processor = load_eager(path)
    support = pixel_support(model, processor, image, a.prompt)
    # The squash to one tile scales 61 px down to 34: bilinear reaches ~2 px further.
    check_regions(a, support, spec.TOLERANCE)
