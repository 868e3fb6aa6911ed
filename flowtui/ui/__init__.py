"""The Textual explorer. Import-light: `run_explorer` and `FlowtuiApp` load Textual on first use."""

from __future__ import annotations

from typing import Any

__all__ = ["FlowtuiApp", "run_explorer"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from flowtui.ui import app

        return getattr(app, name)
    raise AttributeError(name)
