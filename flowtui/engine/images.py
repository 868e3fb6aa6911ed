"""Reading the user's image: any path, PIL image or array becomes an RGB PIL image, or an InputError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from flowtui.engine.errors import InputError


def load_image(image: str | Path | Image.Image | np.ndarray) -> Image.Image:
    """Return `image` as an RGB PIL image; raise InputError with a one-line reason otherwise."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3) or image.size == 0:
            raise InputError(f"image array must be HxW or HxWxC, got shape {image.shape}")
        arr = image
        if arr.dtype != np.uint8:
            arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    path = Path(image)
    if not path.exists():
        raise InputError(f"image not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not an image")
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so a truncated file fails here and not mid-analysis
            return im.convert("RGB")
    except UnidentifiedImageError:
        raise InputError(f"{path} is not an image file flowtui can read") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{path} is corrupt or truncated: {exc}") from None
