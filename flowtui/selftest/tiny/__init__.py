"""Tiny random models of every supported family, built from configs and saved like hub folders.

One module per family, like flowtui/engine/families/; the tests and `flowtui doctor`'s self-test
both use them. Building downloads nothing: tokenizers are made in code (common.word_tokenizer) and
image processors from their classes. Each module defines:

    FAMILY: str                   flowtui's family name (ModelInfo.family)
    QUESTION: str                 asked in the tests and the self-test (words of the module's tokenizer)
    IMAGE_SIZE: tuple[int, int]   (width, height): odd on purpose (non-square grids, tiles)
    BLOCK: tuple[str, str]        the first and last token of the image block
    def build(path: Path) -> Path     save model + processor to `path`, return it

and may define TOLERANCE (px, for the region check), MAX_NEW_TOKENS and to_channels (for
processors whose pixel_values are not [..., C, H, W]).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def discover() -> dict[str, ModuleType]:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "common":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "build"):
            found[info.name] = module
    return found
