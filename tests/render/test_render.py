"""render/: colormaps, half-block cells, sparklines and PNG export (plain numpy, no UI)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from flowtui.engine.analysis import grid_regions
from flowtui.render.cells import (
    DISPLAY_MODES,
    GREY_FLOOR,
    PEAK_RGB,
    CamRenderer,
    CellGrid,
    cam_overlay_image,
    compose_pixels,
    fit_cells,
    muted,
    outline,
    owner_map,
    paint,
    region_box,
)
from flowtui.render.colormaps import (
    COLORMAPS,
    apply_colormap,
    colormap_lut,
    logprob_rgb,
    next_colormap,
)
from flowtui.render.png import save_cam_pngs
from flowtui.render.sparkline import spark_levels, sparkline


def test_render_imports_no_rich_or_textual():
    import subprocess

    code = "import flowtui.render, flowtui.render.png, sys; print(any(m.split('.')[0] in ('rich','textual') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", COLORMAPS)
def test_colormap_tables(name):
    lut = colormap_lut(name)
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert not lut.flags.writeable


def test_colormap_endpoints():
    assert colormap_lut("viridis")[0].tolist() == [0x44, 0x01, 0x54]
    assert colormap_lut("viridis")[255].tolist() == [0xFD, 0xE7, 0x25]
    assert colormap_lut("jet")[0].tolist() == [0, 0, 128]  # dark blue, as in the paper
    assert colormap_lut("jet")[255].tolist() == [128, 0, 0]  # dark red
    assert colormap_lut("grey")[255].tolist() == [255, 255, 255]
    assert colormap_lut("magma")[0].tolist() == [0, 0, 4]
    with pytest.raises(ValueError):
        colormap_lut("rainbow")


def test_apply_colormap_and_cycle():
    out = apply_colormap(np.array([[0.0, 1.0], [np.nan, 0.5]]), "grey")
    assert out.shape == (2, 2, 3)
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 1].tolist() == [255, 255, 255]
    assert out[1, 0].tolist() == [0, 0, 0]  # NaN -> 0
    assert [next_colormap(c) for c in COLORMAPS] == list(COLORMAPS[1:]) + [COLORMAPS[0]]


def test_logprob_colours_go_red_to_green():
    red, green = logprob_rgb(-10.0), logprob_rgb(0.0)
    assert red[0] > red[1] and green[1] > green[0]


@pytest.mark.parametrize(
    "hw,box,expect",
    [((100, 100), (40, 40), (40, 20)), ((100, 100), (80, 10), (20, 10)), ((50, 200), (60, 30), (60, 8))],
)
def test_fit_cells_keeps_aspect(hw, box, expect):
    assert fit_cells(hw, *box) == expect


def test_fit_cells_degenerate():
    assert fit_cells((10, 10), 0, 5) == (0, 0)


def _scene():
    img = np.full((8, 8, 3), 200, dtype=np.uint8)
    cam = np.zeros((8, 8), dtype=np.float32)
    cam[:4, :4] = 1.0
    cam[4:, 4:] = 0.3
    return img, cam


def test_compose_modes():
    img, cam = _scene()
    assert compose_pixels(img, cam, "image") is img
    heat = compose_pixels(img, cam, "heatmap", 0.5, "grey")
    assert heat[0, 0].tolist() == [255, 255, 255]
    assert heat[7, 7].tolist() == [0, 0, 0]  # below threshold: the colormap's lowest colour
    over = compose_pixels(img, cam, "overlay", 0.5, "grey")
    assert over[7, 7].tolist() == muted(img)[7, 7].tolist()  # below threshold: the dim image
    assert over[0, 0].tolist() == [255, 255, 255]  # above it: the colormap's own colour
    over_low = compose_pixels(img, cam, "overlay", 0.2, "grey")
    assert over_low[7, 7].tolist() != over[7, 7].tolist()  # a lower threshold shows more
    with pytest.raises(ValueError):
        compose_pixels(img, cam, "sideways")


def test_cellgrid_pairs_rows():
    px = np.arange(5 * 2 * 3, dtype=np.uint8).reshape(5, 2, 3)
    grid = CellGrid.from_pixels(px)
    assert (grid.rows, grid.cols) == (3, 2)
    assert np.array_equal(grid.top[1], px[2]) and np.array_equal(grid.bottom[1], px[3])
    assert np.array_equal(grid.bottom[2], px[4])  # odd last row doubles


def test_renderer_caches_and_differs_per_layer():
    img = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    cam = np.zeros((3, 36), dtype=np.float32)
    cam[0, 0] = 1.0
    cam[1, 35] = 1.0
    r = CamRenderer(img, cam, grid_regions(6, 6, (0, 0, 96, 64)))
    cols, rows = r.fit(48, 30)
    assert (cols, rows) == (48, 16)
    a = r.cells(0, cols, rows)
    assert r.cells(0, cols, rows) is a  # cached
    b = r.cells(1, cols, rows)
    assert not np.array_equal(a.top, b.top)
    plain = r.cells(2, cols, rows)  # all-zero CAM: overlay is the dimmed grey image alone
    image = r.cells(2, cols, rows, mode="image")
    assert np.array_equal(plain.top, muted(image.top))
    for mode in DISPLAY_MODES:
        assert r.cells(0, cols, rows, mode=mode).top.shape == (rows, cols, 3)


def test_sparkline_shared_scale():
    assert sparkline(np.array([0.0, 0.5, 1.0]), 0.0, 1.0) == " ▄█"
    assert spark_levels(np.array([0.001]), 0.0, 1.0).tolist() == [1]  # non-zero is visible
    assert sparkline(np.array([0.2, 0.2]), 0.2, 0.2) == "  "
    assert sparkline(np.array([1.0]), 0.0, 1.0, width=3) == "███"


def test_png_export(tmp_path):
    img, cam = _scene()
    cams = np.stack([cam, cam[::-1], np.zeros_like(cam)]).reshape(3, 64)
    regions = grid_regions(8, 8, (0, 0, 8, 8))
    paths = save_cam_pngs(img, cams, regions, tmp_path / "out", colormap="jet")
    assert [p.name for p in paths] == ["layer-00.png", "layer-01.png", "layer-02.png"]
    with Image.open(paths[1]) as im:
        # A figure: the 336-pixel picture, a title above and a colour bar beside it.
        assert im.width > 336 + 40 and im.height > 336 and im.mode == "RGB"
        assert im.text["Title"] == "LLaVA-CAM · layer 1/2 · view image · overlay"
        assert im.text["Colorbar"] == "jet · threshold 0.50"
        assert "Peak" not in im.text  # no marks asked for
        px = np.asarray(im)
    assert cam_overlay_image(img, cams[0], regions).shape == (336, 336, 3)
    # The colour bar: a column right of the picture running through the colormap's colours.
    lut = {tuple(int(c) for c in rgb) for rgb in colormap_lut("jet")}
    right = px[:, int(px.shape[1] * 0.8):]
    runs = [sum(tuple(int(c) for c in p) in lut for p in right[:, x]) for x in range(right.shape[1])]
    assert max(runs) > 0.6 * px.shape[0]


def test_png_export_of_a_scaled_map_names_its_scale_and_marks_the_peak(tmp_path):
    img = np.full((30, 30, 3), 200, np.uint8)
    regions = grid_regions(3, 3, (0, 0, 30, 30))
    values = np.zeros((2, 9), np.float32)
    values[:, 8] = 1.0
    paths = save_cam_pngs(img, values, regions, tmp_path, views=["global"], mode="heatmap",
                          threshold=0.0, colormap="viridis", what="attention",
                          vmax=np.array([[0.25], [0.0125]], np.float32),
                          marks=np.array([[8], [-1]]), notes=[["3 sinks"], [""]])
    with Image.open(paths[0]) as first, Image.open(paths[1]) as second:
        assert first.text["Title"] == "attention · layer 0/1 · view global · heatmap"
        assert first.text["Colorbar"] == "viridis · 0..0.25"
        assert second.text["Colorbar"] == "viridis · 0..0.0125"
        assert first.text["Peak"] == "□ peak token" and first.text["Comment"] == "3 sinks"
        assert "Peak" not in second.text
        magenta = [(np.asarray(im) == PEAK_RGB).all(axis=-1).sum() for im in (first, second)]
    # The peak's frame (and the magenta legend under the picture) only where it is marked.
    assert magenta[0] > 100 and magenta[1] == 0


def test_png_export_one_file_per_layer_and_view(tmp_path):
    img = np.full((20, 40, 3), 100, np.uint8)
    regions = np.concatenate([grid_regions(1, 2, (0, 0, 40, 20)), grid_regions(1, 1, (0, 0, 40, 20))])
    values = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]], np.float32)
    paths = save_cam_pngs(img, values, regions, tmp_path, np.array([0, 0, 1]), ["tiles", "global/x"])
    assert [p.name for p in paths] == [
        "layer-00-tiles.png", "layer-00-global_x.png", "layer-01-tiles.png", "layer-01-global_x.png"
    ]
    with Image.open(paths[0]) as left_hot, Image.open(paths[2]) as right_hot:
        a, b = np.asarray(left_hot), np.asarray(right_hot)
    h, w = a.shape[:2]
    assert not np.array_equal(a[:, : w // 2], b[:, : w // 2])  # the hot half moved


def test_owner_map_paints_regions_on_the_original_image():
    regions = np.array([[0, 0, 50, 100], [50, 0, 100, 100], [np.nan] * 4, [10, 10, 20, 20]], np.float32)
    owner = owner_map(regions, np.array([0, 1, 2]), (100, 100), (10, 10))
    assert (owner[:, :5] == 0).all() and (owner[:, 5:] == 1).all()  # the NaN token paints nothing
    # Later tokens paint over earlier ones; a token outside the view paints nothing.
    owner = owner_map(regions, np.array([0, 3]), (100, 100), (10, 10))
    assert owner[1, 1] == 3 and owner[5, 2] == 0 and owner[5, 7] == -1
    values = paint(np.array([0.2, 0.4, 0.6, 0.8]), owner)
    assert values[1, 1] == pytest.approx(0.8) and np.isnan(values[5, 7])


def test_unseen_pixels_are_dimmed_not_coloured():
    img = np.full((4, 4, 3), 210, np.uint8)
    cam = np.full((4, 4), np.nan, np.float32)
    cam[:, :2] = 1.0
    for mode, dim in (("overlay", muted(img)[0, 0, 0] // 3), ("heatmap", 70)):
        out = compose_pixels(img, cam, mode, 0.5, "grey")
        assert out[0, 3].tolist() == [dim] * 3  # the model never saw it
        assert out[0, 0].tolist() == [255] * 3


@pytest.mark.parametrize("colormap", COLORMAPS)
def test_overlay_colours_are_the_colour_bars_own(colormap):
    """Teal over red, yellow over blue: every heat pixel is exactly a colour of the bar, and
    every other pixel is grey (no hue of the image competes with the map's)."""
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    img[:12] = (220, 30, 30)  # red top half
    cam = rng.random((24, 24)).astype(np.float32)
    out = compose_pixels(img, cam, "overlay", 0.5, colormap)
    hot = cam >= 0.5
    assert np.array_equal(out[hot], apply_colormap(cam, colormap)[hot])
    cold = out[~hot]
    assert (cold[:, 0] == cold[:, 1]).all() and (cold[:, 1] == cold[:, 2]).all()
    assert cold.max() <= GREY_FLOOR + 0.4 * 255 + 1


def test_muted_is_a_dim_grey_of_the_luminance():
    img = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0]]], np.uint8)
    grey = muted(img)
    assert grey[0, 0].tolist() == [126] * 3 and grey[0, 1].tolist() == [24] * 3
    assert grey[0, 2, 0] == grey[0, 2, 1] == grey[0, 2, 2] < 126


