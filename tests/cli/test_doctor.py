"""`flowtui doctor`: the real CLI in a subprocess (JSON shape, no network), a version outside
the tested range, a fault injected into transformers' KV cache, the colour and daemon checks, and
`--remote` over a real sshd on localhost."""

from __future__ import annotations

import json
import re
import socket
import subprocess

import pytest
from support import sshd_local
from support.remote_util import flowtui_argv, remote_cmd, subprocess_env

from flowtui import versions
from flowtui.cli import main
from flowtui.selftest import checks

# Not in the fast lane (`-m "not slow"`): doctor in a subprocess over every family.
pytestmark = pytest.mark.slow

# Both fail loudly if the self-test reaches for the network: building must download nothing.
NO_NETWORK = """
import socket
_connect = socket.socket.connect
def _refuse(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        raise OSError("network access during flowtui doctor")
    return _connect(self, address)
socket.socket.connect = _refuse
"""

# Decoding steps read the KV cache back with every cached value negated: the prefill is right,
# everything computed from the cache afterwards is wrong.
CORRUPT_CACHE = """
from transformers.cache_utils import DynamicLayer

_update = DynamicLayer.update
def _corrupt(self, key_states, value_states, *args, **kwargs):
    keys, values = _update(self, key_states, value_states, *args, **kwargs)
    new = key_states.shape[-2]
    if values.shape[-2] > new:
        values = values.clone()
        values[..., :-new, :] *= -1
    return keys, values
DynamicLayer.update = _corrupt
"""


