"""`flowtui web` in a real browser (headless Chromium, tests/web_browser.py): the page shows the
toy's answer and → moves the layer; a wrong or missing token gets no explorer; two tabs work at
once on one warm model; closing a tab ends its explorer and its engine session and nothing else;
Ctrl+C (SIGTERM) ends the server, its tabs and its engine daemon.

One server for the module (the toy loads once, as it would for users); each test opens and closes
its own tabs. Chromium missing fails with how to install it (web_browser.MISSING)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.web_browser import Browser, chromium_binary

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "sample_images" / "toy_scene_1.png"
QUESTION = "Is there a red circle?"
ANSWERED = rf"Q {QUESTION}[\s\S]*A Yes[\s\S]*ready"

pytestmark = pytest.mark.slow


@dataclass
class Served:
    process: subprocess.Popen
    url: str
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def daemon_pid(self) -> int:
        return int(re.search(r"daemon \(pid (\d+)", self.text()).group(1))

    def tabs(self) -> list[int]:
        """The explorer processes (one per open tab) under the server."""
        return [p for p in descendants(self.process.pid)
                if "flowtui.web.tab" in cmdline(p) and not cmdline(p).startswith("/bin/sh")]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running (a zombie, exited but not yet reaped by its parent, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    chromium_binary()  # fail first, with how to install it, when there is no browser
    d = tmp_path_factory.mktemp("web")
    log = d / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "flowtui", "web", str(SAMPLE), QUESTION, "--port", "0"],
            cwd=d, stdout=out, stderr=subprocess.STDOUT,
            # One torch thread: on busy shared cores OpenMP oversubscription alone can make the
            # toy's analysis take seconds instead of a tenth of one (bench/README.md).
            env={**os.environ, "OMP_NUM_THREADS": "1"})
    s = Served(process, "", log)
    try:
        wait_until(lambda: "flowtui web: open http" in s.text() or process.poll() is not None,
                   "the server's URL", 60)
        match = re.search(r"open (http://127\.0\.0\.1:\d+/[A-Za-z0-9_-]+/)", s.text())
        assert match, s.text()
        s.url = match.group(1)
        yield s
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


@pytest.fixture
async def browser(tmp_path):
    b = await Browser(tmp_path).start()
    try:
        yield b
    finally:
        await b.close()


async def test_the_page_shows_the_answer_and_right_arrow_moves_the_layer(served, browser,
                                                                       tmp_path):
    tab = await browser.tab(served.url)
    screen = await tab.wait_for(ANSWERED, timeout=120)
    assert "CAM · layer 0/7" in screen and "model on shared engine" in screen
    assert "Flow · attention shares" in screen
    await tab.press("ArrowRight")
    await tab.wait_for(r"CAM · layer 1/7", timeout=20)
    shot = await tab.screenshot(tmp_path / "page.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    await tab.close()
    wait_until(lambda: not served.tabs(), "the closed tab's explorer to exit")


@pytest.mark.parametrize("how", ["missing", "wrong", "one character short"])
async def test_a_wrong_or_missing_token_gets_no_explorer(served, browser, how):
    base, token = served.url.rstrip("/").rsplit("/", 1)
    url = {"missing": f"{base}/", "wrong": f"{base}/{'x' * len(token)}/",
           "one character short": f"{base}/{token[:-1]}/"}[how]
    before = set(served.tabs())
    tab = await browser.tab(url)
    deadline = time.monotonic() + 20
    body = ""
    while "refused" not in body and time.monotonic() < deadline:
        body = await tab.eval("document.body ? document.body.innerText : ''") or ""
        await asyncio.sleep(0.1)
    assert "refused" in body
    assert await tab.eval("window.__terms.length") == 0  # no terminal, no websocket
    assert set(served.tabs()) <= before  # and no explorer started for it
    await tab.close()


async def test_two_tabs_at_once_and_closing_one_ends_only_its_session(served, browser):
    a = await browser.tab(served.url)
    b = await browser.tab(served.url)
    await asyncio.gather(a.wait_for(ANSWERED, timeout=120), b.wait_for(ANSWERED, timeout=120))
    assert len(served.tabs()) == 2
    # One model for every tab: loaded once, each later session finds it warm.
    assert served.text().count("loaded flowtui-toy") == 1
    ended = served.text().count(" ended")
    daemon = served.daemon_pid()

    await a.close()
    wait_until(lambda: len(served.tabs()) == 1, "the closed tab's explorer to exit")
    wait_until(lambda: served.text().count(" ended") == ended + 1,
               "the closed tab's engine session to end")
    # Nothing else: the other tab still answers keys, on the same daemon.
    await b.press("ArrowRight")
    await b.wait_for(r"CAM · layer 1/7", timeout=20)
    assert alive(daemon) and served.process.poll() is None
    assert served.text().count(" ended") == ended + 1
    await b.close()
    wait_until(lambda: not served.tabs(), "the last explorer to exit")


async def test_stopping_the_server_ends_its_tabs_and_its_engine(served, browser):
    """(Last in the module: it stops the module's server.)"""
    tab = await browser.tab(served.url)
    await tab.wait_for(rf"Q {QUESTION}", timeout=120)  # its explorer runs (answered or not)
    tabs, daemon = served.tabs(), served.daemon_pid()
    assert tabs and alive(daemon)
    folder = re.search(r"listening on (\S+)/engine\.sock", served.text()).group(1)
    served.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(served.process.wait, 30) == 0
    wait_until(lambda: not any(alive(p) for p in [*tabs, daemon]), "tabs and daemon to exit")
    assert not Path(folder).exists()
    assert "Traceback" not in served.text(), served.text()
    # The page is still there, and says its session has ended.
    assert await tab.eval("document.body.classList.contains('-closed')")
