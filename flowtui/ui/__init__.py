"""The Textual UI. Import-light: `run_explorer` and `FlowtuiApp` load Textual on first use.

- app.py: a thin App of modes (themes, quoting notifications, the palette) holding `jobs`
- jobs.py: EngineJobs, the one owner of the engine and its running job (busy, cancel, workers,
  progress, failures as notifications); messages.py: what it reports
- explorer.py: ExplorerScreen, `analysis` and `view` as reactives the panels are bound to;
  exports.py its snapshot/PNG exports; keys.py its keys
- dataset_screen.py: the `dataset` mode, opening samples through app.explorer and app.jobs
- compare_screen.py: the `compare` mode (two analyses on one layer cursor, no engine work) and
  CompareApp for `flowtui compare A B`; pin.py the explorer's P that opens it
- widgets/: one module per screen area; screens.py: the modal help and path prompt
A new screen (e.g. compare) is a Screen that runs engine work through `app.jobs` (results come
back to it as messages) and is added with `app.add_mode`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FlowtuiApp", "run_explorer"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from flowtui.ui import app

        return getattr(app, name)
    raise AttributeError(name)
