"""The remote engine's server: `flowtui serve --stdio` (one session on stdin/stdout) and
`flowtui serve --daemon` (models kept warm for many sessions behind an owner-only Unix socket).

A session speaks flowtui.remote.protocol. It reads no path from the wire: the image arrives as
pixels, snapshots are written by the client, and the only thing it loads is the model asked for.
Each request runs in its own thread, so a cancel (or the end of the stream) is read while the
model works; the engine's callbacks raise Cancelled once the request is cancelled.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import sys
import tempfile
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from flowtui.engine.analysis import Analysis, Progress
from flowtui.engine.errors import (
    Cancelled,
    FlowtuiError,
    InputError,
    ModelLoadError,
    RemoteError,
    SnapshotError,
)
from flowtui.engine.interface import Engine
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
    image_part,
    param,
    progress_to,
    run_to,
    sweep_to,
)
from flowtui.textsafe import visible
from flowtui.version import __version__

LoadFn = Callable[..., Engine]  # flowtui.load_engine's keywords: model, device, dtype, ...
# Analyses a session keeps for reruns by key (the engine keeps its own tensors for fewer).
MAX_ANALYSES = 8


def log(message: str) -> None:
    """Server logs go to stderr (the client shows them); stdout carries only frames."""
    print(f"flowtui serve: {visible(message, keep_newlines=True)}", file=sys.stderr, flush=True)


def _load_engine(**kwargs: Any) -> Engine:
    from flowtui.engine import load_engine

    return load_engine(**kwargs)


@dataclass(frozen=True)
class ModelSpec:
    model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    quantize: str | None = None
    trust_remote_code: bool = False

    @property
    def name(self) -> str:
        return self.model or "the built-in toy model"


class Models:
    """Loaded engines by spec. A daemon's sessions share them: the second session on a model
    gets the loaded one (warm); two sessions asking at once wait for one load."""

    def __init__(self, load: LoadFn | None = None, max_models: int = 1) -> None:
        self._load = load or _load_engine
        self.max_models = max(1, max_models)
        self._engines: OrderedDict[ModelSpec, Engine] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[ModelSpec, threading.Lock] = {}

    def get(self, spec: ModelSpec, progress: Callable[[Progress], None]) -> tuple[Engine, bool]:
        with self._lock:
            gate = self._loading.setdefault(spec, threading.Lock())
        with gate:
            with self._lock:
                if spec in self._engines:
                    self._engines.move_to_end(spec)
                    return self._engines[spec], True
            start = time.perf_counter()
            engine = self._load(model=spec.model, device=spec.device, dtype=spec.dtype,
                                quantize=spec.quantize, trust_remote_code=spec.trust_remote_code,
                                progress=progress)
            log(f"loaded {engine.info.name} in {time.perf_counter() - start:.1f} s")
            with self._lock:
                self._engines[spec] = engine
                while len(self._engines) > self.max_models:
                    _, old = self._engines.popitem(last=False)
                    log(f"unloaded {old.info.name} (more than {self.max_models} kept)")
            return engine, False


def error_of(exc: BaseException) -> tuple[str, str]:
    """(kind, one-line message) for an error frame."""
    first = (str(exc).strip().splitlines() or [""])[0][:500]
    if isinstance(exc, ProtocolError):
        return exc.kind, first
    if isinstance(exc, Cancelled):
        return "cancelled", first or "cancelled"
    if isinstance(exc, InputError):
        return "input", first
    if isinstance(exc, ModelLoadError):
        return "model", first
    if isinstance(exc, SnapshotError):
        return "snapshot", first
    if isinstance(exc, FlowtuiError):
        return "flowtui", first
    if isinstance(exc, MemoryError) or "OutOfMemory" in type(exc).__name__:
        return "oom", f"out of memory on the server: {first}" if first else "out of memory"
    return "internal", f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class _Stop(Exception):
    """Ends a session (a version mismatch)."""


class Session:
    """One client: frames in, frames out, requests in threads."""

    def __init__(self, rfile: BinaryIO, wfile: BinaryIO, models: Models, *,
                 daemon: bool = False, limits: Limits = LIMITS, name: str = "session") -> None:
        self.reader = FrameReader(rfile, limits)
        self.writer = FrameWriter(wfile)
        self.models = models
        self.daemon = daemon
        self.name = name
        self.engine: Engine | None = None
        self.analyses: OrderedDict[str, Analysis] = OrderedDict()
        self._keys = 0
        self.running: dict[int, threading.Event] = {}
        self.threads: list[threading.Thread] = []
        self.greeted = False
        self.closed = False
        self._lock = threading.Lock()

    # --- frames out ------------------------------------------------------------------------
    def send(self, header: dict, parts: dict[str, np.ndarray] | None = None) -> None:
        if self.closed:
            return
        try:
            self.writer.send(header, parts)
        except (OSError, ValueError):  # the client is gone: the reader sees the end next
            self.closed = True

    def error(self, rid: int | None, kind: str, message: str) -> None:
        self.send({"type": "error", "id": rid, "kind": kind, "message": message})

    # --- the loop --------------------------------------------------------------------------
    def serve(self) -> None:
        """Serve until the stream ends; then every running request is cancelled."""
        self.send({"type": "hello", "protocol": PROTOCOL, "flowtui": __version__,
                   "daemon": self.daemon, "pid": os.getpid(), "host": socket.gethostname()})
        try:
            while not self.closed:
                try:
                    frame = self.reader.read()
                except TruncatedFrame as exc:
                    self.error(None, "protocol", str(exc))
                    break
                except ProtocolError as exc:
                    self.error(exc.id, exc.kind, str(exc))
                    continue
                except (OSError, ValueError):
                    break
                if frame is None:
                    break
                try:
                    self.dispatch(frame)
                except _Stop:
                    raise
                except Exception as exc:  # noqa: BLE001 - a bad message never ends the session
                    kind, message = error_of(exc)
                    rid = getattr(exc, "id", None)
                    self.error(frame.id if rid is None else rid, kind, message)
        except _Stop:
            pass
        finally:
            self.cancel_all()

    def cancel_all(self) -> None:
        with self._lock:
            for event in self.running.values():
                event.set()

    def wait(self, timeout: float) -> bool:
        """Wait for running requests to stop; False if some still run after `timeout`."""
        deadline = time.monotonic() + timeout
        for t in list(self.threads):
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)

    def dispatch(self, frame: Frame) -> None:
        kind, rid = frame.type, frame.id
        if kind == "hello":
            return self._hello(frame.header)
        if not self.greeted:
            raise ProtocolError("the first message must be hello", rid)
        if kind == "cancel":
            with self._lock:
                event = self.running.get(rid) if rid is not None else None
            if event is not None:  # an unknown id has just finished: nothing to do
                event.set()
            return
        if kind != "request":
            raise ProtocolError(f"unknown message type {frame.header.get('type')!r}", rid)
        if rid is None:
            raise ProtocolError("a request needs an integer 'id'")
        method = frame.header.get("method")
        handler = METHODS.get(method) if isinstance(method, str) else None
        if handler is None:
            raise ProtocolError(
                f"unknown method {method!r}; this server knows {', '.join(sorted(METHODS))}",
                rid, "method",
            )
        params = frame.header.get("params", {})
        if not isinstance(params, dict):
            raise ProtocolError("'params' must be a JSON object", rid, "input")
        call = handler(self, rid, params, frame.parts)  # checks the parameters now
        event = threading.Event()
        with self._lock:
            if rid in self.running:
                raise ProtocolError(f"request {rid} is already running", rid)
            self.running[rid] = event
        thread = threading.Thread(target=self._run, args=(rid, method, call, event),
                                  daemon=True, name=f"flowtui-{method}-{rid}")
        self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        thread.start()

    def _hello(self, header: dict) -> None:
        theirs = header.get("protocol")
        if theirs != PROTOCOL:
            self.error(None, "version",
                       f"the client speaks flowtui protocol {theirs} (flowtui "
                       f"{header.get('flowtui', '?')}) but this server speaks protocol {PROTOCOL} "
                       f"(flowtui {__version__}); install the same flowtui version on both sides")
            raise _Stop
        self.greeted = True

    def _run(self, rid: int, method: str, call: Callable, event: threading.Event) -> None:
        def progress(p: Progress) -> None:
            if event.is_set():
                raise Cancelled(f"{method} cancelled")
            self.send({"type": "progress", "id": rid, **progress_to(p)})

        def on_token(text: str) -> None:
            if event.is_set():
                raise Cancelled(f"{method} cancelled")
            self.send({"type": "token", "id": rid, "text": text})

        try:
            result, parts = call(event, progress, on_token)
            self.send({"type": "result", "id": rid, "result": result}, parts)
        except BaseException as exc:  # noqa: BLE001 - every failure becomes an error frame
            kind, message = error_of(exc)
            if kind == "internal":
                log(f"{self.name}: {method} failed:\n{traceback.format_exc().rstrip()}")
            self.error(rid, kind, message)
        finally:
            with self._lock:
                self.running.pop(rid, None)

    # --- analyses --------------------------------------------------------------------------
    def remember(self, a: Analysis) -> str:
        with self._lock:  # requests run in threads
            self._keys += 1
            key = f"a{self._keys}"
            self.analyses[key] = a
            while len(self.analyses) > MAX_ANALYSES:
                self.analyses.popitem(last=False)
            return key

    def analysis(self, rid: int, params: dict, parts: dict) -> tuple[str, Analysis]:
        """The analysis a rerun is about: by key, or sent in full (a reopened snapshot, a new
        connection, or one this session evicted)."""
        manifest = param(params, "analysis", (dict, type(None)), None, rid)
        if manifest is not None:
            a = analysis_from(manifest, parts, image_part(parts, rid), rid)
            return self.remember(a), a
        key = param(params, "key", (str,), rid=rid)
        with self._lock:
            if key not in self.analyses:
                raise ProtocolError(f"this server does not hold analysis {key!r}; send it in "
                                    "full", rid, "unknown_analysis")
            self.analyses.move_to_end(key)
            return key, self.analyses[key]

    def need_engine(self, rid: int) -> Engine:
        if self.engine is None:
            raise ProtocolError("no model is open: send 'open' first", rid)
        return self.engine


# --- methods: each checks its parameters, then returns the call to run in a thread ------------
def _open(s: Session, rid: int, params: dict, parts: dict) -> Callable:
    spec = ModelSpec(
        model=param(params, "model", (str, type(None)), None, rid),
        device=param(params, "device", (str,), "auto", rid),
        dtype=param(params, "dtype", (str,), "auto", rid),
        quantize=param(params, "quantize", (str, type(None)), None, rid),
        trust_remote_code=param(params, "trust_remote_code", (bool,), False, rid),
    )

    def call(event, progress, on_token):
        engine, warm = s.models.get(spec, progress)
        with s._lock:
            s.engine = engine
            s.analyses.clear()
        if warm:
            log(f"{s.name}: {spec.name} is warm")
        return {"info": asdict(engine.info), "warm": warm}, None

    return call


def _analyze(s: Session, rid: int, params: dict, parts: dict) -> Callable:
    question = param(params, "question", (str,), rid=rid)
    max_new_tokens = param(params, "max_new_tokens", (int,), 32, rid)
    cam = param(params, "cam", (bool,), True, rid)
    self_check = param(params, "self_check", (bool,), True, rid)
    image = image_part(parts, rid)
    engine = s.need_engine(rid)

    def call(event, progress, on_token):
        a = engine.analyze(image, question, max_new_tokens=max_new_tokens, progress=progress,
                           cam=cam, self_check=self_check)
        manifest, arrays = analysis_to(a, with_image=False)  # the client holds the pixels
        return {"key": s.remember(a), "analysis": manifest}, arrays

    return call


def _count_image_tokens(s: Session, rid: int, params: dict, parts: dict) -> Callable:
    image = image_part(parts, rid)
    count = getattr(s.need_engine(rid), "count_image_tokens", None)  # an optional engine call
    if count is None:
        raise ProtocolError("this server's engine cannot count image tokens", rid, "method")

    def call(event, progress, on_token):
        return {"count": int(count(image))}, None

    return call


def _rerun_params(rid: int, params: dict) -> dict:
    keep = param(params, "keep", (int, type(None)), None, rid)
    return {"strategy": param(params, "strategy", (str,), "all", rid), "keep": keep,
            "seed": param(params, "seed", (int,), 0, rid)}


def _truncate(s: Session, rid: int, params: dict, parts: dict) -> Callable:
    engine = s.need_engine(rid)
    layer = param(params, "layer", (int,), rid=rid)
    options = _rerun_params(rid, params)
    key, a = s.analysis(rid, params, parts)

    def call(event, progress, on_token):
        run = engine.truncate(a, layer, on_token=on_token, progress=progress, **options)
        return {"key": key, "run": run_to(run)}, None

    return call


def _sweep(s: Session, rid: int, params: dict, parts: dict) -> Callable:
    engine = s.need_engine(rid)
    options = _rerun_params(rid, params)
    key, a = s.analysis(rid, params, parts)

    def call(event, progress, on_token):
        sweep = engine.sweep(a, progress=progress, cancel=event.is_set, **options)
        meta, arrays = sweep_to(sweep)
        return {"key": key, "sweep": meta}, arrays

    return call


METHODS: dict[str, Callable[..., Callable]] = {
    "open": _open, "analyze": _analyze, "truncate": _truncate, "sweep": _sweep,
    "count_image_tokens": _count_image_tokens,
}


# --- stdio ---------------------------------------------------------------------------------------
def _private_streams() -> tuple[BinaryIO, BinaryIO]:
    """The protocol's own copies of stdin/stdout. File descriptors 0 and 1 are then pointed at
    /dev/null and stderr, so a library that reads stdin or prints cannot touch the frames."""
    rfile = os.fdopen(os.dup(0), "rb")
    wfile = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return rfile, wfile


def serve_stdio(load: LoadFn | None = None, socket_path: str | Path | None = None,
                relay: bool = True, limits: Limits = LIMITS) -> int:
    """`flowtui serve --stdio`: relay to the warm daemon if one runs, else serve one session
    here. Returns when the client closes the stream (in-flight work is cancelled)."""
    rfile, wfile = _private_streams()
    if relay:
        path = Path(socket_path) if socket_path else default_socket_path()
        sock = connect_daemon(path)
        if sock is not None:
            log(f"relaying to the warm daemon at {path}")
            return relay_streams(sock, rfile, wfile)
    session = Session(rfile, wfile, Models(load, max_models=1), limits=limits, name="stdio")
    session.serve()
    if not session.wait(timeout=2.0):
        # A forward pass cannot be interrupted; nobody is listening for its result any more.
        sys.stderr.flush()
        os._exit(0)
    return 0


def relay_streams(sock: socket.socket, rfile: BinaryIO, wfile: BinaryIO) -> int:
    """Copy bytes both ways until the daemon closes; the client's end of stream is passed on
    (the daemon then cancels this session's work and keeps serving others)."""

    def upstream() -> None:
        try:
            while chunk := rfile.read1(1 << 16):  # type: ignore[attr-defined]
                sock.sendall(chunk)
        except OSError:
            pass
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    threading.Thread(target=upstream, daemon=True, name="flowtui-relay").start()
    try:
        while chunk := sock.recv(1 << 16):
            wfile.write(chunk)
            wfile.flush()
    except OSError:
        pass
    finally:
        sock.close()
    return 0


# --- daemon --------------------------------------------------------------------------------------
def default_socket_path() -> Path:
    """$FLOWTUI_SOCKET, else <tmp>/flowtui-<uid>/daemon.sock in a folder only its owner opens."""
    env = os.environ.get("FLOWTUI_SOCKET")
    if env:
        return Path(env).expanduser()
    return Path(tempfile.gettempdir()) / f"flowtui-{os.getuid()}" / "daemon.sock"


def _private_folder(folder: Path) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = folder.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise InputError(
            f"{folder} must be a folder owned by you that no one else can open (mode 700); "
            "refusing to put the daemon's socket there"
        )


def _own_socket(path: Path) -> bool:
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISSOCK(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def connect_daemon(path: Path) -> socket.socket | None:
    """A connection to a daemon listening on `path`, or None. A socket someone else owns, or
    that others may open, is ignored: sessions only ever talk to their owner's daemon."""
    if not _own_socket(path):
        if path.exists():
            log(f"ignoring {path}: not a socket owned by you with mode 600")
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    return sock


def _peer_uid(conn: socket.socket) -> int | None:
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:  # not Linux: the socket's mode and folder keep others out
        return None
    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, option,
                                                          struct.calcsize("3i")))
    return uid


