"""The remote engine on real models: in-process pipes and real `flowtui serve --stdio` and
`--daemon` processes. Remote results equal the local engine's exactly."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from support.images import random_image
from support.remote_util import PipeServer, assert_same_analysis, flowtui_argv, same_run, same_sweep
from support.remote_util import subprocess_env as env_for

from flowtui.engine.errors import Cancelled, ConnectionLost
from flowtui.remote.client import connect_command

# Not in the fast lane (`-m "not slow"`): a daemon in another process.
pytestmark = pytest.mark.slow

QUESTION = "Is there a red circle?"


def compare(local, remote, image, question, max_new_tokens=5):
    """analyze, truncate (top and random; the sweep does `all`) and sweep: remote equals local,
    progress and token events included. Returns the remote analysis."""
    events = {"local": [], "remote": []}
    out = {}
    for name, e in (("local", local), ("remote", remote)):
        log = events[name]
        a = e.analyze(image, question, max_new_tokens=max_new_tokens, progress=log.append)
        for layer, strategy, keep in ((2, "top", 3), (0, "random", 2)):
            e.truncate(a, layer, strategy=strategy, keep=keep, seed=4, progress=log.append,
                       on_token=lambda t, log=log: log.append(("token", t)))
        sweep = e.sweep(a, progress=log.append)
        out[name] = (a, sweep)
    assert_same_analysis(out["local"][0], out["remote"][0])
    assert same_sweep(out["local"][1]) == same_sweep(out["remote"][1])
    assert events["remote"] == events["local"]
    assert any(isinstance(ev, tuple) for ev in events["remote"])  # tokens were streamed
    return out["remote"][0]


def eventually(condition, context, timeout: float = 30.0) -> None:
    """Wait for what another thread delivers (the server's stderr lines)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, context
        time.sleep(0.02)


def test_pipes_tiny_llava_equals_local(engines):
    served = engines["a"]
    remote = PipeServer(served).engine()
    assert remote.info == served.info
    compare(served, remote, random_image(5), QUESTION)


def test_stdio_subprocess_toy_equals_local_then_quitting_mid_run_stops_the_server(toy_engine):
    """A real `flowtui serve --stdio` process; then the client quits in the middle of a sweep
    and the server stops and exits."""
    logs: list[str] = []
    remote = connect_command(flowtui_argv("serve", "--stdio", "--no-relay"), None,
                             device="cpu", dtype="float32", on_log=logs.append,
                             name="stdio server")
    process = remote.conn.process
    toy = toy_engine
    try:
        assert remote.info == toy.info and remote.location == "stdio server"
        # stderr is read by its own thread: the line may land a moment after the handshake.
        eventually(lambda: any("loaded flowtui-toy" in line for line in logs), logs)
        image = np.asarray(Image_open("sample_images/toy_scene_1.png"))
        a = compare(toy, remote, image, QUESTION, max_new_tokens=4)
        with pytest.raises(Cancelled):
            remote.sweep(a, cancel=lambda: True)
        assert remote.truncate(a, 8).same  # the connection is fine after a cancel
        started = threading.Event()
        failure: list[BaseException] = []

        def sweep() -> None:
            try:
                remote.sweep(a, progress=lambda p: started.set())
            except BaseException as exc:  # noqa: BLE001
                failure.append(exc)

        t = threading.Thread(target=sweep)
        t.start()
        assert started.wait(60)
        remote.close()  # the client quits mid-run
        t.join(10)
        assert failure and isinstance(failure[0], ConnectionLost)
        assert process.wait(timeout=15) == 0  # the server saw the end and exited
    finally:
        remote.close()


def Image_open(path: str):
    from PIL import Image

    return Image.open(Path(__file__).resolve().parents[2] / path).convert("RGB")


@pytest.fixture
def light_daemon(tmp_path):
    """A daemon that loads no model (so it imports no torch): for the socket's rules."""
    sock = tmp_path / "d.sock"
    env = env_for(FLOWTUI_SOCKET=str(sock))
    proc = subprocess.Popen(flowtui_argv("serve", "--daemon"), env=env, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 60
    while not sock.exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.05)
    yield sock, env, proc
    if proc.poll() is None:
        proc.kill()


def test_daemon_socket_is_private_single_and_removed_on_sigterm(light_daemon):
    sock, env, proc = light_daemon
    st = sock.stat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    again = subprocess.run(flowtui_argv("serve", "--daemon"), env=env, capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 2 and "already listens" in again.stderr
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert not os.path.exists(sock)  # cleaned up
    assert "listening on" in proc.stderr.read()


def test_default_socket_folder_is_private(tmp_path, monkeypatch):
    from flowtui.engine.errors import InputError
    from flowtui.remote.server import _private_folder, default_socket_path

    monkeypatch.delenv("FLOWTUI_SOCKET", raising=False)
    assert default_socket_path().parent.name == f"flowtui-{os.getuid()}"
    mine = tmp_path / "mine"
    _private_folder(mine)
    assert stat.S_IMODE(mine.stat().st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(InputError, match="no one else can open"):
        _private_folder(shared)


def test_daemon_keeps_the_model_warm_and_outlives_a_client_that_quits(warm_daemon, tiny_paths,
                                                                       engines):
    """Two sessions through `serve --stdio` relays: the second finds the model loaded; the
    first quits mid-sweep and the daemon goes on serving the second. Tiny LLaVA b: exact."""
    sock, env = warm_daemon
    argv = flowtui_argv("serve", "--stdio", "--socket", str(sock))
    model = str(tiny_paths["b"])
    logs: list[str] = []
    first = connect_command(argv, model, device="cpu", dtype="float32", on_log=logs.append)
    assert not first.warm and first.conn.server["daemon"]
    eventually(lambda: any("relaying to the warm daemon" in line for line in logs), logs)
    local = engines["b"]
    a = compare(local, first, random_image(9), "what colour is the circle ?")
    second = connect_command(argv, model, device="cpu", dtype="float32", on_log=logs.append)
    assert second.warm  # no reload

    started = threading.Event()
    failure: list[BaseException] = []

    def sweep() -> None:
        try:
            first.sweep(a, progress=lambda p: started.set())
        except BaseException as exc:  # noqa: BLE001
            failure.append(exc)

    t = threading.Thread(target=sweep)
    t.start()
    assert started.wait(60)
    first.close()  # quits mid-sweep: the daemon drops that session, serves the other
    t.join(10)
    assert failure and isinstance(failure[0], ConnectionLost)
    # The second session never saw `a`: it is sent in full, and the rerun is exact.
    run = second.truncate(a, 0)
    b = local.analyze(random_image(9), "what colour is the circle ?", max_new_tokens=5)
    assert same_run(run) == same_run(local.truncate(b, 0))
    second.close()


def test_cli_remote_options_fail_in_one_line(capsys, image_file):
    from flowtui.cli import main

    cases = [
        ([str(image_file), "q", "--remote-cmd", "x"], "--remote-cmd needs --remote HOST"),
        ([str(image_file), "q", "--remote=-oProxyCommand=touch /tmp/x"], "not a host name"),
        (["serve"], "one of the arguments --stdio --daemon is required"),
        (["serve", "--stdio", "--daemon"], "not allowed with argument"),
    ]
    for argv, words in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "--stdio" in out and "--daemon" in out and "FLOWTUI_SOCKET" in out
