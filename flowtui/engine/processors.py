"""Loading a model's processor, also where torchvision cannot be installed.

In transformers 5 the processors of Qwen2/2.5/3-VL, LLaVA-OneVision, InternVL and SmolVLM
refuse to build without torchvision, because of their *video* processor, even to read one
image. flowtui reads images only, so where torchvision is missing it builds the same
processor class without its video part, from the same files, with the PIL image processor.
Pixtral's processor (Mistral 3) has no video part, but its module imports a helper from the
torchvision image processor whose PIL twin defines it too: that module is imported with the
twin standing in, which gives the real class.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import pkgutil
import sys
import types
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import ProcessorMixin

log = logging.getLogger("flowtui")

VIDEO_ATTRIBUTES = ("video_processor",)


def _needs_video_backend(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "torchvision" in text or "video processor" in text or "video_preprocessor" in text


@cache
def image_only(cls: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """`cls` without its video processor: same __call__, same files, images only."""

    class ImageOnly(cls):  # type: ignore[misc, valid-type]
        @classmethod
        def get_attributes(klass) -> list[str]:
            return [a for a in super().get_attributes() if a not in VIDEO_ATTRIBUTES]

    ImageOnly.__name__ = ImageOnly.__qualname__ = cls.__name__
    ImageOnly.__module__ = cls.__module__
    return ImageOnly


def _import_with_pil_twins(module_name: str) -> types.ModuleType:
    """Import a transformers module; where it fails only because torchvision is missing, import
    it again with each torchvision image processor of its package replaced by its PIL twin
    (`image_processing_x` -> `image_processing_pil_x`, same helpers) while it loads."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != "torchvision":
            raise
        first_error = exc
    package = module_name.rpartition(".")[0]
    stand_ins = {}
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        prefix = "image_processing_"
        if not info.name.startswith(prefix) or info.name.startswith(prefix + "pil_"):
            continue
        name = f"{package}.{info.name}"
        twin = f"{package}.{prefix}pil_{info.name[len(prefix):]}"
        if name not in sys.modules:
            try:
                stand_ins[name] = importlib.import_module(twin)
            except ImportError:
                continue
    if not stand_ins:
        raise first_error
    sys.modules.update(stand_ins)
    try:
        return importlib.import_module(module_name)
    except ImportError:
        raise first_error from None
    finally:
        for name in stand_ins:
            sys.modules.pop(name, None)


def _is_processor_class(obj: Any) -> bool:
    """False for transformers' placeholders, whose every attribute raises ImportError."""
    try:
        return isinstance(obj, type) and hasattr(obj, "get_attributes")
    except ImportError:
        return False


def processor_class(name: str) -> type[ProcessorMixin] | None:
    """The transformers processor class `name`: the real one, also where the package's lazy
    import hands out a placeholder because the class is marked as needing torchvision."""
    import transformers

    cls = getattr(transformers, name, None)
    if _is_processor_class(cls):
        return cls
    from flowtui.engine.compat import PROCESSOR_MAPPING_NAMES, model_type_to_module_name

    for model_type, names in PROCESSOR_MAPPING_NAMES.items():
        if name not in (names if isinstance(names, tuple) else (names,)):
            continue
        package = f"transformers.models.{model_type_to_module_name(model_type)}"
        try:
            module = _import_with_pil_twins(f"{package}.processing_{package.rpartition('.')[2]}")
        except ImportError:
            continue
        found = getattr(module, name, None)
        if _is_processor_class(found):
            return found
    return None


def processor_class_name(path: Path, model_type: str) -> str | None:
    """The processor class a folder names, else the one transformers maps its model type to."""
    for name in ("processor_config.json", "tokenizer_config.json", "preprocessor_config.json"):
        try:
            data = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("processor_class"), str):
            return data["processor_class"]
    from flowtui.engine.compat import PROCESSOR_MAPPING_NAMES

    return PROCESSOR_MAPPING_NAMES.get(model_type)


def load_processor(path: Path, model_type: str, trust_remote_code: bool = False) -> Any:
    """AutoProcessor, or the image-only build of the same class where the video part fails."""
    from transformers import AutoProcessor

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "local_files_only": True}
    try:
        return AutoProcessor.from_pretrained(path, **kwargs)
    except (ImportError, OSError) as exc:
        if not _needs_video_backend(exc):
            raise
        first_error = exc
    import transformers

    name = processor_class_name(path, model_type)
    cls = processor_class(name) if name else None
    if cls is None or name is None:  # no name, no class
        raise first_error
    if any(a in VIDEO_ATTRIBUTES for a in cls.get_attributes()):
        log.info("building %s without its video processor (torchvision is not installed)", name)
        # Some classes take the video processor as a required argument (SmolVLM): hand them none.
        params = inspect.signature(cls.__init__).parameters
        for attr in VIDEO_ATTRIBUTES:
            if attr in params and params[attr].default is inspect.Parameter.empty:
                kwargs[attr] = None
        # mypy reads a class's own __hash__ as the instance method: classes are hashable.
        return image_only(cls).from_pretrained(path, **kwargs)  # type: ignore[arg-type]
    if _is_processor_class(getattr(transformers, name, None)):
        raise first_error  # the class imports fine: torchvision is needed for more than video
    log.info("building %s with PIL image helpers (torchvision is not installed)", name)
    return cls.from_pretrained(path, **kwargs)