def serve_daemon(socket_path: str | Path | None = None, load: LoadFn | None = None,
                 max_models: int = 1, limits: Limits = LIMITS,
                 ready: Callable[[Path], None] | None = None) -> int:
    """`flowtui serve --daemon`: keep models loaded for every session of this user. Runs in the
    foreground until SIGTERM or Ctrl+C; removes its socket on the way out."""
    import signal

    explicit = socket_path is not None or bool(os.environ.get("FLOWTUI_SOCKET"))
    path = Path(socket_path) if socket_path else default_socket_path()
    if not explicit:
        _private_folder(path.parent)  # <tmp>/flowtui-<uid>: made private, or refused
    elif not path.parent.is_dir():
        raise InputError(f"socket {path}: folder {path.parent} does not exist")
    if path.exists() or path.is_symlink():
        alive = connect_daemon(path)
        if alive is not None:
            alive.close()
            raise InputError(f"a flowtui daemon already listens on {path}")
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise InputError(f"{path} exists and is not a socket; remove it or pick --socket")
        path.unlink()  # a stale socket from a daemon that died
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket is born owner-only: no window where others can connect
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    inode = path.stat().st_ino
    listener.listen(16)
    models = Models(load, max_models)

    def stop(signum, _frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
    log(f"daemon (pid {os.getpid()}, flowtui {__version__}) listening on {path}")
    if ready is not None:
        ready(path)
    count = 0
    try:
        while True:
            conn, _ = listener.accept()
            uid = _peer_uid(conn)
            if uid is not None and uid != os.getuid():
                log(f"refused a connection from uid {uid}")
                conn.close()
                continue
            count += 1
            threading.Thread(target=_daemon_session, args=(conn, models, limits, count),
                             daemon=True, name=f"flowtui-session-{count}").start()
    except KeyboardInterrupt:
        log("daemon stopping")
    finally:
        listener.close()
        try:
            if path.stat().st_ino == inode:
                path.unlink()
        except OSError:
            pass
    return 0


def _daemon_session(conn: socket.socket, models: Models, limits: Limits, number: int) -> None:
    name = f"session {number}"
    log(f"{name} connected")
    with conn, conn.makefile("rb") as rfile, conn.makefile("wb") as wfile:
        session = Session(rfile, wfile, models, daemon=True, limits=limits, name=name)
        session.serve()
    log(f"{name} ended")


__all__ = ["METHODS", "Models", "ModelSpec", "RemoteError", "Session", "default_socket_path",
           "error_of", "serve_daemon", "serve_stdio"]
