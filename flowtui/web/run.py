"""Start what `flowtui web` serves: the engine daemon (only when the mode can use a model), the
spec every tab reads, and the web server; stop them in the reverse order."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

from flowtui.engine.filesafe import write_atomic
from flowtui.remote.local_daemon import LocalDaemon
from flowtui.textsafe import visible
from flowtui.web.server import WebServer, announce


def tab_command(spec_path: Path, python: str = sys.executable) -> str:
    """The shell command textual-serve runs for each tab."""
    return shlex.join([python, "-m", "flowtui.web.tab", str(spec_path)])


def serve_web(spec: dict[str, Any], *, host: str = "127.0.0.1", port: int = 0,
              model: dict[str, Any] | None = None, title: str = "flowtui",
              out: TextIO | None = None, log: TextIO | None = None) -> int:
    """Serve `spec` (see flowtui.web.tab) until Ctrl+C/SIGTERM. With `model` (the options of
    flowtui.remote.client.connect_socket), a daemon is started and the model loaded in it at
    once, before any tab asks; every tab's engine is a session of it."""
    out = out or sys.stdout
    folder = Path(tempfile.mkdtemp(prefix="flowtui-web-"))  # mode 700: the spec is ours alone
    daemon = LocalDaemon(log=log) if model is not None else None
    try:
        if daemon is not None:
            daemon.start()
            daemon.warm(on_error=lambda m: print(visible(f"flowtui web: the model did not "
                                                         f"load: {m}"), file=sys.stderr),
                        **model)  # type: ignore[arg-type]
            spec = {**spec, "socket": str(daemon.socket), "model": model}
        spec_path = folder / "tab.json"
        write_atomic(spec_path, lambda f: f.write(json.dumps(spec).encode()))
        server = WebServer(tab_command(spec_path), host=host, port=port, title=title,
                           on_listen=lambda url: announce(url, host, out))
        server.serve()
        return 0
    finally:
        if daemon is not None:
            daemon.stop()
        shutil.rmtree(folder, ignore_errors=True)


__all__ = ["serve_web", "tab_command"]
