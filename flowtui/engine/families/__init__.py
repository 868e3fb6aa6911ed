"""One module per model family (as transformers' `models/`), found by scanning this package.

Adding a family means adding one file here that defines a `FamilyAdapter` subclass with its
`model_types`; nothing else needs to change.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import TYPE_CHECKING, Any

from flowtui.engine.errors import ModelLoadError
from flowtui.engine.families.base import FamilyAdapter, GridFamily, Layout

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["FamilyAdapter", "GridFamily", "Layout", "adapter_for", "adapters", "supported_families"]


@cache
def adapters() -> tuple[type[FamilyAdapter], ...]:
    """Every adapter class in this package, in module name order."""
    found: list[type[FamilyAdapter]] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "base" or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, FamilyAdapter)
                and obj.model_types
                and obj.__module__ == module.__name__
            ):
                found.append(obj)
    return tuple(found)


def adapter_class(model_type: str) -> type[FamilyAdapter] | None:
    for cls in adapters():
        if model_type in cls.model_types:
            return cls
    return None


def supported_model_types() -> list[str]:
    return sorted(t for cls in adapters() for t in cls.model_types)



def supported_families() -> str:
    return ", ".join(supported_model_types())


def adapter_for(model: PreTrainedModel, processor: Any) -> FamilyAdapter:
    model_type = getattr(model.config, "model_type", "?")
    cls = adapter_class(model_type)
    if cls is None:
        raise ModelLoadError(
            f"model type {model_type!r} is not supported yet; supported: {supported_families()}"
        )
    return cls(model, processor)