def run_doctor(tmp_path, *args: str, shim: str = "", **env: str):
    """`python -m flowtui doctor ARGS` with `shim` as sitecustomize, and no daemon of anyone's."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(NO_NETWORK + shim)
    environ = subprocess_env(FLOWTUI_SOCKET=str(tmp_path / "none.sock"), **env)
    environ["PYTHONPATH"] = f"{site}:{environ['PYTHONPATH']}"
    environ.pop("TEXTUAL_COLOR_SYSTEM", None)
    return subprocess.run(flowtui_argv("doctor", *args), env=environ, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)


def test_doctor_json_on_two_families(tmp_path):
    proc = run_doctor(tmp_path, "--json", "--families", "llava,qwen2_vl")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["format"] == "flowtui.doctor" and report["ok"] is True
    assert report["failures"] == [] and report["seconds"] > 0
    items = {it["name"]: it for it in report["items"]}
    for it in report["items"]:
        assert set(it) == {"section", "name", "status", "detail", "seconds", "failures", "data"}
        assert it["status"] in ("ok", "warn")
    assert {"python", "flowtui", "torch", "transformers", "accelerate", "textual", "devices",
            "ssh", "daemon", "colours", "llava", "qwen2_vl"} <= set(items)
    assert items["transformers"]["data"]["installed"] == versions.installed("transformers")
    assert items["daemon"]["data"]["socket"] == str(tmp_path / "none.sock")
    tested = [it for it in report["items"] if it["section"] == "self-test"]
    assert [it["name"] for it in tested] == ["llava", "qwen2_vl"]
    for it in tested:
        d = it["data"]
        assert it["status"] == "ok" and it["failures"] == [] and it["seconds"] > 0
        assert d["layers"] == 4 and 0 <= d["max_logprob_error"] <= 1e-3
        assert 0 <= d["max_share_error"] <= 1e-4 and d["answer"]
    # Progress on stderr, one line per stage, never on stdout.
    assert "self-test 1/2 llava: build" in proc.stderr
    assert "self-test 2/2 qwen2_vl: eager reference, K=0..4" in proc.stderr


def test_a_version_outside_the_tested_range_fails_naming_the_package(monkeypatch, capsys,
                                                                      tmp_path):
    monkeypatch.setenv("FLOWTUI_SOCKET", str(tmp_path / "none.sock"))
    monkeypatch.setitem(versions.TESTED, "transformers", ("9.0.0", "9.1.0"))
    assert main(["doctor", "--no-self-test"]) == 1
    out, err = capsys.readouterr()
    assert re.search(r"FAIL  transformers +transformers \S+ is outside the versions", out)
    assert "self-test" not in out
    installed = versions.installed("transformers")
    assert err.strip() == (f"flowtui: error: transformers: transformers {installed} is outside "
                           "the versions flowtui is tested with (9.0.0 – 9.1.0); its numbers "
                           "may be wrong without an error")


def test_a_changed_transformers_internal_fails_naming_it(monkeypatch, capsys, tmp_path):
    from flowtui.engine import compat

    def moved() -> None:
        raise AttributeError("'LlamaModel' has no attribute 'layers'")

    monkeypatch.setenv("FLOWTUI_SOCKET", str(tmp_path / "none.sock"))
    monkeypatch.setattr(compat, "_decoder_layers", moved)
    assert main(["doctor", "--no-self-test"]) == 1
    out, err = capsys.readouterr()
    assert re.search(r"FAIL  decoder layer paths +transformers changed it: AttributeError", out)
    assert re.search(r"ok +cache argument name", out)
    assert err.strip() == ("flowtui: error: decoder layer paths: transformers changed it: "
                           "AttributeError: 'LlamaModel' has no attribute 'layers'")


def test_a_corrupted_kv_cache_fails_the_self_test_naming_family_and_check(tmp_path):
    proc = run_doctor(tmp_path, "--json", "--families", "llava", shim=CORRUPT_CACHE)
    assert proc.returncode == 1, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    [item] = [it for it in report["items"] if it["section"] == "self-test"]
    assert item["name"] == "llava" and item["status"] == "fail"
    # Both the engine's own self-checks of the analysis and the eager reference catch it.
    assert any(f.startswith("self-check failed: ") for f in item["failures"]), item["failures"]
    assert any(re.match(r"sweep (answer|log p) at K=\d is .*, the eager reference ", f)
               for f in item["failures"]), item["failures"]
    # One error line for the family: its first failed check, and how many more there are.
    n = len(item["failures"])
    assert report["failures"] == [f"llava: {item['failures'][0]} (+{n - 1} more)"]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("flowtui: error:")]
    assert errors == [f"flowtui: error: {report['failures'][0]}"]
    assert "Traceback" not in proc.stderr


def test_bad_input_is_one_line_and_exit_2(capsys):
    assert main(["doctor", "--families", "llava,gpt2"]) == 2
    assert "unknown family 'gpt2'; known: aya_vision, gemma3" in capsys.readouterr().err
    assert main(["doctor", "--families", "llava", "--no-self-test"]) == 2
    assert main(["doctor", "--remote-cmd", "x"]) == 2
    assert main(["doctor", "--remote", "-oProxyCommand=sh"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 3 and "Traceback" not in err
    assert main(["doctor", "--list-families"]) == 0
    assert capsys.readouterr().out.split() == checks.families()


@pytest.mark.parametrize("env,system,status", [
    ({"TERM": "xterm-256color", "COLORTERM": "truecolor"}, "truecolor", "ok"),
    ({"TERM": "xterm-256color"}, "256", "warn"),
    ({"TERM": "xterm"}, "standard", "warn"),
    ({"TERM": "dumb"}, None, "warn"),
    ({"TERM": "xterm", "TEXTUAL_COLOR_SYSTEM": "truecolor"}, "truecolor", "ok"),
    ({"TERM": "xterm-256color", "COLORTERM": "truecolor", "TEXTUAL_COLOR_SYSTEM": "256"}, "256",
     "warn"),
])
def test_colours_are_what_textual_would_pick(monkeypatch, env, system, status):
    from flowtui.cli.doctor import colour_item

    for name in ("TERM", "COLORTERM", "TEXTUAL_COLOR_SYSTEM", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    item = colour_item()
    assert (item.data["color_system"], item.status) == (system, status), item.detail


def test_colours_refuse_what_textual_cannot_start_with(monkeypatch):
    from flowtui.cli.doctor import colour_item

    monkeypatch.setenv("TEXTUAL_COLOR_SYSTEM", "16m")
    item = colour_item()
    assert item.status == "fail" and "TEXTUAL_COLOR_SYSTEM='16m' is not one of" in item.detail
    monkeypatch.delenv("TEXTUAL_COLOR_SYSTEM")
    monkeypatch.setenv("COLORTERM", "truecolor")
    monkeypatch.setenv("NO_COLOR", "1")
    item = colour_item()
    assert item.status == "warn" and "monochrome" in item.detail


def test_daemon_check_finds_a_live_daemon_and_a_stale_socket(monkeypatch, warm_daemon, tmp_path):
    sock, _env = warm_daemon
    monkeypatch.setenv("FLOWTUI_SOCKET", str(sock))
    item = checks.daemon_item()
    assert item.status == "ok" and item.data["flowtui"] == "0.1.0" and item.data["pid"] > 0
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()
    stale.chmod(0o600)
    monkeypatch.setenv("FLOWTUI_SOCKET", str(stale))
    item = checks.daemon_item()
    assert item.status == "warn" and "stale" in item.detail
    monkeypatch.setenv("FLOWTUI_SOCKET", str(tmp_path / "absent.sock"))
    assert checks.daemon_item().status == "ok"


def test_devices_on_a_gpu_box(monkeypatch):
    """The GPU branch, with torch.cuda answering as on a two-GPU box (no GPU here)."""
    import types

    import torch

    props = [types.SimpleNamespace(name=f"NVIDIA H100 #{i}", total_memory=80 * 2**30, major=9,
                                   minor=0) for i in range(2)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props[i])
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    item = checks.devices_item()
    assert item.status == "ok" and item.data["auto_dtype"] == "bfloat16"
    assert item.detail == ("2 GPU(s): cuda:0 NVIDIA H100 #0 (80.0 GiB), cuda:1 NVIDIA H100 #1 "
                           "(80.0 GiB); --device auto: cuda:0, bfloat16")


# --- --remote over a real sshd --------------------------------------------------------------------


def test_remote_doctor_over_ssh(sshd, tmp_path):
    def remote(*args: str):
        env = subprocess_env(FLOWTUI_SSH_COMMAND=sshd.ssh_command, TERM="xterm",
                             COLORTERM="truecolor")
        return subprocess.run(flowtui_argv("doctor", "--remote", sshd_local.HOST, *args),
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    cmd = remote_cmd(socket=tmp_path / "none.sock")
    proc = remote("--remote-cmd", cmd, "--no-self-test")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"flowtui doctor on {sshd_local.HOST} (" in proc.stdout
    assert "this machine" in proc.stdout and "ssh (here)" in proc.stdout
    assert re.search(r"ok    colours \(here\) +truecolor \(COLORTERM", proc.stdout)
    assert re.search(r"ok    daemon +none running", proc.stdout)
    proc = remote("--remote-cmd", cmd, "--json", "--no-self-test")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    names = [it["name"] for it in report["items"]]
    assert "transformers" in names and "colours (here)" in names and "colours" not in names
    assert report["remote"]["exit"] == 0 and report["host"].startswith(sshd_local.HOST)
    # With the self-test: the far side's progress is relayed, tagged with the host.
    proc = remote("--remote-cmd", cmd, "--families", "qwen3_vl")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"ok    qwen3_vl +answer '", proc.stdout)
    assert f"[{sshd_local.HOST}] [" in proc.stderr and "self-test 1/1 qwen3_vl: sweep" in proc.stderr
    # An older flowtui there, without `doctor`.
    old = tmp_path / "old-flowtui"
    old.write_text("#!/bin/sh\necho 'flowtui: error: unrecognized arguments: --json "
                   "(see flowtui --help)' >&2\nexit 2\n")
    old.chmod(0o755)
    proc = remote("--remote-cmd", str(old))
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert f"{str(old)!r} on flowtui-test has no `doctor` command" in proc.stderr
    # The far side fails: no flowtui there, or no host at all: one line each, exit 1.
    proc = remote("--remote-cmd", "/nonexistent/bin/flowtui")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [

        "flowtui: error: the remote command '/nonexistent/bin/flowtui' was not found on "
        "flowtui-test: install flowtui there, or give its path with --remote-cmd "
        "(e.g. ~/venv/bin/flowtui)"]
    proc = subprocess.run(
        flowtui_argv("doctor", "--remote", "nobody-home", "--no-self-test"),
        env=subprocess_env(FLOWTUI_SSH_COMMAND=sshd.ssh_command), cwd=tmp_path,
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    [last] = proc.stderr.strip().splitlines()
    assert last.startswith("flowtui: error: ssh to nobody-home failed:") and "refused" in last

