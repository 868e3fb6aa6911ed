"""What one browser tab runs: the explorer under Textual's web driver (textual-serve starts
`python -m flowtui.web.tab SPEC`), its engine a session of the web server's daemon.

SPEC is a JSON file the server wrote in its private folder: `mode` (`live`, `open`, `dataset`),
what that mode shows, the model options, and `socket` (the daemon's; absent when the mode needs
no model).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from flowtui.engine.errors import FlowtuiError
from flowtui.textsafe import visible

# What the explorer's status line calls the place the model runs ("model on shared engine").
LOCATION = "shared engine"
MODEL_KEYS = ("device", "dtype", "quantize", "trust_remote_code")


class SharedEngine:
    """An engine factory (see flowtui.ui.jobs) whose engine is a session of the daemon: the
    model is already loaded there, or loading for another tab (then this one waits for it)."""

    location = LOCATION

    def __init__(self, socket: str, model: dict[str, Any]) -> None:
        self.socket = socket
        self.model = model

    def __call__(self, progress=None):
        from flowtui.remote.client import connect_socket

        options = {k: self.model[k] for k in MODEL_KEYS if k in self.model}
        return connect_socket(self.socket, self.model.get("model"), name=LOCATION,
                              progress=progress, **options)


def run_tab(spec: dict[str, Any]) -> int:
    factory = SharedEngine(spec["socket"], spec.get("model", {})) if spec.get("socket") else None
    theme = spec.get("theme")
    mode = spec["mode"]
    if mode == "dataset":
        from flowtui.dataset.browse import RunView
        from flowtui.ui.dataset_screen import run_dataset_browser

        return run_dataset_browser(RunView.load(Path(spec["run_dir"])), engine_factory=factory,
                                   theme=theme)
    from flowtui.ui.app import run_explorer

    if mode == "open":
        from flowtui.engine.snapshot import load_snapshot

        return run_explorer(analysis=load_snapshot(spec["snapshot"]), engine_factory=factory,
                            theme=theme, snapshot_path=spec["snapshot"])
    return run_explorer(image=spec["image"], question=spec["question"], engine_factory=factory,
                        max_new_tokens=spec.get("max_new_tokens", 32), theme=theme,
                        self_check=spec.get("self_check", True))


def main(argv: list[str]) -> int:
    try:
        spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
        return run_tab(spec)
    except FlowtuiError as exc:
        # The server checked everything before it started: this is a file changed since.
        print(visible(f"flowtui web tab: {exc}"), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
