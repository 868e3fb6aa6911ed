"""flowtui: a terminal explorer for the information flow inside vision-language models.

    import flowtui
    engine = flowtui.load_engine()                 # the built-in toy model
    a = engine.analyze("photo.jpg", "Is there a horse?")
    remote = flowtui.connect("gpu-box", model="llava-hf/llava-1.5-7b-hf")   # the model over ssh
"""

from __future__ import annotations

from typing import Any

from flowtui.version import __version__

__all__ = ["Analysis", "connect", "load_engine", "load_snapshot", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so `flowtui --help` and snapshot reading do not pay for importing torch.
    if name == "load_engine":
        from flowtui.engine import load_engine

        return load_engine
    if name == "connect":
        from flowtui.remote.client import connect

        return connect
    if name == "load_snapshot":
        from flowtui.engine.snapshot import load_snapshot

        return load_snapshot
    if name == "Analysis":
        from flowtui.engine.analysis import Analysis

        return Analysis
    raise AttributeError(f"module 'flowtui' has no attribute {name!r}")
