"""`flowtui web`'s server without a browser: the token guards every path, the page builds its
URLs from the address the browser used and fetches nothing from elsewhere, the CLI's bad input is
one line and exit code 2, and the engine daemon it starts goes away with it."""

from __future__ import annotations

import re
import shlex
import shutil
import socket
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from flowtui.cli import main
from flowtui.engine.errors import InputError
from flowtui.remote.local_daemon import LocalDaemon
from flowtui.remote.server import connect_daemon
from flowtui.web.run import tab_command
from flowtui.web.server import WebServer, new_token

ROOT = Path(__file__).parents[2]
TOKEN = "T0ken-for_tests-0123456789abcdef"


@pytest.fixture
async def client():
    # A command that is never run: no test here opens a websocket that is let in.
    server = WebServer("false", token=TOKEN)
    async with TestClient(TestServer(await server._make_app())) as c:
        yield c


@pytest.mark.parametrize("path", [
    "/", "/static/js/textual.js", "/ws", "/wrong/", "/wrong/ws", f"/{TOKEN[:-1]}/",
    f"/{TOKEN}x/", f"/{TOKEN}x/static/js/textual.js", "/download/abc", f"/x/{TOKEN}/",
])
async def test_a_request_without_the_token_is_refused(client, path):
    r = await client.get(path, allow_redirects=False)
    assert r.status == 403
    assert "refused" in await r.text()


async def test_the_page_and_its_files_are_under_the_token(client):
    r = await client.get(f"/{TOKEN}/", headers={"Host": "localhost:9123"})
    assert r.status == 200
    page = await r.text()
    # Built from the Host the browser sent: an ssh forward to any local port works.
    assert f'data-session-websocket-url="ws://localhost:9123/{TOKEN}/ws"' in page
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert r.headers["Cache-Control"] == "no-store"
    # Nothing from another site (textual-serve's own page loads a web font from the internet).
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    for asset in re.findall(rf'(?:src|href)="(/{TOKEN}/static/[^"]+)"', page):
        assert (await client.get(asset)).status == 200, asset
    assert (await client.get(f"/{TOKEN}/static/js/textual.js")).status == 200
    r = await client.get(f"/{TOKEN}", allow_redirects=False)
    assert r.status == 302 and r.headers["Location"] == f"/{TOKEN}/"
    r = await client.get(f"/{TOKEN}/", headers={"Host": 'x"><script>alert(1)</script>'})
    assert "<script>alert" not in await r.text()  # what the page quotes from the request


async def test_a_websocket_from_another_sites_page_is_refused(client):
    r = await client.get(f"/{TOKEN}/ws", headers={"Origin": "http://evil.example",
                                                 "Connection": "Upgrade", "Upgrade": "websocket"})
    assert r.status == 403


def test_tokens_are_random_and_url_safe():
    tokens = {new_token() for _ in range(50)}
    assert len(tokens) == 50
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{32}", t) for t in tokens)


def test_a_busy_port_is_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(InputError, match=f"cannot listen on 127.0.0.1:{port}.*--port"):
            WebServer("false", port=port).serve()


def test_the_tab_command_quotes_its_path(tmp_path):
    odd = tmp_path / "a b'c" / "tab.json"
    # textual-serve runs it with a shell: the words must come back exactly.
    assert shlex.split(tab_command(odd, python="/x y/python")) == [
        "/x y/python", "-m", "flowtui.web.tab", str(odd)]


