"""Loading a model's processor, also where torchvision cannot be installed.

In transformers 5 the processors of Qwen2/2.5/3-VL, LLaVA-OneVision, InternVL and SmolVLM
refuse to build without torchvision, because of their *video* processor, even to read one
image. flowtui reads images only, so where torchvision is missing it builds the same
processor class without its video part, from the same files, with the PIL image processor.
"""

from __future__ import annotations

import json
import logging
from functools import cache
from pathlib import Path
from typing import Any

log = logging.getLogger("flowtui")

VIDEO_ATTRIBUTES = ("video_processor",)


def _needs_video_backend(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "torchvision" in text or "video processor" in text or "video_preprocessor" in text


@cache
def image_only(cls: type) -> type:
    """`cls` without its video processor: same __call__, same files, images only."""

    class ImageOnly(cls):  # type: ignore[misc, valid-type]
        @classmethod
        def get_attributes(klass) -> list[str]:
            return [a for a in super().get_attributes() if a not in VIDEO_ATTRIBUTES]

    ImageOnly.__name__ = ImageOnly.__qualname__ = cls.__name__
    ImageOnly.__module__ = cls.__module__
    return ImageOnly


def processor_class_name(path: Path, model_type: str) -> str | None:
    """The processor class a folder names, else the one transformers maps its model type to."""
    for name in ("processor_config.json", "tokenizer_config.json", "preprocessor_config.json"):
        try:
            data = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("processor_class"), str):
            return data["processor_class"]
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    return PROCESSOR_MAPPING_NAMES.get(model_type)


def load_processor(path: Path, model_type: str, trust_remote_code: bool = False) -> Any:
    """AutoProcessor, or the image-only build of the same class where the video part fails."""
    from transformers import AutoProcessor

    kwargs = {"trust_remote_code": trust_remote_code, "local_files_only": True}
    try:
        return AutoProcessor.from_pretrained(path, **kwargs)
    except (ImportError, OSError) as exc:
        if not _needs_video_backend(exc):
            raise
        first_error = exc
    import transformers

    name = processor_class_name(path, model_type)
    cls = getattr(transformers, name, None) if name else None
    if cls is None or not hasattr(cls, "get_attributes"):
        raise first_error
    if not any(a in VIDEO_ATTRIBUTES for a in cls.get_attributes()):
        raise first_error  # torchvision is needed for more than video here
    log.info("building %s without its video processor (torchvision is not installed)", name)
    return image_only(cls).from_pretrained(path, **kwargs)
