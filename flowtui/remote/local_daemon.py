"""A `flowtui serve --daemon` child process that a front end (the web server) starts for itself:
on a socket in a fresh private folder, so it never meets the user's own daemon; the model loaded
once and shared by every session that connects; stopped with its owner.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from flowtui.engine.errors import FlowtuiError, RemoteError
from flowtui.remote.server import connect_daemon

# A daemon answers on its socket well within this (it loads nothing before a session asks).
START_TIMEOUT = 60.0


def _end_with_parent() -> None:
    """In the child, before exec: on Linux, SIGTERM when the process that started it dies, even
    by SIGKILL, so a killed web server never leaves a model holding GPU memory behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


class LocalDaemon:
    """`python -m flowtui serve --daemon --socket <private folder>/engine.sock`, its log lines
    going to `log` (default: this process's stderr). `warm(**model)` loads the model in it in the
    background, so that even the first session finds it loaded or loading."""

    def __init__(self, log: TextIO | None = None, python: str = sys.executable) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="flowtui-web-"))  # mode 700: only us
        self.socket = self.folder / "engine.sock"
        self.python = python
        self.log = log
        self.process: subprocess.Popen | None = None
        self.warm_error: str | None = None
        self._warm_thread: threading.Thread | None = None

    def start(self, timeout: float = START_TIMEOUT) -> LocalDaemon:
        argv = [self.python, "-m", "flowtui", "serve", "--daemon", "--socket", str(self.socket),
                "--max-models", "1"]
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self.log if self.log is not None else None,
            # Its own process group: Ctrl+C in the terminal reaches the web server, which then
            # stops the daemon itself (after the sessions that use it).
            start_new_session=True,
            preexec_fn=_end_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RemoteError(f"the engine daemon exited at start (exit code "
                                  f"{self.process.returncode}); its log says why")
            sock = connect_daemon(self.socket)
            if sock is not None:
                sock.close()
                return self
            time.sleep(0.05)
        self.stop()
        raise RemoteError(f"the engine daemon did not listen on {self.socket} within "
                          f"{timeout:.0f} s")

    def warm(self, model: str | None = None, on_error: Callable[[str], None] | None = None,
             **options: Any) -> None:
        """Load `model` in the daemon now, in a thread: one session that opens it and leaves
        (the daemon keeps it). A failure is kept in `warm_error` and given to `on_error`; each
        session that asks for the model later gets it as its own error too."""

        def load() -> None:
            from flowtui.remote.client import connect_socket

            try:
                connect_socket(self.socket, model, name="engine daemon", **options).close()
            except FlowtuiError as exc:
                self.warm_error = str(exc)
                if on_error is not None:
                    on_error(self.warm_error)

        self._warm_thread = threading.Thread(target=load, daemon=True, name="flowtui-warm")
        self._warm_thread.start()

    def wait_warm(self, timeout: float | None = None) -> bool:
        """Whether the warm-up load has finished (well or not) within `timeout`."""
        if self._warm_thread is None:
            return True
        self._warm_thread.join(timeout)
        return not self._warm_thread.is_alive()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the daemon removes its socket), then SIGKILL if it does not end in time;
        the private folder goes with it."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                # A forward pass cannot be interrupted: nobody waits for its result any more.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=timeout)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> LocalDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["LocalDaemon"]
