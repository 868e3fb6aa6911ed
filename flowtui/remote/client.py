"""The remote engine's client: an Engine whose model runs on another machine, reached with the
user's own ssh (`ssh -T HOST CMD serve --stdio`), so ~/.ssh/config, the agent, jump hosts and
connection sharing all apply and no port is opened.

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
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

import numpy as np

from flowtui.engine.analysis import Analysis, ModelInfo, ProgressFn, Sweep, TruncationRun
from flowtui.engine.errors import (
    Cancelled,
    ConnectionLost,
    FlowtuiError,
    InputError,
    ModelLoadError,
    RemoteError,
    SnapshotError,
)
from flowtui.engine.images import load_image_notes
from flowtui.engine.interface import CancelFn, ImageInput, TokenFn
from flowtui.remote.protocol import (
    LIMITS,
    PROTOCOL,
    Frame,
    FrameReader,
    FrameWriter,
    Limits,
    ProtocolError,
    TruncatedFrame,
    analysis_from,
    analysis_to,
    info_from,
    progress_from,
    run_from,
    sweep_from,
)
from flowtui.textsafe import visible
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


def _int(value: Any) -> Any:
    return int(value) if isinstance(value, np.integer) else value


class RemoteEngine:
    """Implements flowtui.engine.interface.Engine with the model on the other end of a
    Connection. Results equal the server engine's exactly (arrays travel as .npy)."""

    def __init__(self, conn: Connection, info: ModelInfo, warm: bool = False) -> None:
        self.conn = conn
        self.info = info
        self.warm = warm  # the model was already loaded (a daemon)
        self.location = conn.name
        # Server-side keys of the analyses this connection made or sent, by object identity.
        self._keys: dict[int, tuple[weakref.ref, str]] = {}

    @classmethod
    def open(cls, conn: Connection, model: str | None = None, *, device: str = "auto",
             dtype: str = "auto", quantize: str | None = None, trust_remote_code: bool = False,
             progress: ProgressFn | None = None, timeout: float = HELLO_TIMEOUT) -> RemoteEngine:
        try:
            conn.handshake(timeout)
            frame = conn.call("open", {"model": model, "device": device, "dtype": dtype,
                                       "quantize": quantize,
                                       "trust_remote_code": trust_remote_code},
                              progress=progress)
            result = frame.header["result"]
            return cls(conn, info_from(result["info"]), bool(result.get("warm")))
        except BaseException:
            conn.close()
            raise

    @property
    def on_log(self) -> LogFn | None:
        return self.conn.on_log

    @on_log.setter
    def on_log(self, fn: LogFn | None) -> None:
        """A new sink for the server's log lines: it gets the lines so far, then each new one
        (the explorer sets it once connected; until then nothing may print over its screen)."""
        self.conn.on_log = fn
        if fn is not None:
            for line in list(self.conn.tail):
                with contextlib.suppress(Exception):
                    fn(line)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- analyses the server holds ---------------------------------------------------------
    def _remember(self, a: Analysis, key: str) -> None:
        self._keys = {k: v for k, v in self._keys.items() if v[0]() is not None}
        self._keys[id(a)] = (weakref.ref(a), key)

    def _key(self, a: Analysis) -> str | None:
        ref, key = self._keys.get(id(a), (None, None))
        return key if ref is not None and ref() is a else None

    def _about(self, method: str, a: Analysis, params: dict, **callbacks: Any) -> Frame:
        """A call about analysis `a`: by key when the server holds it, else sent in full (a
        reopened snapshot, a new connection, or one the server has evicted)."""
        key = self._key(a)
        if key is not None:
            try:
                return self.conn.call(method, {**params, "key": key}, **callbacks)
            except RemoteError as exc:
                if getattr(exc, "kind", None) != "unknown_analysis":
                    raise
        manifest, arrays = analysis_to(a, with_image=True)
        frame = self.conn.call(method, {**params, "analysis": manifest}, arrays, **callbacks)
        self._remember(a, str(frame.header["result"]["key"]))
        return frame

    def _result(self, frame: Frame, what: str) -> Any:
        try:
            return frame.header["result"][what]
        except (KeyError, TypeError):
            raise RemoteError(f"{self.conn.name} sent a malformed {what} reply") from None

    # --- the Engine interface --------------------------------------------------------------
    def analyze(self, image: ImageInput, question: str, max_new_tokens: int = 32,
                progress: ProgressFn | None = None, cam: bool = True,
                self_check: bool = True) -> Analysis:
        # Read and decode here: the server gets pixels, never a path, and both sides then hold
        # exactly the same image.
        pil, notes = load_image_notes(image)
        pixels = np.asarray(pil, dtype=np.uint8)
        frame = self.conn.call(
            "analyze",
            {"question": question, "max_new_tokens": _int(max_new_tokens), "cam": bool(cam),
             "self_check": bool(self_check)},
            {"image": pixels}, progress=progress,
        )
        manifest = self._result(frame, "analysis")
        try:
            a = analysis_from(manifest, frame.parts, pixels)
        except ProtocolError as exc:
            raise RemoteError(f"{self.conn.name} sent a bad analysis: {exc}") from None
        a.notes = notes + a.notes  # what was done to the image happened here (EXIF, alpha, ...)
        self._remember(a, str(self._result(frame, "key")))
        return a

    def count_image_tokens(self, image: ImageInput) -> int | None:
        """The image's feature-token count, from the server's processor (no model call); None
        from a server too old to know the method (truncate then checks keep itself)."""
        pil, _ = load_image_notes(image)
        try:
            frame = self.conn.call("count_image_tokens", {},
                                   {"image": np.asarray(pil, dtype=np.uint8)})
        except RemoteError as exc:
            if getattr(exc, "kind", None) == "method":
                return None
            raise
        count = self._result(frame, "count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise RemoteError(f"{self.conn.name} sent a malformed count reply")
        return count

    def truncate(self, analysis: Analysis, layer: int, strategy: str = "all",
                 keep: int | None = None, seed: int = 0, on_token: TokenFn | None = None,
                 progress: ProgressFn | None = None, record: bool = True) -> TruncationRun:
        params = {"layer": _int(layer), "strategy": strategy, "keep": _int(keep),
                  "seed": _int(seed)}
        frame = self._about("truncate", analysis, params, progress=progress, on_token=on_token)
        run = run_from(self._result(frame, "run"))
        if record:  # as the local engine does: the engine records the run on the analysis
            analysis.truncations.append(run)
        return run

    def sweep(self, analysis: Analysis, progress: ProgressFn | None = None,
              cancel: CancelFn | None = None, strategy: str = "all", keep: int | None = None,
              seed: int = 0) -> Sweep:
        params = {"strategy": strategy, "keep": _int(keep), "seed": _int(seed)}
        frame = self._about("sweep", analysis, params, progress=progress, cancel=cancel)
        try:
            sweep = sweep_from(self._result(frame, "sweep"), frame.parts)
        except (KeyError, TypeError, ValueError):
            raise RemoteError(f"{self.conn.name} sent a malformed sweep reply") from None
        if strategy == "all":
            analysis.set_sweep(sweep)
        return sweep


def _stderr_log(host: str) -> LogFn:
    def show(line: str) -> None:
        print(visible(f"[{host}] {line}"), file=sys.stderr, flush=True)

    return show


def connect(host: str, model: str | None = None, *, device: str = "auto", dtype: str = "auto",
            quantize: str | None = None, trust_remote_code: bool = False,
            remote_cmd: str | None = None, ssh_command: str | None = None,
            progress: ProgressFn | None = None, on_log: LogFn | None = None,
            timeout: float = HELLO_TIMEOUT) -> RemoteEngine:
    """An Engine running `model` on `host`, reached with `ssh -T host CMD serve --stdio`.

    host: [user@]host or an alias from ~/.ssh/config. remote_cmd: how to run flowtui there
    (default `flowtui`; a venv path, or `env VAR=... /path/python -m flowtui`). ssh_command (or
    $FLOWTUI_SSH_COMMAND) replaces `ssh`, e.g. `ssh -F ./cfg -i key`. The server's log lines go
    to `on_log` (default: stderr, prefixed with the host). Raises FlowtuiError subclasses with
    one-line messages; close() (or a with block) ends the remote process.
    """
    cmd = remote_cmd or DEFAULT_REMOTE_CMD
    argv = ssh_argv(host, cmd, ssh_command)
    conn = Connection.spawn(argv, name=host, command=cmd,
                            on_log=on_log if on_log is not None else _stderr_log(host))
    return RemoteEngine.open(conn, model, device=device, dtype=dtype, quantize=quantize,
                             trust_remote_code=trust_remote_code, progress=progress,
                             timeout=timeout)


def connect_command(argv: Sequence[str], model: str | None = None, *, name: str = "local server",
                    on_log: LogFn | None = None, progress: ProgressFn | None = None,
                    timeout: float = HELLO_TIMEOUT, **options: Any) -> RemoteEngine:
    """Like connect(), over any command that speaks the protocol on its stdin/stdout (e.g.
    `flowtui serve --stdio` on this machine): for tests and benchmarks."""
    conn = Connection.spawn(argv, name=name, command=" ".join(argv), on_log=on_log)
    return RemoteEngine.open(conn, model, progress=progress, timeout=timeout, **options)


__all__ = ["Connection", "RemoteEngine", "connect", "connect_command", "ssh_argv"]
