"""A real browser for the `flowtui web` tests: Debian's headless Chromium, driven over the Chrome
DevTools Protocol (a websocket; aiohttp, which textual-serve already needs, is the client).

The page draws the explorer with xterm.js on a canvas, so its text is not in the DOM: a script
added before the page's own (`EXPOSE`) keeps each xterm Terminal the page makes, and `screen()`
reads what that terminal shows, line by line, from its buffer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

MISSING = ("headless Chromium is needed for the browser tests and is not installed: run "
           "`apt-get install -y chromium` (Debian's package; the README's test set-up installs it)")

# Runs in every page before its scripts: textual-serve's front end keeps its Terminal in
# `this.terminal`; a setter on Object.prototype sees the assignment and keeps the object.
EXPOSE = """
window.__terms = [];
Object.defineProperty(Object.prototype, "terminal", {
  configurable: true,
  set(value) {
    Object.defineProperty(this, "terminal", {value, writable: true, configurable: true,
                                             enumerable: true});
    if (value && value.buffer && value.buffer.active) window.__terms.push(value);
  },
});
"""

SCREEN = """(() => {
  const t = window.__terms[0];
  if (!t) return null;
  const b = t.buffer.active, rows = [];
  for (let y = 0; y < t.rows; y++) rows.push(b.getLine(b.viewportY + y).translateToString(true));
  return rows.join("\\n");
})()"""

KEYS = {"ArrowRight": 39, "ArrowLeft": 37, "Enter": 13, "Escape": 27}


def chromium_binary() -> str:
    """The browser, or an AssertionError that says how to install it (never a skip)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, MISSING
    return found


class Browser:
    """One headless Chromium with a private profile in `folder`; `tab()` opens pages."""

    def __init__(self, folder: Path, width: int = 1280, height: int = 800) -> None:
        self.folder = folder
        self.size = (width, height)
        self.process: subprocess.Popen | None = None
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._events: dict[str, list[dict]] = {}
        self._reader: asyncio.Task | None = None

    async def start(self, timeout: float = 30.0) -> Browser:
        argv = [chromium_binary(), "--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking",
                f"--window-size={self.size[0]},{self.size[1]}", "--remote-debugging-port=0",
                f"--user-data-dir={self.folder / 'profile'}", "about:blank"]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True)
        url = await asyncio.to_thread(self._devtools_url, timeout)
        self.http = aiohttp.ClientSession()
        self.ws = await self.http.ws_connect(url, max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        return self

    def _devtools_url(self, timeout: float) -> str:
        assert self.process is not None and self.process.stderr is not None
        deadline = time.monotonic() + timeout
        lines = []
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                break
            lines.append(line)
            if m := re.search(r"DevTools listening on (ws://\S+)", line):
                return m.group(1)
        raise AssertionError("Chromium did not start: " + "".join(lines[-10:]))

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._waiting.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
            else:
                key = f"{data.get('sessionId', '')}:{data['method']}"
                self._events.setdefault(key, []).append(data.get("params", {}))

    async def send(self, method: str, params: dict | None = None, session: str | None = None,
                   timeout: float = 30.0) -> dict:
        assert self.ws is not None
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        msg: dict[str, Any] = {"id": rid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        await self.ws.send_str(json.dumps(msg))
        reply = await asyncio.wait_for(fut, timeout)
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def events(self, session: str, method: str) -> list[dict]:
        return self._events.get(f"{session}:{method}", [])

    async def tab(self, url: str) -> Tab:
        target = (await self.send("Target.createTarget", {"url": "about:blank"}))["targetId"]
        session = (await self.send("Target.attachToTarget",
                                   {"targetId": target, "flatten": True}))["sessionId"]
        tab = Tab(self, target, session)
        await self.send("Page.enable", session=session)
        await self.send("Page.addScriptToEvaluateOnNewDocument", {"source": EXPOSE},
                        session=session)
        await self.send("Page.navigate", {"url": url}, session=session)
        return tab

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.ws is not None:
            await self.ws.close()
        if self.http is not None:
            await self.http.close()
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Tab:
    def __init__(self, browser: Browser, target: str, session: str) -> None:
        self.browser = browser
        self.target = target
        self.session = session

    async def eval(self, expression: str) -> Any:
        result = await self.browser.send("Runtime.evaluate", {"expression": expression,
                                                              "returnByValue": True},
                                         session=self.session)
        return result.get("result", {}).get("value")

    async def screen(self) -> str:
        """The text the page's terminal shows now ('' before it exists)."""
        return await self.eval(SCREEN) or ""

    async def wait_for(self, pattern: str, timeout: float = 60.0, gone: str | None = None) -> str:
        """The screen once `pattern` (a regex) is on it (and `gone`, if given, is not)."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = await self.screen()
            if re.search(pattern, text) and not (gone and re.search(gone, text)):
                return text
            await asyncio.sleep(0.2)
        raise AssertionError(f"{pattern!r} never appeared in the page; it shows:\n{text}")

    async def press(self, key: str) -> None:
        """A key as a person types it: the terminal's input has the focus, keydown + keyup."""
        await self.eval("document.querySelector('.xterm-helper-textarea').focus()")
        code = KEYS[key]
        for kind in ("rawKeyDown", "keyUp"):
            await self.browser.send("Input.dispatchKeyEvent", {
                "type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code,
                "nativeVirtualKeyCode": code}, session=self.session)

    async def screenshot(self, path: Path) -> Path:
        data = (await self.browser.send("Page.captureScreenshot", {"format": "png"},
                                        session=self.session))["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    async def close(self) -> None:
        with contextlib.suppress(AssertionError):
            await self.browser.send("Target.closeTarget", {"targetId": self.target})
