"""The remote engine: an Engine whose model runs on another machine, over a
flowtui.remote.connection (`connect(HOST, model=...)`), with the same calls as a local one.
"""

from __future__ import annotations

import contextlib
import io
import socket
import sys
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flowtui.engine.analysis import Analysis, Lens, ModelInfo, ProgressFn, Sweep, TruncationRun
from flowtui.engine.errors import (
    FlowtuiError,
    RemoteError,
    SnapshotError,
)
from flowtui.engine.images import load_image_notes
from flowtui.engine.interface import CancelFn, ImageInput, TokenFn
from flowtui.engine.knockout_flows import KnockoutResult
from flowtui.engine.lens_codec import decode_lens
from flowtui.remote.connection import (
    DEFAULT_REMOTE_CMD,
    HELLO_TIMEOUT,
    Connection,
    LogFn,
    ssh_argv,
)
from flowtui.remote.protocol import (
    Frame,
    ProtocolError,
    analysis_from,
    analysis_to,
    info_from,
    knockout_from,
    run_from,
    sweep_from,
)
from flowtui.textsafe import visible


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
                self_check: bool = True, per_token: bool = False) -> Analysis:
        # Read and decode here: the server gets pixels, never a path, and both sides then hold
        # exactly the same image.
        pil, notes = load_image_notes(image)
        pixels = np.asarray(pil, dtype=np.uint8)
        params = {"question": question, "max_new_tokens": _int(max_new_tokens), "cam": bool(cam),
                  "self_check": bool(self_check)}
        if per_token:  # only when asked: a server older than it still takes every other call
            params["per_token"] = True
        frame = self.conn.call(
            "analyze", params,
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

    def knockout(self, analysis: Analysis, flows: str | Sequence[str], window: int | None = None,
                 layers: tuple[int, int] | str | None = None, greedy: bool = False,
                 progress: ProgressFn | None = None,
                 cancel: CancelFn | None = None) -> KnockoutResult:
        params = {"flows": flows if isinstance(flows, str) else ",".join(flows),
                  "window": _int(window), "greedy": bool(greedy),
                  "layers": None if layers is None else (
                      layers if isinstance(layers, str) else f"{layers[0]}:{layers[1]}")}
        frame = self._about("knockout", analysis, params, progress=progress, cancel=cancel)
        try:
            result = knockout_from(self._result(frame, "knockout"), frame.parts,
                                   analysis.num_layers)
        except FlowtuiError as exc:
            raise RemoteError(f"{self.conn.name} sent a malformed knockout reply: {exc}") from None
        analysis.knockout = result
        return result


    def lens(self, analysis: Analysis, word: str | None = None,
             progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> Lens:
        frame = self._about("lens", analysis, {"word": word}, progress=progress, cancel=cancel)
        try:
            lens = decode_lens(self._result(frame, "lens"), frame.parts, analysis.num_layers,
                               analysis.num_features)
        except SnapshotError as exc:
            raise RemoteError(f"{self.conn.name} sent a bad lens: {exc}") from None
        if lens is None:
            raise RemoteError(f"{self.conn.name} sent an empty lens reply")
        if word is None:  # as the local engine does: the default word's lens is kept
            analysis.lens = lens
        return lens


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


class _SendEnd(io.BufferedWriter):
    """The sending half of a socket: closing it tells the daemon this session is over (a
    shutdown, while the receiving half may still be open in the reader thread)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(socket.SocketIO(sock, "wb"))
        self._sock = sock

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.flush()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)
        super().close()


def connect_socket(path: str | Path, model: str | None = None, *, name: str = "daemon",
                   progress: ProgressFn | None = None, timeout: float = HELLO_TIMEOUT,
                   **options: Any) -> RemoteEngine:
    """An Engine served by the `flowtui serve --daemon` listening on `path` (one of this user's:
    see server.connect_daemon), so the model it holds is shared and stays loaded. `name` is
    what the explorer's status line calls the place the model runs. Closing ends only this
    session; the daemon keeps serving."""
    from flowtui.remote.server import connect_daemon

    sock = connect_daemon(Path(path))
    if sock is None:
        raise RemoteError(f"no flowtui daemon answers on {path}")
    conn = Connection(sock.makefile("rb"), _SendEnd(sock), name=name,
                      command=f"daemon at {path}")
    return RemoteEngine.open(conn, model, progress=progress, timeout=timeout, **options)


__all__ = ["Connection", "RemoteEngine", "connect", "connect_command", "connect_socket",
           "ssh_argv"]
