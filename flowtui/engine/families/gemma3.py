"""Gemma 3: a SigLIP tower whose patches are average-pooled into `mm_tokens_per_image` tokens.

The processor stretches the whole image to the tower's square (no crop, no pad) and writes
"\\n\\n<start_of_image>" + `<image_soft_token>` x mm_tokens_per_image + "<end_of_image>\\n\\n";
the newlines are text, the markers belong to the image group. Each token averages a k x k
block of patches, so its region is one cell of a tokens_per_side^2 grid over the stretched
image.

Pan & scan (`do_pan_and_scan`) adds crops of a long image, each stretched to the tower's
square and given its own image block after the original ("Here is the original image ... and
here are some crops ..."): the image group is then the set of blocks, with the views
"global" (the original image) and "crops" (each crop's cells inverted through its crop box).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from PIL import Image

from flowtui.engine.analysis import grid_regions
from flowtui.engine.errors import InputError
from flowtui.engine.families.base import Affine, FamilyAdapter, Layout, clip_regions, field

PAN_AND_SCAN_KEYS = (
    "pan_and_scan_min_crop_size",
    "pan_and_scan_max_num_crops",
    "pan_and_scan_min_ratio_to_activate",
)


def pan_and_scan_boxes(
    width: int, height: int, min_crop_size: int, max_num_crops: int, min_ratio: float
) -> list[tuple[int, int, int, int]]:
    """The crop boxes (x0, y0, x1, y1) of Gemma 3's pan & scan, as its image processors cut
    them (both backends share this arithmetic); empty when it does not activate."""
    if width >= height:
        if width / height < min_ratio:
            return []
        n_w = min(int(math.floor(width / height + 0.5)), int(math.floor(width / min_crop_size)))
        n_w, n_h = min(max_num_crops, max(2, n_w)), 1
    else:
        if height / width < min_ratio:
            return []
        n_h = min(int(math.floor(height / width + 0.5)), int(math.floor(height / min_crop_size)))
        n_w, n_h = 1, min(max_num_crops, max(2, n_h))
    cw, ch = int(math.ceil(width / n_w)), int(math.ceil(height / n_h))
    if min(cw, ch) < min_crop_size:
        return []
    # Row-major, as itertools.product(rows, cols); the last crop is cut short by the edge.
    return [
        (x, y, min(x + cw, width), min(y + ch, height))
        for y in range(0, ch * n_h, ch)
        for x in range(0, cw * n_w, cw)
    ]


class Gemma3Adapter(FamilyAdapter):
    family = "gemma3"
    model_types = ("gemma3",)
    examples = ("google/gemma-3-4b-it", "google/gemma-3-12b-it", "google/gemma-3-27b-it")
    open_markers = ("<start_of_image>",)
    close_markers = ("<end_of_image>",)
    # No reduced rerun: the image block attends bidirectionally (token_type_ids, a prepared
    # mask) and local layers slide a window over positions, so the mask is not causal over the
    # kept positions.
    reduced_rerun = False

    def pan_and_scan(self) -> dict[str, Any] | None:
        """The pan & scan settings when the image processor's config asks for them.

        Gemma3Processor's own defaults (do_pan_and_scan=False, min crop 256, ...) are passed
        to the image processor on every call and override its saved config, so pan & scan is a
        call-time option in transformers; flowtui passes it when the config asks for it.
        """
        ip = self.processor.image_processor
        if not field(ip, "do_pan_and_scan", False):
            return None
        defaults = getattr(self.processor, "images_kwargs", None) or {}
        settings = {k: field(ip, k, defaults.get(k)) for k in PAN_AND_SCAN_KEYS}
        return {"do_pan_and_scan": True, **settings}

    def processor_inputs(self, image: Image.Image, prompt: str) -> dict[str, torch.Tensor]:
        extra = self.pan_and_scan() or {}
        return dict(self.processor(images=[image], text=prompt, return_tensors="pt", **extra))

    def layout(self, image_size: tuple[int, int], inputs: dict[str, torch.Tensor]) -> Layout:
        width, height = image_size
        config = self.model.config
        n = int((inputs["input_ids"][0] == self.image_token_id).sum())
        per_image = int(config.mm_tokens_per_image)
        side = math.isqrt(per_image)
        if side * side != per_image or n % per_image:
            raise InputError(
                f"cannot lay {n} image tokens on blocks of {per_image} (mm_tokens_per_image)"
            )
        # The projector pools k x k patches per token (a remainder of patches would be dropped).
        vc = config.vision_config
        patch = int(vc.patch_size)
        k = int(vc.image_size) // patch // side
        cells = grid_regions(side, side, (0, 0, side * k * patch, side * k * patch))
        tower_h, tower_w = (int(s) for s in inputs["pixel_values"].shape[-2:])

        blocks = n // per_image
        crops: list[tuple[int, int, int, int]] = []
        if blocks > 1:
            s = self.pan_and_scan()
            if s is not None:
                crops = pan_and_scan_boxes(
                    width, height, int(s["pan_and_scan_min_crop_size"]),
                    int(s["pan_and_scan_max_num_crops"]),
                    float(s["pan_and_scan_min_ratio_to_activate"]),
                )
            if len(crops) != blocks - 1:
                raise InputError(
                    f"gemma3: {blocks} image blocks, but pan & scan as configured gives "
                    f"{len(crops)} crops of a {width}x{height} image; this processor "
                    "configuration is not supported"
                )
        parts = []
        for i, (x0, y0, x1, y1) in enumerate([(0, 0, width, height), *crops]):
            # Crop (nothing for the original), then stretch to the tower's input size.
            aff = Affine().crop(x0, y0).resize((x1 - x0, y1 - y0), (tower_w, tower_h))
            view = "image" if not crops else ("global" if i == 0 else "crops")
            parts.append((view, clip_regions(aff.invert(cells), width, height)))
        layout = Layout.concat(parts)
        if not crops:
            layout.grid = (side, side)
        return layout
