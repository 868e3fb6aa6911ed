"""Shared fixtures: tiny LLaVA models saved to disk and loaded through the public path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import textual._wait
import torch

# Tests never reach a hub: any attempt fails at once instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from support.images import random_image
from support.tiny_models import TinyModels

from flowtui.selftest.tiny_llava import build_tiny_llava


def pytest_configure(config) -> None:
    # Pilot's `press` and `pause` wait for "idle" by sleeping in 20 ms slices until a slice
    # passes with < 1 ms of process CPU time: at least 40 ms of sleep per key, a third of the
    # fast lane's wall time. Slices of 4 ms keep the same test (< 5 % CPU over a slice) and the
    # same 1 s ceiling. Tests that need a worker finished wait for it (support.pilot.settle), and
    # those that need a screen refresh wait for it (support.pilot.until), never for a duration.
    textual._wait.SLEEP_GRANULARITY = 0.004
    textual._wait.SLEEP_IDLE = textual._wait.SLEEP_GRANULARITY / 20
    # Under pytest-xdist (`-n N`) the workers share the cores: torch's thread pool in each would
    # spin against the others', so each worker, and what it starts, computes on one thread.
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_paths(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {g: build_tiny_llava(root / f"tiny_{g}", g) for g in ("a", "b")}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> TinyModels:
    """Every tiny family model, built and loaded at most once in the session."""
    return TinyModels(tmp_path_factory.mktemp("families"))


@pytest.fixture(scope="session")
def engines(tiny_paths):
    import flowtui

    return {g: flowtui.load_engine(str(p), device="cpu", dtype="float32") for g, p in tiny_paths.items()}


@pytest.fixture(scope="session")
def analyses(engines):
    """One analysis per geometry, shared by the read-only tests."""
    return {
        g: e.analyze(random_image(1), "Is there a red circle?", max_new_tokens=5)
        for g, e in engines.items()
    }


@pytest.fixture
def image_file(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    random_image(2).save(path)
    return path


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real OpenSSH server on localhost (tests/support/sshd_local.py); .ci/run installs it, so a
    missing one fails rather than skips."""
    from support import sshd_local

    reason = sshd_local.missing()
    if reason:
        pytest.fail(reason)
    server = sshd_local.start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def warm_daemon(tmp_path_factory):
    """One `flowtui serve --daemon` for the remote tests, on a private socket: (socket, env)."""
    import signal
    import subprocess
    import time

    from support.remote_util import flowtui_argv, subprocess_env

    sock = tmp_path_factory.mktemp("daemon") / "d.sock"
    env = subprocess_env(FLOWTUI_SOCKET=str(sock))
    proc = subprocess.Popen(flowtui_argv("serve", "--daemon", "--max-models", "2"), env=env)
    deadline = time.time() + 120
    while not sock.exists():
        assert proc.poll() is None and time.time() < deadline, "the daemon did not start"
        time.sleep(0.05)
    yield sock, env
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def toy_engine():
    """The built-in toy model in this process (for comparing remote runs with local ones)."""
    import flowtui

    return flowtui.load_engine(device="cpu", dtype="float32")
