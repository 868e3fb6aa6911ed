"""Images are analysed as a viewer shows them, and what cannot be an image is refused in one line."""

from __future__ import annotations

import io
import os
import time

import numpy as np
import pytest
from PIL import Image
from support.images import png_declaring

from flowtui.engine.errors import InputError
from flowtui.engine.images import load_image, load_image_notes


def _two_halves(size=(40, 20)):
    """Left half red, right half blue: orientation is visible."""
    a = np.zeros((size[1], size[0], 3), np.uint8)
    a[:, : size[0] // 2] = (255, 0, 0)
    a[:, size[0] // 2 :] = (0, 0, 255)
    return Image.fromarray(a)


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: a viewer rotates it 90° clockwise
    _two_halves().save(path, exif=exif, quality=95)
    img, notes = load_image_notes(path)
    assert img.size == (20, 40)
    top, bottom = np.asarray(img)[2, 10], np.asarray(img)[-3, 10]
    assert top[0] > 200 and top[2] < 60  # red (the old left) is now on top
    assert bottom[2] > 200 and bottom[0] < 60
    assert any("orientation" in n for n in notes)
    _two_halves().save(tmp_path / "plain.jpg")
    assert load_image_notes(tmp_path / "plain.jpg")[1] == []


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_greyscale_keeps_its_scale(tmp_path, fmt):
    ramp = np.linspace(0, 65535, 64 * 32).reshape(32, 64).astype(np.uint16)
    path = tmp_path / f"ramp.{fmt.lower()}"
    Image.fromarray(ramp).save(path, format=fmt)
    out = np.asarray(load_image(path))
    assert out.shape == (32, 64, 3)
    np.testing.assert_allclose(out[..., 0], ramp / 257.0, atol=1.0)  # not clipped to white
    dark = (ramp // 256).astype(np.uint16)  # a dark 16-bit image stays dark
    Image.fromarray(dark).save(path, format=fmt)
    assert np.asarray(load_image(path)).max() <= 1


def test_32_bit_int_and_float_images(tmp_path):
    big = (np.linspace(0, 2**31 - 1, 16 * 16).reshape(16, 16)).astype(np.int32)
    Image.fromarray(big, "I").save(tmp_path / "i32.tiff")
    out = np.asarray(load_image(tmp_path / "i32.tiff"))[..., 0].astype(float)
    np.testing.assert_allclose(out, big / (2**31 - 1) * 255, atol=1.0)
    unit = np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(16, 16)
    Image.fromarray(unit, "F").save(tmp_path / "f.tiff")
    np.testing.assert_allclose(np.asarray(load_image(tmp_path / "f.tiff"))[..., 0], unit * 255,
                               atol=1.0)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparency_is_composited_on_white(tmp_path, mode):
    a = np.zeros((10, 10, 4), np.uint8)
    a[..., 0] = 200
    a[:, 5:, 3] = 255  # left half fully transparent
    im = Image.fromarray(a, "RGBA")
    im = im.convert("LA") if mode == "LA" else im
    path = tmp_path / f"t-{mode}.png"
    im.save(path)
    img, notes = load_image_notes(path)
    px = np.asarray(img)
    assert px[0, 0].tolist() == [255, 255, 255]
    assert px[0, 9].tolist() != [255, 255, 255]
    assert any("transparent" in n for n in notes)


def test_palette_with_transparency_and_cmyk(tmp_path):
    p = Image.new("P", (8, 8), 1)
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.info["transparency"] = 1
    p.save(tmp_path / "p.gif", transparency=1)
    assert np.asarray(load_image(tmp_path / "p.gif"))[0, 0].tolist() == [255, 255, 255]
    cmyk = Image.new("CMYK", (8, 8), (255, 0, 0, 0))  # pure cyan ink
    cmyk.save(tmp_path / "c.jpg", quality=100)
    r, g, b = np.asarray(load_image(tmp_path / "c.jpg"))[4, 4].tolist()
    assert r < 40 and g > 200 and b > 200


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "WEBP"])
def test_multi_frame_files_use_the_first_frame_and_say_so(tmp_path, fmt):
    frames = [Image.new("RGB", (16, 16), c) for c in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    path = tmp_path / f"anim.{fmt.lower()}"
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:])
    img, notes = load_image_notes(path)
    r, g, b = np.asarray(img)[8, 8].tolist()
    assert r > 200 and g < 60 and b < 60
    assert "used the first of 3 frames" in notes


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(100_000, 100_000))
    with pytest.raises(InputError, match="declares 10,000 megapixels.*decompression bomb"):
        load_image(path)
    path.write_bytes(png_declaring(15_000, 15_000))  # a plausible size, still past the limit
    with pytest.raises(InputError, match="declares 225 megapixels"):
        load_image(path)


def test_special_files_are_refused_without_hanging(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(InputError, match="FIFO, not an image file"):
        load_image(fifo)
    assert time.monotonic() - start < 5
    with pytest.raises(InputError, match="device, not an image file"):
        load_image("/dev/null")
    with pytest.raises(InputError, match="directory"):
        load_image(tmp_path)


def test_arrays_of_every_common_type():
    ramp16 = np.linspace(0, 65535, 100).reshape(10, 10).astype(np.uint16)
    np.testing.assert_allclose(np.asarray(load_image(ramp16))[..., 0], ramp16 / 257, atol=1)
    f255 = np.full((4, 4, 3), 128.0)
    assert np.asarray(load_image(f255))[0, 0].tolist() == [128, 128, 128]
    f01 = np.full((4, 4, 3), 0.5, np.float32)
    assert np.asarray(load_image(f01))[0, 0].tolist() == [128, 128, 128]
    with pytest.raises(InputError, match="HxW"):
        load_image(np.zeros((4, 4, 7)))
    rgba = np.zeros((2, 2, 4), np.uint8)
    assert np.asarray(load_image(rgba))[0, 0].tolist() == [255, 255, 255]


def test_an_in_memory_pil_image_gets_the_same_treatment():
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 8
    _two_halves().save(buf, format="JPEG", exif=exif)
    buf.seek(0)
    with Image.open(buf) as im:
        assert load_image(im).size == (20, 40)
