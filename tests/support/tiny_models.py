"""The tiny family models, each built and loaded once per test session.

Building a tiny model (config, random weights, processor, save) and loading it through
`flowtui.load_engine` take a second or more each; the family tests of several modules share
them through the session fixture `tiny_models` (tests/conftest.py). Tests that change a model
folder build their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flowtui
from flowtui.selftest import tiny


class TinyModels:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.specs = tiny.discover()
        self._paths: dict[tuple, Path] = {}
        self._engines: dict[tuple, Any] = {}

    @staticmethod
    def _key(family: str, options: dict) -> tuple:
        return (family, *sorted(options.items()))

    def path(self, family: str, **options) -> Path:
        """The saved model folder of `family` (options go to its module's `build`)."""
        key = self._key(family, options)
        if key not in self._paths:
            name = "_".join([family, *(f"{k}-{v}" for k, v in sorted(options.items()))])
            self._paths[key] = self.specs[family].build(self.root / name, **options)
        return self._paths[key]

    def engine(self, family: str, **options):
        """The model loaded through the public path (float32 on the CPU), shared: tests must
        not change its state."""
        key = self._key(family, options)
        if key not in self._engines:
            self._engines[key] = flowtui.load_engine(str(self.path(family, **options)),
                                                     device="cpu", dtype="float32")
        return self._engines[key]

    def analysis(self, family: str):
        """A fresh analysis (no CAM, no self-check) of the family's test image and question: the
        starting point of the lens and knockout tests. Fresh each call, since tests add to it."""
        from support.images import smooth_image

        spec = self.specs[family]
        return self.engine(family).analyze(
            smooth_image(spec.IMAGE_SIZE), spec.QUESTION,
            max_new_tokens=getattr(spec, "MAX_NEW_TOKENS", 4), cam=False, self_check=False)
