"""Helpers for the remote-engine tests: a server session on in-process pipes, raw frame I/O,
comparing analyses exactly, and the command that runs this checkout's flowtui."""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
import threading
from pathlib import Path

import numpy as np

from flowtui.remote.client import RemoteEngine
from flowtui.remote.connection import Connection
from flowtui.remote.protocol import PROTOCOL, FrameReader, FrameWriter
from flowtui.remote.session import Models, Session

ROOT = Path(__file__).resolve().parents[2]


def flowtui_argv(*args: str) -> list[str]:
    """This checkout's flowtui as a command (a subprocess imports the worktree's package)."""
    return [sys.executable, "-m", "flowtui", *args]


def remote_cmd(socket: Path | None = None) -> str:
    """A --remote-cmd for a shell on this machine: this checkout's flowtui, offline."""
    env = f"PYTHONPATH={shlex.quote(str(ROOT))} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1"
    if socket is not None:
        env += f" FLOWTUI_SOCKET={shlex.quote(str(socket))}"
    return f"env {env} {shlex.quote(sys.executable)} -m flowtui"


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update(extra)
    return env


class PipeServer:
    """A server Session in a thread, on two os.pipe pairs. `raw_*` are the client's ends."""

    def __init__(self, engine=None, load=None, **session_kwargs) -> None:
        c2s_r, c2s_w = os.pipe()
        s2c_r, s2c_w = os.pipe()
        self._server_in = os.fdopen(c2s_r, "rb")
        self._server_out = os.fdopen(s2c_w, "wb")
        self.raw_in = os.fdopen(s2c_r, "rb")  # frames from the server
        self.raw_out = os.fdopen(c2s_w, "wb")  # bytes to the server
        if load is None:
            def load(**_kw):
                return engine
        self.models = Models(load)
        self.session = Session(self._server_in, self._server_out, self.models, **session_kwargs)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            self.session.serve()
        finally:
            self._server_out.close()

    def engine(self, model: str | None = None, **kwargs) -> RemoteEngine:
        conn = Connection(self.raw_in, self.raw_out, name="pipe")
        return RemoteEngine.open(conn, model, timeout=30, **kwargs)

    def raw(self) -> RawClient:
        return RawClient(self.raw_in, self.raw_out)


class RawClient:
    """Frames and bytes by hand, for hostile input."""

    def __init__(self, rfile, wfile) -> None:
        self.reader = FrameReader(rfile)
        self.writer = FrameWriter(wfile)
        self.wfile = wfile
        self.hello = self.reader.read()

    def greet(self, protocol: int = PROTOCOL) -> None:
        self.writer.send({"type": "hello", "protocol": protocol, "flowtui": "test"})

    def send(self, header: dict, parts: dict | None = None) -> None:
        self.writer.send(header, parts)

    def write(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()

    def read(self):
        return self.reader.read()

    def until(self, rid: int | None, types=("result", "error")):
        """Frames up to the final one of request `rid`."""
        frames = []
        while True:
            frame = self.reader.read()
            assert frame is not None, "the server closed the stream"
            frames.append(frame)
            if frame.type in types and frame.id == rid:
                return frames


def assert_same_analysis(a, b) -> None:
    """Every field equal, arrays bit for bit; only the creation time (and run times) may differ."""
    for f in dataclasses.fields(a):
        if f.name == "created":
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, f.name
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), f.name
        elif f.name == "truncations":
            assert [same_run(r) for r in x] == [same_run(r) for r in y]
        else:
            assert x == y, f.name


def same_run(run) -> dict:
    d = dataclasses.asdict(run)
    d.pop("seconds")
    return d


def same_sweep(s) -> dict:
    d = dataclasses.asdict(s)
    d.pop("seconds")
    d["logprob"] = d["logprob"].tolist()
    d["same"] = d["same"].tolist()
    return d
