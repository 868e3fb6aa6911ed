"""The remote engine over a real OpenSSH server on localhost: the headless CLI, the explorer
under the Pilot (including a connection dropped mid-sweep and `r` to reconnect), and the faults
a user meets (bad key with BatchMode, no server, no or an old flowtui on the far side, a model
that fails to load, a shell that prints a banner).

sshd runs from a temporary folder (tests/sshd_local.py): generated host and user keys, its own
sshd_config on a free localhost port, and a client config used through
FLOWTUI_SSH_COMMAND="ssh -F cfg". Nothing is installed here: the README's install command (and
.ci/run) installs openssh-server.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time

import numpy as np
import pytest
from support import sshd_local
from support.remote_util import ROOT, assert_same_analysis, remote_cmd, subprocess_env

import flowtui
from flowtui.cli.common import RemoteFactory, quiet_log
from flowtui.engine.errors import ModelLoadError, RemoteError
from flowtui.remote.protocol import progress_from

# Not in the fast lane (`-m "not slow"`): a real sshd.
pytestmark = pytest.mark.slow

SAMPLE = ROOT / "sample_images" / "toy_scene_1.png"
QUESTION = "Is there a red circle?"
HOST = sshd_local.HOST




@pytest.fixture
def ssh_env(sshd, monkeypatch):
    monkeypatch.setenv("FLOWTUI_SSH_COMMAND", sshd.ssh_command)
    return sshd


def test_headless_remote_over_ssh(sshd, tmp_path, toy_engine):
    """`flowtui IMAGE QUESTION --headless --remote HOST`: the model runs over ssh (a cold
    `serve --stdio`, no daemon), the snapshot is written here, and it equals a local run."""
    out = tmp_path / "remote.flowtui"
    cmd = remote_cmd(socket=tmp_path / "no-daemon.sock")
    proc = subprocess.run(
        [sys.executable, "-m", "flowtui", str(SAMPLE), QUESTION, "--headless", "--remote", HOST,
         "--remote-cmd", cmd, "--device", "cpu", "--dtype", "float32", "--max-new-tokens", "4",
         "--truncate", "3", "--sweep", "--out", str(out)],
        env=subprocess_env(FLOWTUI_SSH_COMMAND=sshd.ssh_command), cwd=tmp_path,
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"[{HOST}] flowtui serve: loaded flowtui-toy" in proc.stderr  # server logs shown
    assert f"wrote:    {out}" in proc.stdout and "cliff layer:" in proc.stdout
    remote = flowtui.load_snapshot(out)
    local = toy_engine.analyze(SAMPLE, QUESTION, max_new_tokens=4)
    toy_engine.truncate(local, 3)
    toy_engine.sweep(local)
    assert_same_analysis(flowtui.load_snapshot(local.save(tmp_path / "local.flowtui")), remote)


async def _settle(app, pilot) -> None:
    await app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


async def test_explorer_over_ssh_survives_a_dropped_connection(ssh_env, warm_daemon, toy_engine,
                                                              tmp_path):
    """The explorer with --remote under the Pilot, the model warm in a daemon behind ssh: the
    status line says where the model runs; the link drops mid-sweep (ssh killed), the analysis
    on screen stays, `r` reconnects, and the sweep then runs (the analysis is sent in full)."""
    from flowtui.ui.app import FlowtuiApp

    local = toy_engine.analyze(SAMPLE, QUESTION, max_new_tokens=4)
    args = argparse.Namespace(remote=HOST, remote_cmd=remote_cmd(socket=warm_daemon[0]),
                              model=None, device="cpu", dtype="float32", quantize=None,
                              trust_remote_code=False)
    app = FlowtuiApp(image=str(SAMPLE), question=QUESTION,
                     engine_factory=RemoteFactory(args, on_log=quiet_log), max_new_tokens=4)
    async with app.run_test(size=(120, 40)) as pilot:
        await _settle(app, pilot)
        a = app.analysis
        assert a is not None and a.answer == local.answer
        assert f"model on {HOST}" in app.status.where
        # The server's stderr, shown as notifications once connected.
        for _ in range(600):  # stderr lines arrive through their own thread
            if any("relaying to the warm daemon" in n.message for n in app._notifications):
                break
            await pilot.pause(0.05)
        assert any("relaying to the warm daemon" in n.message for n in app._notifications)
        await pilot.press("t", "enter")
        await _settle(app, pilot)
        assert len(a.truncations) == 1
        # The link goes down mid-sweep: ssh is killed when the sweep's first progress frame
        # arrives, and nothing read after it is delivered (a toy sweep is quick: its result
        # may already sit in the pipe, where a real dropped link would never have carried it).
        conn = app.engine.conn
        route, cut = conn._route, []

        def route_then_drop(frame):
            if cut:
                return
            if frame.type == "progress":
                p = progress_from(frame.header)
                if p.stage == "sweep" and p.done >= 1:
                    conn.process.kill()
                    cut.append(frame)
            route(frame)

        conn._route = route_then_drop
        await pilot.press("escape", "s")
        await _settle(app, pilot)
        assert cut, "the sweep sent no progress frame to cut at"
        messages = [n.message for n in app._notifications]
        assert any(f"connection to {HOST} lost" in m and "r reconnects" in m for m in messages)
        assert app.analysis is a and len(a.truncations) == 1 and a.sweep_same is None
        assert "disconnected" in app.status.where and app.engine is None
        await pilot.press("r")
        await _settle(app, pilot)
        assert app.engine is not None and app.engine.warm  # the daemon kept the model
        assert "disconnected" not in app.status.where and f"model on {HOST}" in app.status.where
        await pilot.press("s")
        await _settle(app, pilot)
        assert a.sweep_same is not None
        assert a.cliff_layer == toy_engine.sweep(local).cliff_layer
        assert a.save(tmp_path / "here.flowtui").exists()  # snapshots are written locally
    assert app.engine.conn._closed  # quitting ended the ssh session


def test_faults_are_one_line_errors(ssh_env, warm_daemon, tmp_path):
    daemon_cmd = remote_cmd(socket=warm_daemon[0])

    def fails(host: str, cmd: str = daemon_cmd, model: str | None = None, error=RemoteError):
        start = time.monotonic()
        with pytest.raises(error) as exc:
            flowtui.connect(host, model, remote_cmd=cmd, device="cpu", on_log=lambda line: None,
                            timeout=60)
        message = str(exc.value)
        assert "\n" not in message and time.monotonic() - start < 60, message
        return message

    # ssh: a key the server does not know (it would take a password; BatchMode never asks).
    m = fails("stranger")
    assert m.startswith("ssh to stranger failed:") and "Permission denied" in m
    assert "BatchMode" in m
    assert "Connection refused" in fails("nobody-home")
    with pytest.raises(RemoteError, match="cannot run '/nonexistent/ssh'"):
        flowtui.connect(HOST, ssh_command="/nonexistent/ssh")
    # The far side: no flowtui, an old one without `serve`, one speaking another protocol.
    assert "was not found on flowtui-test" in fails(HOST, "/nonexistent/bin/flowtui")
    old = tmp_path / "old-flowtui"
    old.write_text("#!/bin/sh\necho 'flowtui: error: unrecognized arguments: --stdio "
                   "(see flowtui --help)' >&2\nexit 2\n")
    old.chmod(0o755)
    assert "does not understand `serve --stdio`" in fails(HOST, str(old))
    future = ("import sys; from flowtui.remote.protocol import FrameWriter; FrameWriter("
              "sys.stdout.buffer).send({'type': 'hello', 'protocol': 999, 'flowtui': '9.9.9'}); "
              "sys.stdin.read()")
    cmd = f"env PYTHONPATH={shlex.quote(str(ROOT))} {shlex.quote(sys.executable)} -c " \
          f"{shlex.quote(future)}"
    m = fails(HOST, cmd)
    assert "runs flowtui 9.9.9 (protocol 999) but this is flowtui 0.1.0 (protocol 1)" in m
    # A model that fails to load on the far side.
    m = fails(HOST, model="/nowhere/llava-7b", error=ModelLoadError)
    assert m.endswith(f"(on {HOST})") and "/nowhere/llava-7b" in m
    # A shell startup file that prints: skipped, and said so.
    logs: list[str] = []
    with flowtui.connect(HOST, remote_cmd=f"echo Welcome to the GPU box; {daemon_cmd}",
                         device="cpu", on_log=logs.append) as engine:
        assert engine.info.name == "flowtui-toy"
        a = engine.analyze(np.asarray(SAMPLE_IMAGE()), QUESTION, max_new_tokens=2)
        assert a.answer
    assert any("printed b'Welcome to the GPU box\\n' before the protocol" in x for x in logs)


def SAMPLE_IMAGE():
    from PIL import Image

    return Image.open(SAMPLE).convert("RGB")
