"""Reading the user's image as every image viewer shows it, or refusing it in one line.

One place decides what an image is: any path, PIL image or array becomes an upright 8-bit RGB
PIL image (EXIF orientation applied; 16/32-bit and float pixels scaled, not clipped; transparent
pixels composited on white; the first frame of an animation), with notes that say what was done.
Files that cannot be images (folders, FIFOs, devices) and decompression bombs are refused
before anything is decoded.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from flowtui.engine.errors import InputError

# Pixels flowtui decodes at most: Pillow's own hard limit (twice its warning threshold). A
# header declaring more is refused before any pixel is decoded.
MAX_PIXELS = 2 * 89_478_485
# What transparent pixels are composited on (viewers differ; white is the common page colour).
BACKGROUND = (255, 255, 255)

ImageLike = str | Path | Image.Image | np.ndarray


def load_image(image: ImageLike) -> Image.Image:
    """Return `image` as an upright RGB PIL image; raise InputError with a one-line reason."""
    return load_image_notes(image)[0]


def load_image_notes(image: ImageLike) -> tuple[Image.Image, list[str]]:
    """`load_image`, plus notes on what was done to show the image as a viewer would."""
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, np.ndarray):
        return _from_array(image), []
    path = Path(image)
    _check_file(path)
    try:
        with open_bounded(path, str(path), InputError) as im:
            notes = []
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                im.seek(0)
                notes.append(f"used the first of {frames} frames")
            im.load()  # decode now, so a truncated file fails here and not mid-analysis
            rgb, more = to_rgb(im)
            return rgb, notes + more
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{path} is not an image file flowtui can read") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InputError(f"{path} is corrupt or truncated: {exc}") from None


@contextmanager
def open_bounded(src: str | Path | BinaryIO, subject: str, error: type[Exception],
                 formats: list[str] | None = None) -> Iterator[Image.Image]:
    """`Image.open` under flowtui's pixel limit: an image declaring more than MAX_PIXELS is
    refused with `error`, naming `subject`, before anything is decoded."""
    with warnings.catch_warnings():
        # flowtui applies its own limit; Pillow's warning would only add noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(src, formats=formats)
        except Image.DecompressionBombError as exc:
            # Pillow refuses at open() already; its message carries the declared size.
            found = re.search(r"\((\d+) pixels\)", str(exc))
            raise error(_bomb(subject, int(found.group(1)) if found else None)) from None
        with im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise error(_bomb(subject, w * h))
            yield im


def _bomb(subject: str, pixels: int | None) -> str:
    declared = f"{pixels / 1e6:,.0f} megapixels" if pixels else "more pixels"
    return (f"{subject} declares {declared}, more than flowtui decodes "
            f"({MAX_PIXELS / 1e6:.0f} megapixels); is it a decompression bomb?")


def _check_file(path: Path) -> None:
    regular_file(path, "image", InputError, found="an image file")


def regular_file(path: Path, what: str, error: type[Exception], found: str | None = None
                 ) -> os.stat_result:
    """Stat `path` and refuse, with `error` and one line, anything but a regular file, before
    it is opened (opening a FIFO would wait for a writer forever)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{path} is a directory, not {'an' if what[0] in 'aeiou' else 'a'} {what}")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path} is a {special_kind(st.st_mode)}, not {found or 'a ' + what}")
    return st


def special_kind(mode: int) -> str:
    """What a file that is neither a regular file nor a folder is, for messages."""
    return ("FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode)
            else "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special file")


def to_rgb(im: Image.Image) -> tuple[Image.Image, list[str]]:
    """An upright 8-bit RGB copy of `im`, and notes on what the conversion did."""
    notes: list[str] = []
    orientation = im.getexif().get(0x0112, 1) if hasattr(im, "getexif") else 1
    if orientation not in (1, None):
        im = ImageOps.exif_transpose(im)
        notes.append(f"EXIF orientation {orientation} applied (shown upright)")
    mode = im.mode
    if mode.startswith("I") or mode == "F":
        return _from_array(np.asarray(im), mode), notes
    if _has_alpha(im):
        rgba = im.convert("RGBA")
        if np.asarray(rgba)[..., 3].min() < 255:
            notes.append("transparent pixels composited on white")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB"), notes
    return im.convert("RGB"), notes


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def _from_array(arr: np.ndarray, mode: str = "") -> Image.Image:
    """Scale any numeric array to 8 bits by its type's range (16-bit stays in proportion)."""
    if arr.ndim not in (2, 3) or arr.size == 0 or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise InputError(f"image array must be HxW or HxWxC (C = 1, 3 or 4), got shape {arr.shape}")
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == bool:
        out = arr.astype(np.uint8) * 255
    else:
        a = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        if np.issubdtype(arr.dtype, np.floating):
            # [0, 1] and [0, 255] are the two float conventions; anything else is stretched.
            if a.min() >= 0 and a.max() <= 1:
                lo, hi = 0.0, 1.0
            elif a.min() >= 0 and a.max() <= 255:
                lo, hi = 0.0, 255.0
            else:
                lo, hi = a.min(), a.max()
        elif mode.startswith("I;16") or arr.dtype in (np.uint16, np.int16) or a.max() <= 65535:
            lo, hi = 0.0, 65535.0 if a.max() > 255 or mode.startswith("I;16") else 255.0
        else:
            lo, hi = 0.0, float(np.iinfo(arr.dtype).max)
        out = np.rint((np.clip(a, lo, hi) - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8)
    if out.ndim == 3 and out.shape[2] == 1:
        out = out[..., 0]
    if out.ndim == 3 and out.shape[2] == 4:
        rgba = Image.fromarray(out, "RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return Image.fromarray(out).convert("RGB")
