"""PaliGemma and PaliGemma 2: a SigLIP tower whose every patch is a feature token.

There is no chat template: the processor writes `<image>` x N + <bos> + prompt + "\\n" itself,
so the image comes first and the system group is empty. The image processor stretches the
whole image to the tower's square (no crop, no pad), so each token's region is one cell of
the patch grid laid over the original image. The prefix (image + prompt) attends
bidirectionally; token_type_ids mark the answer (the suffix) with 1. PaliGemma 2's Gemma 2
decoder soft-caps the final logits, which the model's forward applies after the LM head from
transformers 5.23 on (the base `logits` follows the installed model).
"""

from __future__ import annotations

import torch
from PIL import Image

from flowtui.engine.errors import InputError
from flowtui.engine.families.base import Affine, FamilyAdapter, Layout


class PaliGemmaAdapter(FamilyAdapter):
    family = "paligemma"
    model_types = ("paligemma",)
    examples = ("google/paligemma2-3b-mix-224", "google/paligemma2-3b-mix-448",
                "google/paligemma-3b-mix-224")
    # The answer is the suffix: token type 1 (the prefix is 0 and attends bidirectionally).
    answer_token_type = {"token_type_ids": 1}
    # No reduced rerun: the prefix attends bidirectionally (a prepared mask) and Gemma 2 slides
    # windows over positions.
    reduced_rerun = False

    def build_prompt(self, question: str) -> str:
        # The processor adds <bos> after the image tokens and "\n" after the prompt.
        return f"{self.processor.image_token}{question}"

    def processor_inputs(self, image: Image.Image, prompt: str) -> dict[str, torch.Tensor]:
        inputs = dict(self.processor(images=[image], text=prompt, return_tensors="pt"))
        # Training labels, returned for backward compatibility: a forward given them computes
        # a loss, and generate() would hand them to every decoding step.
        inputs.pop("labels", None)
        return inputs

    def layout(self, image_size: tuple[int, int], inputs: dict[str, torch.Tensor]) -> Layout:
        width, height = image_size
        n = int((inputs["input_ids"][0] == self.image_token_id).sum())
        vc = self.model.config.vision_config
        patch = int(vc.patch_size)
        side = int(vc.image_size) // patch
        if n != side * side:
            raise InputError(
                f"cannot lay {n} image tokens on the {side}x{side} patch grid of the vision "
                f"tower ({vc.image_size}px / patch {patch})"
            )
        tower_h, tower_w = (int(s) for s in inputs["pixel_values"].shape[-2:])
        aff = Affine().resize((width, height), (tower_w, tower_h))
        return Layout.through(aff, side, side, (0, 0, side * patch, side * patch), width, height)
