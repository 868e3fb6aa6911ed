"""One remote session: the models a server holds and the requests of one client.

A session speaks flowtui.remote.protocol. It reads no path from the wire: the image arrives as
pixels, snapshots are written by the client, and the only thing it loads is the model asked for.
Each request runs in its own thread, so a cancel (or the end of the stream) is read while the
model works; the engine's callbacks raise Cancelled once the request is cancelled.
flowtui.remote.server runs sessions on stdin/stdout or behind the daemon's socket.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

import numpy as np

from flowtui.engine.analysis import Analysis, Progress
from flowtui.engine.errors import (
    Cancelled,
    FlowtuiError,
    InputError,
    ModelLoadError,
    SnapshotError,
)
from flowtui.engine.interface import Engine
from flowtui.engine.lens_codec import encode_lens
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
    knockout_to,
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
    per_token = param(params, "per_token", (bool,), False, rid)
    image = image_part(parts, rid)
    engine = s.need_engine(rid)

    def call(event, progress, on_token):
        a = engine.analyze(image, question, max_new_tokens=max_new_tokens, progress=progress,
                           cam=cam, self_check=self_check, per_token=per_token)
        manifest, arrays = analysis_to(a, with_image=False)  # the client holds the pixels
        return {"key": s.remember(a), "analysis": manifest}, arrays

    return call


def _count_image_tokens(s: Session, rid: int, params: dict, parts: dict) -> Callable:
    image = image_part(parts, rid)
    engine = s.need_engine(rid)

    def call(event, progress, on_token):
        n = engine.count_image_tokens(image)
        if n is None:
            raise ProtocolError("this server's engine cannot count image tokens", rid, "method")
        return {"count": int(n)}, None

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


def _lens(s: Session, rid: int, params: dict, parts: dict) -> Callable:
    engine = s.need_engine(rid)
    word = param(params, "word", (str, type(None)), None, rid)
    key, a = s.analysis(rid, params, parts)

    def call(event, progress, on_token):
        meta, arrays = encode_lens(engine.lens(a, word, progress=progress, cancel=event.is_set))
        return {"key": key, "lens": meta}, arrays

    return call


def _knockout(s: Session, rid: int, params: dict, parts: dict) -> Callable:
    engine = s.need_engine(rid)
    flows = param(params, "flows", (str,), rid=rid)
    window = param(params, "window", (int, type(None)), None, rid)
    layers = param(params, "layers", (str, type(None)), None, rid)
    greedy = param(params, "greedy", (bool,), False, rid)
    key, a = s.analysis(rid, params, parts)

    def call(event, progress, on_token):
        result = engine.knockout(a, flows, window=window, layers=layers, greedy=greedy,
                                 progress=progress, cancel=event.is_set)
        meta, arrays = knockout_to(result)
        return {"key": key, "knockout": meta}, arrays

    return call


METHODS: dict[str, Callable[..., Callable]] = {
    "open": _open, "analyze": _analyze, "truncate": _truncate, "sweep": _sweep,
    "count_image_tokens": _count_image_tokens, "lens": _lens,
    "knockout": _knockout,
}


__all__ = ["METHODS", "LoadFn", "Models", "ModelSpec", "Session", "error_of", "log"]
