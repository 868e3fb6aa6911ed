"""Which pixels of the original image reach each feature token: found by back-propagation.

Independent of any layout code: the image encodes each pixel's own position in its colour
(red = x, green = y, blue = 255 marks a real pixel, so padding is recognised). The vision
tower's attention is switched off (its output zeroed), so a patch's features depend on that
patch's pixels alone; then the gradient of one feature token's input embedding with respect to
the processor's pixel values is non-zero exactly on the pixels that token was computed from,
through every resize, crop, pad, tile, merge and pixel shuffle. Decoding those pixels' colours
gives their positions in the original image, to compare with the region an adapter claims.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from flowtui.selftest.reference import image_token_id, language_model


def position_image(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    rgb = np.stack([x, y, np.full_like(x, 255)], axis=-1)
    return Image.fromarray(np.rint(rgb).astype(np.uint8))


def _vision_modules(model) -> list[torch.nn.Module]:
    inner = model.model
    lm = language_model(model)
    skip = {id(m) for m in lm.modules()}
    return [m for m in inner.modules() if id(m) not in skip]


def _zero(_m, _a, out):
    if isinstance(out, tuple):
        return (torch.zeros_like(out[0]), *out[1:])
    return torch.zeros_like(out)


def channels_last3(pixel_values: torch.Tensor) -> torch.Tensor:
    """Default: the channel axis is the third from the end ([.., C, H, W])."""
    return pixel_values


def pixel_support(
    model,
    processor,
    image: Image.Image,
    prompt: str,
    tokens: list[int] | None = None,
    to_channels: Callable[[torch.Tensor], torch.Tensor] = channels_last3,
) -> dict[int, np.ndarray]:
    """For each feature token index i (in `tokens`, default all): the (x, y) original-image
    positions, [M, 2], of the real pixels whose values reach token i. Empty for tokens that
    depend on no pixel (e.g. a learned row-newline feature)."""
    inputs = dict(processor(images=[image], text=prompt, return_tensors="pt"))
    feats = np.flatnonzero(inputs["input_ids"][0].numpy() == image_token_id(model))
    tokens = list(range(len(feats))) if tokens is None else tokens
    ip = processor.image_processor
    mean = torch.tensor(ip.image_mean, dtype=torch.float64)
    std = torch.tensor(ip.image_std, dtype=torch.float64)
    W, H = image.size

    pv = inputs["pixel_values"].float().requires_grad_(True)
    inputs["pixel_values"] = pv
    handles = []
    for m in _vision_modules(model):
        name = type(m).__name__
        if name.endswith("Attention") or name.endswith("SdpaAttention"):
            handles.append(m.register_forward_hook(_zero))
    seen = {}

    def keep(_m, args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"]

    handles.append(language_model(model).register_forward_pre_hook(keep, with_kwargs=True))
    try:
        with torch.enable_grad():
            model(**inputs, use_cache=False)
            embeds = seen["embeds"]
            values = to_channels(pv.detach()).double()  # [..., 3, ...spatial]
            chan = [values.select(-3, c) * std[c] + mean[c] for c in range(3)]
            out = {}
            for i in tokens:
                (g,) = torch.autograd.grad(embeds[0, feats[i]].sum(), pv, retain_graph=True)
                g = to_channels(g).abs().sum(-3)  # per pixel location
                hit = g > g.max() * 1e-9 if g.max() > 0 else torch.zeros_like(g, dtype=torch.bool)
                real = hit & (chan[2] > 0.9)
                xs = (chan[0][real] * (W - 1)).numpy()
                ys = (chan[1][real] * (H - 1)).numpy()
                out[i] = np.stack([xs, ys], axis=1)
    finally:
        for h in handles:
            h.remove()
    return out


def check_regions(
    analysis,
    support: dict[int, np.ndarray],
    tolerance: float,
    min_iou: float = 0.5,
) -> None:
    """Every real pixel reaching token i lies inside its claimed region (give or take the
    resampling kernel's reach, `tolerance` px), the pixels span most of the region, and a
    token with no region is reached by no pixel."""
    bad = []
    for i, pts in support.items():
        r = analysis.token_regions[i]
        if not np.isfinite(r).all():
            if len(pts):
                bad.append(f"token {i}: no region claimed, but {len(pts)} pixels reach it")
            continue
        if not len(pts):
            bad.append(f"token {i}: region {r.tolist()} claimed, but no pixel reaches it")
            continue
        x0, y0, x1, y1 = r.tolist()
        outside = (
            (pts[:, 0] < x0 - tolerance) | (pts[:, 0] > x1 + tolerance)
            | (pts[:, 1] < y0 - tolerance) | (pts[:, 1] > y1 + tolerance)
        )
        if outside.any():
            p = pts[outside][0]
            bad.append(f"token {i}: pixel at ({p[0]:.1f}, {p[1]:.1f}) outside region "
                       f"{[round(v, 1) for v in r.tolist()]}")
            continue
        bx0, by0 = pts.min(0)
        bx1, by1 = pts.max(0)
        ix = max(0.0, min(x1, bx1) - max(x0, bx0))
        iy = max(0.0, min(y1, by1) - max(y0, by0))
        inter = ix * iy
        union = (x1 - x0) * (y1 - y0) + (bx1 - bx0) * (by1 - by0) - inter
        if union > 0 and inter / union < min_iou:
            bad.append(f"token {i}: pixels span {[round(v, 1) for v in (bx0, by0, bx1, by1)]}, "
                       f"region claimed {[round(v, 1) for v in r.tolist()]}")
    assert not bad, f"{len(bad)} of {len(support)} tokens wrong:\n" + "\n".join(bad[:8])


def sample_tokens(analysis, per_view: int = 24) -> list[int]:
    """A spread of token indices in every view, with each view's first and last."""
    picked: set[int] = set()
    for v in range(len(analysis.views)):
        idx = np.flatnonzero(analysis.token_views == v)
        if len(idx):
            picked.update(idx[np.linspace(0, len(idx) - 1, min(per_view, len(idx))).astype(int)])
    return sorted(int(i) for i in picked)
