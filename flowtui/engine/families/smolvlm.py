"""SmolVLM2 (`smolvlm`): Idefics3's tiles, global image, pixel shuffle and prompt, under its own
classes. (SmolVLM v1 checkpoints are `idefics3` models and use that adapter.)"""

from __future__ import annotations

from typing import Any

from flowtui.engine.compat import ProcessorMixin
from flowtui.engine.families.idefics3 import Idefics3Adapter


class SmolVLMAdapter(Idefics3Adapter):
    family = "smolvlm"
    model_types = ("smolvlm",)
    examples = (
        "HuggingFaceTB/SmolVLM2-2.2B-Instruct",
        "HuggingFaceTB/SmolVLM2-500M-Video-Instruct",
        "HuggingFaceTB/SmolVLM2-256M-Video-Instruct",
    )

    def build_prompt(self, question: str) -> str:
        # SmolVLMProcessor.apply_chat_template only adds video sampling defaults, read from its
        # video processor, which the image-only build (no torchvision) does not have.
        conversation: list[dict[str, Any]] = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
        ]
        return ProcessorMixin.apply_chat_template(
            self.processor, conversation, add_generation_prompt=True
        )
