"""Test images."""

from __future__ import annotations

import struct
import zlib

import numpy as np
from PIL import Image


def random_image(seed: int, size: tuple[int, int] = (80, 64)) -> Image.Image:
    """Noise of a fixed seed: odd content the models have never seen."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG header claiming width x height, with almost no data behind it (a bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def smooth_image(size: tuple[int, int], seed: int = 5) -> Image.Image:
    """Smooth blobs, not noise: resampling then changes little, and answers depend on content
    (the family tests' image)."""
    w, h = size
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    return Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR)
