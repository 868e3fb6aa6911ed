"""One engine contract: the local engine, the remote one and the tests' fake implement all of
flowtui.engine.interface.Engine, so no caller probes an engine for what it has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.fake_engine import FakeEngine

import flowtui
from flowtui.engine.interface import Engine

SAMPLE = Path(__file__).parents[2] / "sample_images" / "toy_scene_1.png"
MEMBERS = ("info", "location", "on_log", "analyze", "truncate", "sweep", "close",
           "count_image_tokens", "lens", "knockout")


def test_every_member_of_the_protocol_is_listed_here():
    declared = {n for n in vars(Engine) if not n.startswith("_")} | set(
        Engine.__annotations__)
    assert declared == set(MEMBERS)


def test_the_local_engine_implements_all_of_it(engines):
    e = engines["a"]
    assert isinstance(e, Engine)
    assert e.location is None and e.on_log is None
    n = e.count_image_tokens(SAMPLE)
    assert n == len(e.analyze(SAMPLE, "Is there a red circle?", max_new_tokens=2).feature_positions)
    e.close()  # nothing to end in-process: the engine still works
    assert e.count_image_tokens(SAMPLE) == n


def test_the_fake_implements_all_of_it():
    assert isinstance(FakeEngine(), Engine)


@pytest.mark.slow  # a daemon in another process
def test_the_remote_engine_implements_all_of_it(warm_daemon):
    import shlex

    from support.remote_util import remote_cmd

    from flowtui.remote.client import connect_command

    sock, _env = warm_daemon
    e = connect_command([*shlex.split(remote_cmd(sock)), "serve", "--stdio"], name="daemon")
    try:
        assert isinstance(e, Engine)
        assert e.location == "daemon"
        assert e.count_image_tokens(SAMPLE) == 144  # the toy's 12 x 12 patches, counted there
    finally:
        e.close()


@pytest.mark.parametrize("path", sorted((Path(flowtui.__file__).parent).rglob("*.py")),
                         ids=lambda p: str(p.relative_to(Path(flowtui.__file__).parent)))
def test_no_caller_probes_an_engine(path):
    text = path.read_text()
    # An engine, never its factory: a factory may say where it will connect (RemoteFactory's
    # `location`) before any engine exists, and plain callables are factories too.
    probes = re.findall(r"(?:getattr|hasattr)\(\s*(?:[\w.]*\.)?engine\s*,", text)
    assert not probes, f"{path.name} probes an engine: {probes}"