@pytest.mark.parametrize("argv, message", [
    ([], "required: image, question"),
    (["missing.png", "q"], "image not found"),
    (["sample_images/toy_scene_1.png", "  "], "the question is empty"),
    (["sample_images/toy_scene_1.png", "q", "--port", "70000"], "a port is 0..65535"),
    (["sample_images/toy_scene_1.png", "q", "--port", "x"], "expected a port number"),
    (["sample_images/toy_scene_1.png", "q", "--theme", "nope"], "unknown theme"),
    (["sample_images/toy_scene_1.png", "q", "--device", "tpu"], "device"),
    (["open", "missing.flowtui"], "snapshot not found"),
    (["dataset", "missing-run"], "missing-run"),
])
def test_bad_input_is_one_line_and_exit_code_2(argv, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["web", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("flowtui: error:")
    assert message in err


def test_help_names_the_three_forms(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["web", "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for form in ("web IMAGE QUESTION", "web open SNAPSHOT", "web dataset RUN", "--host",
                 "--port", "ssh -N -L", "token"):
        assert form in out
    assert main(["--help"]) == 0
    assert "web" in capsys.readouterr().out


def test_the_engine_daemon_lives_in_a_private_folder_and_goes_with_its_owner():
    daemon = LocalDaemon().start()
    try:
        assert daemon.folder.stat().st_mode & 0o077 == 0
        sock = connect_daemon(daemon.socket)
        assert sock is not None
        sock.close()
    finally:
        daemon.stop()
    assert daemon.process is None and not daemon.folder.exists()


def test_no_chromium_fails_the_browser_tests_saying_how_to_install_it(monkeypatch, tmp_path):
    from support.web_browser import MISSING, chromium_binary

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AssertionError, match="apt-get install -y chromium"):
        chromium_binary()
    assert "README" in MISSING


@pytest.fixture
def served_spec(monkeypatch):
    """What `flowtui web ...` would serve, without serving it."""
    import flowtui.web.run as web_run

    calls = []
    monkeypatch.setattr(web_run, "serve_web", lambda spec, **kw: calls.append((spec, kw)) or 0)
    return calls


def test_web_open_starts_an_engine_only_when_reruns_can_use_one(served_spec, tmp_path):
    from support.fake_engine import make_analysis

    from flowtui.engine.loading import TOY_NAME

    other, toy = tmp_path / "other.flowtui", tmp_path / "toy.flowtui"
    make_analysis().save(other)
    a = make_analysis()
    a.model.name = TOY_NAME
    a.save(toy)
    assert main(["web", "open", str(other), "--port", "0"]) == 0
    assert main(["web", "open", str(toy), "--port", "0", "--host", "::1"]) == 0
    (spec, kw), (toy_spec, toy_kw) = served_spec
    assert spec == {"mode": "open", "snapshot": str(other.resolve()), "theme": None}
    assert kw["model"] is None  # nothing to rerun with: no daemon
    assert toy_kw["model"]["model"] == TOY_NAME  # as `flowtui open`: the toy reruns its own
    assert (toy_kw["host"], toy_kw["port"]) == ("::1", 0)


def test_web_live_serves_the_question_with_the_model_options(served_spec):
    image = ROOT / "sample_images" / "toy_scene_1.png"
    assert main(["web", str(image), "Is there a red circle?", "--max-new-tokens", "4",
                 "--no-self-check", "--device", "cpu", "--theme", "flowtui-light"]) == 0
    [(spec, kw)] = served_spec
    assert spec == {"mode": "live", "image": str(image), "question": "Is there a red circle?",
                    "max_new_tokens": 4, "self_check": False, "theme": "flowtui-light"}
    assert kw["model"] == {"model": None, "device": "cpu", "dtype": "auto", "quantize": None,
                           "trust_remote_code": False}
    assert (kw["host"], kw["port"]) == ("127.0.0.1", 8710)


def test_a_tab_opens_what_the_spec_names_with_the_shared_engine(monkeypatch, tmp_path):
    """flowtui.web.tab: the explorer gets the snapshot, and an engine factory that connects
    to the daemon's socket with the model options (the explorer itself is not started)."""
    import json

    from support.fake_engine import make_analysis

    import flowtui.ui.app as app
    from flowtui.web import tab

    snap = tmp_path / "s.flowtui"
    make_analysis().save(snap)
    seen = {}
    monkeypatch.setattr(app, "run_explorer", lambda **kw: seen.update(kw) or 0)
    spec = tmp_path / "tab.json"
    spec.write_text(json.dumps({"mode": "open", "snapshot": str(snap), "theme": None,
                                "socket": str(tmp_path / "engine.sock"),
                                "model": {"model": None, "device": "cpu"}}))
    assert tab.main([str(spec)]) == 0
    assert seen["analysis"].question == make_analysis().question
    factory = seen["engine_factory"]
    assert factory.location == "shared engine" and factory.model["device"] == "cpu"
    from flowtui.engine.errors import RemoteError

    with pytest.raises(RemoteError, match="no flowtui daemon answers"):
        factory()  # nothing listens there


def test_the_engine_daemon_ends_when_its_owner_is_killed(tmp_path):
    """SIGKILL gives the web server no chance to stop its daemon: the daemon goes anyway."""
    import signal
    import subprocess
    import time

    owner = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from flowtui.remote.local_daemon import LocalDaemon\n"
         "d = LocalDaemon().start(); print(d.pid, d.folder, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    pid, folder = owner.stdout.readline().split()
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    def running() -> bool:  # (a zombie has exited: only its parent has not read its status)
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 20
    while running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running()
    # SIGTERM: the daemon removed its socket on the way out (the empty folder, mode 700, stays).
    assert not (Path(folder) / "engine.sock").exists()
    shutil.rmtree(folder, ignore_errors=True)