def test_peak_region_is_outlined_on_the_cells():
    img = np.full((60, 60, 3), 200, np.uint8)
    regions = grid_regions(3, 3, (0, 0, 60, 60))
    values = np.zeros((1, 9), np.float32)
    values[0, 4] = 1.0  # the centre token
    r = CamRenderer(img, values, regions)
    marked = r.cells(0, 30, 15, mark=4)
    plain = r.cells(0, 30, 15)
    px = np.concatenate([marked.top[:, None], marked.bottom[:, None]], axis=1).reshape(30, 30, 3)
    magenta = (px == PEAK_RGB).all(axis=-1)
    ys, xs = np.nonzero(magenta)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10, 19, 10, 19)  # the centre third
    assert not magenta[11:19, 11:19].any()  # a frame: the heat shows inside it
    assert not np.array_equal(marked.top, plain.top)
    assert r.cells(0, 30, 15, mark=4) is marked  # cached per mark


def test_region_box_and_outline_edges():
    assert region_box(np.array([np.nan] * 4), (10, 10), (10, 10)) is None
    assert region_box(np.array([0, 0, 10, 10]), (10, 10), (20, 20)) == (0, 0, 20, 20)
    assert region_box(np.array([-5, -5, 50, 3]), (10, 10), (10, 10)) == (0, 0, 10, 3)
    px = np.zeros((4, 4, 3), np.uint8)
    out = outline(px, (1, 1, 2, 2))  # one pixel: filled
    assert out[1, 1].tolist() == list(PEAK_RGB) and out.sum() == sum(PEAK_RGB)
    assert outline(px, None) is px


def test_png_marks_the_peak():
    img = np.full((30, 30, 3), 200, np.uint8)
    regions = grid_regions(3, 3, (0, 0, 30, 30))
    values = np.zeros(9, np.float32)
    values[8] = 1.0
    out = cam_overlay_image(img, values, regions, mark=8)
    magenta = (out == PEAK_RGB).all(axis=-1)
    assert magenta[-1, -1] and not magenta[0, 0] and magenta[224, 300]
