"""The connection under the remote engine: `ssh -T HOST CMD serve --stdio` started with the
user's own ssh (so ~/.ssh/config, the agent, jump hosts and connection sharing all apply and no
port is opened), the handshake, and calls by id over flowtui.remote.protocol.

One reader thread takes frames off the stream and hands them to the call waiting for that id;
the calling thread runs the progress and token callbacks, in order. Cancelling (the `cancel`
poll, or a callback that raises) tells the server to stop and returns at once.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import shlex
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

import numpy as np

from flowtui.engine.analysis import ProgressFn
from flowtui.engine.errors import (
    Cancelled,
    ConnectionLost,
    FlowtuiError,
    InputError,
    ModelLoadError,
    RemoteError,
    SnapshotError,
)
from flowtui.engine.interface import CancelFn, TokenFn
from flowtui.remote.protocol import (
    LIMITS,
    PROTOCOL,
    Frame,
    FrameReader,
    FrameWriter,
    Limits,
    ProtocolError,
    TruncatedFrame,
    progress_from,
)
from flowtui.version import __version__

DEFAULT_REMOTE_CMD = "flowtui"
# ssh may take a while to connect (jump hosts, slow DNS); the model load after it has no limit.
HELLO_TIMEOUT = 60.0
# Server stderr kept for error messages.
TAIL_LINES = 30
LogFn = Callable[[str], None]

_ERRORS: dict[str, type[FlowtuiError]] = {
    "input": InputError, "model": ModelLoadError, "snapshot": SnapshotError,
    "cancelled": Cancelled,
}
# Failures that happened on the server's machine: the message says which one.
_ON_HOST = ("model", "oom", "internal", "flowtui", "version", "protocol", "method")


def remote_exit_reason(host: str, cmd: str, code: int | None, last: str,
                       wanted: str, upgrade: str) -> str | None:
    """One line for the ways `ssh HOST CMD ...` ends before flowtui answers that have nothing to
    do with what was asked: ssh failed (255), CMD missing (127) or not executable (126), or a
    flowtui that lacks `wanted` (told to `upgrade`). None for any other ending."""
    if code == 255:
        text = f"ssh to {host} failed: {last or 'exit code 255'}"
        if any(w in last.lower() for w in ("permission denied", "password", "passphrase",
                                           "host key verification", "interactive")):
            text += (" (flowtui runs ssh with BatchMode=yes and cannot type a password: use a "
                     "key in ssh-agent, or open a shared connection first with ControlMaster)")
        return text
    if code == 127:
        return (f"the remote command {cmd!r} was not found on {host}: install flowtui there, or "
                "give its path with --remote-cmd (e.g. ~/venv/bin/flowtui)")
    if code == 126:
        return f"the remote command {cmd!r} on {host} is not executable: {last}"
    if any(w in last for w in ("unrecognized arguments", "invalid choice",
                               "arguments are required")):
        return f"{cmd!r} on {host} {wanted} ({last}); {upgrade}"
    return None


def ssh_argv(host: str, remote_cmd: str = DEFAULT_REMOTE_CMD,
             ssh_command: str | None = None) -> list[str]:
    """The ssh command line: FLOWTUI_SSH_COMMAND (or `ssh`), -T, BatchMode (a password prompt
    would hang behind the explorer; an agent, a key or a shared connection is needed), the host
    and `CMD serve --stdio`, which the remote shell runs."""
    if not host or host.startswith("-") or any(c.isspace() for c in host):
        raise InputError(f"--remote {host!r} is not a host name ([user@]host or an ssh alias)")
    if not remote_cmd.strip():
        raise InputError("--remote-cmd is empty")
    base = shlex.split(ssh_command or os.environ.get("FLOWTUI_SSH_COMMAND") or "ssh")
    if not base:
        raise InputError("FLOWTUI_SSH_COMMAND is empty")
    return [*base, "-T", "-o", "BatchMode=yes", host, f"{remote_cmd} serve --stdio"]


class Connection:
    """One protocol connection over a pair of byte streams (a process's pipes, or any pair)."""

    def __init__(self, rfile: BinaryIO, wfile: BinaryIO, *, name: str,
                 process: subprocess.Popen | None = None, command: str | None = None,
                 limits: Limits = LIMITS, on_log: LogFn | None = None) -> None:
        self.name = name
        self.command = command
        self.process = process
        self.on_log = on_log
        self.reader = FrameReader(rfile, limits)
        self.writer = FrameWriter(wfile)
        self._wfile = wfile
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.server: dict[str, Any] = {}  # the server's hello
        self.lost: str | None = None  # why the connection ended, once it has
        self.greeted = False
        self._closed = False
        self._ids = itertools.count(1)
        self._pending: dict[int, queue.Queue] = {}
        self._lock = threading.Lock()
        self._hello: queue.Queue = queue.Queue(maxsize=1)
        self._ended = threading.Event()
        self._stderr: threading.Thread | None = None
        if process is not None and process.stderr is not None:
            self._stderr = threading.Thread(target=self._read_stderr, args=(process.stderr,),
                                            daemon=True, name="flowtui-remote-stderr")
            self._stderr.start()
        threading.Thread(target=self._read_frames, daemon=True, name="flowtui-remote").start()

    @classmethod
    def spawn(cls, argv: Sequence[str], *, name: str, command: str | None = None,
              limits: Limits = LIMITS, on_log: LogFn | None = None) -> Connection:
        """Run `argv` (ssh, or a local `flowtui serve --stdio`) and talk to it on its pipes."""
        try:
            process = subprocess.Popen(
                list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                # No controlling terminal: ssh cannot prompt over the explorer, and Ctrl+C in
                # the terminal reaches flowtui, which then closes the connection cleanly.
                start_new_session=True,
            )
        except OSError as exc:
            hint = " (install OpenSSH's client, or set FLOWTUI_SSH_COMMAND)" \
                if os.path.basename(argv[0]) == "ssh" else ""
            raise RemoteError(f"cannot run {argv[0]!r}: {exc.strerror or exc}{hint}") from None
        return cls(process.stdout, process.stdin, name=name, process=process,  # type: ignore[arg-type]
                   command=command, limits=limits, on_log=on_log)

    # --- reading ---------------------------------------------------------------------------
    def _read_stderr(self, stream: BinaryIO) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            self.tail.append(line)
            if self.on_log is not None:
                with contextlib.suppress(Exception):
                    self.on_log(line)

    def _read_frames(self) -> None:
        reason = ""
        try:
            while True:
                try:
                    frame = self.reader.read()
                except TruncatedFrame as exc:
                    reason = str(exc)
                    break
                except ProtocolError as exc:
                    if self.greeted:  # before the hello: a login banner, skipped
                        self._log(f"bad frame from {self.name}: {exc}")
                    continue
                if frame is None:
                    break
                self._route(frame)
        except (OSError, ValueError) as exc:
            reason = str(exc)
        finally:
            self._end(reason)

    def _route(self, frame: Frame) -> None:
        if not self.greeted and frame.type in ("hello", "error") and frame.id is None:
            with contextlib.suppress(queue.Full):
                self._hello.put_nowait(frame)
            return
        with self._lock:
            q = self._pending.get(frame.id) if frame.id is not None else None
        if q is not None:
            q.put(frame)
        elif frame.type == "error" and frame.id is None:
            self._log(f"{self.name}: {frame.header.get('message')}")
        # Anything else belongs to a call that already returned (cancelled): dropped.

    def _log(self, line: str) -> None:
        self.tail.append(line)
        if self.on_log is not None:
            with contextlib.suppress(Exception):
                self.on_log(line)

    def _end(self, reason: str) -> None:
        if self.lost is None:
            self.lost = self._why(reason)
        self._ended.set()
        self._wake()

    def _wake(self) -> None:
        """Every waiting call (and a waiting handshake) ends with self.lost."""
        with contextlib.suppress(queue.Full):
            self._hello.put_nowait(None)
        with self._lock:
            pending = list(self._pending.values())
        for q in pending:
            q.put(None)

    def _why(self, reason: str) -> str:
        """A one-line explanation of why the stream ended, from the exit code and stderr."""
        code = None
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self.process.wait(timeout=5)
            if self._stderr is not None:
                self._stderr.join(timeout=2)
        tail = next((t for t in reversed(self.tail) if t.strip()), "")
        cmd = self.command or DEFAULT_REMOTE_CMD
        if not self.greeted:
            known = remote_exit_reason(self.name, cmd, code, tail,
                                       "does not understand `serve --stdio`",
                                       f"install flowtui {__version__} there")
            if known is not None:
                return known
            exited = f" (exit code {code})" if code is not None else ""
            detail = f": {tail}" if tail else (f": {reason}" if reason else "")
            skipped = bytes(self.reader.skipped[:120])
            if skipped and not tail:
                detail = f": it printed {skipped!r} instead of speaking the flowtui protocol"
            return f"the remote flowtui on {self.name} ended before the handshake{exited}{detail}"
        how = f" (ssh exit code {code})" if code not in (None, 0) else ""
        detail = f": {tail}" if tail else (f": {reason}" if reason else "")
        return f"connection to {self.name} lost{how}{detail}"

    # --- calls -----------------------------------------------------------------------------
    def handshake(self, timeout: float = HELLO_TIMEOUT) -> dict[str, Any]:
        """Wait for the server's hello, check its protocol, answer with ours."""
        try:
            frame = self._hello.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise RemoteError(f"{self.name} did not answer within {timeout:.0f} s "
                              "(is the remote command a flowtui?)") from None
        if frame is None:
            self._ended.wait(10)
            raise RemoteError(self.lost or f"connection to {self.name} ended")
        h = frame.header
        if frame.type == "error":
            self.close()
            raise RemoteError(f"{self.name}: {h.get('message')}")
        if h.get("protocol") != PROTOCOL:
            self.close()
            restart = " and restart its daemon" if h.get("daemon") else ""
            raise RemoteError(
                f"{self.name} runs flowtui {h.get('flowtui', '?')} (protocol "
                f"{h.get('protocol')}) but this is flowtui {__version__} (protocol {PROTOCOL}): "
                f"install the same version on both machines{restart}"
            )
        if self.reader.skipped:
            self._log(f"{self.name} printed {bytes(self.reader.skipped[:200])!r} before the "
                      "protocol started (does a shell startup file print to stdout?)")
        self.server = h
        self.greeted = True
        self._send({"type": "hello", "protocol": PROTOCOL, "flowtui": __version__})
        return h

    def _send(self, header: dict, parts: dict[str, np.ndarray] | None = None) -> None:
        try:
            self.writer.send(header, parts)
        except (OSError, ValueError):
            if self.lost is None:
                self._ended.wait(5)  # the reader explains why, from the exit code and stderr
            raise ConnectionLost(self.lost or f"connection to {self.name} lost") from None

    def call(self, method: str, params: dict[str, Any],
             parts: dict[str, np.ndarray] | None = None, *, progress: ProgressFn | None = None,
             on_token: TokenFn | None = None, cancel: CancelFn | None = None) -> Frame:
        """Send a request and wait for its result, running callbacks for its events. Cancelling
        sends a cancel and raises at once: the server stops at its next step, and a later call
        simply waits for the model behind it."""
        if self.lost is not None:
            raise ConnectionLost(self.lost)
        rid = next(self._ids)
        q: queue.Queue = queue.Queue()
        with self._lock:
            self._pending[rid] = q
        try:
            self._send({"type": "request", "id": rid, "method": method, "params": params}, parts)
            while True:
                if cancel is not None and cancel():
                    self._cancel(rid)
                    raise Cancelled(f"{method} cancelled")
                try:
                    frame = q.get(timeout=0.1)
                except queue.Empty:
                    continue
                if frame is None:
                    raise ConnectionLost(self.lost or f"connection to {self.name} lost")
                kind = frame.type
                try:
                    if kind == "progress" and progress is not None:
                        progress(progress_from(frame.header))
                    elif kind == "token" and on_token is not None:
                        on_token(str(frame.header.get("text", "")))
                except BaseException:
                    self._cancel(rid)
                    raise
                if kind == "result":
                    return frame
                if kind == "error":
                    raise self.error(frame)
        except KeyboardInterrupt:
            self._cancel(rid)
            raise
        finally:
            with self._lock:
                self._pending.pop(rid, None)

    def _cancel(self, rid: int) -> None:
        with contextlib.suppress(FlowtuiError):
            self._send({"type": "cancel", "id": rid})

    def error(self, frame: Frame) -> FlowtuiError:
        kind = str(frame.header.get("kind"))
        message = str(frame.header.get("message", "")).strip() or kind
        if kind in _ON_HOST:
            message = f"{message} (on {self.name})"
        exc = _ERRORS.get(kind, RemoteError)(message)
        exc.kind = kind  # type: ignore[attr-defined]
        return exc

    def close(self) -> None:
        """End the connection: the server sees the end of its input, stops and exits."""
        if self._closed:
            return
        self._closed = True
        if self.lost is None:
            self.lost = f"connection to {self.name} was closed"
        self._wake()  # calls in flight end now, not when the server gets round to it
        with contextlib.suppress(OSError, ValueError):
            self._wfile.close()
        process = self.process
        if process is not None:
            def reap() -> None:
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.terminate()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(timeout=5)
            threading.Thread(target=reap, daemon=True, name="flowtui-remote-reap").start()


