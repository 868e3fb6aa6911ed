"""`flowtui web`: the explorer served to a browser with textual-serve.

Every browser tab is a websocket to this server, which runs one explorer process per tab
(flowtui.web.tab, under Textual's web driver) and relays its screen to xterm.js in the page.
The explorers never load a model: they are clients of one `flowtui serve --daemon` that this
server starts (flowtui.remote.local_daemon), so the model is loaded once and stays warm.

Access: the server listens on 127.0.0.1 unless told otherwise, and every path lives under a
random token (`http://127.0.0.1:PORT/TOKEN/`): a request without it is refused (403), as is a
websocket opened from another site's page. textual-serve's own Server is kept for the websocket
and process handling; what changes is the routes (under the token), the page (a copy of its
template that loads nothing from the internet and builds its URLs from the address the browser
used, so an ssh port-forward to another local port works) and the run loop (port 0, the URL
printed once listening, a clean stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import aiohttp_jinja2
import jinja2
from aiohttp import web
from textual_serve.server import Server

from flowtui.engine.errors import InputError
from flowtui.textsafe import visible

TEMPLATES = Path(__file__).with_name("templates")
STATIC = Path(sys.modules[Server.__module__].__file__ or "").with_name("static")
REFUSED = ("flowtui web: refused. Open the address `flowtui web` printed, with its token "
           "(http://HOST:PORT/TOKEN/).\n")


def new_token() -> str:
    """32 random URL-safe characters (192 bits)."""
    return secrets.token_urlsafe(24)


def shown_host(host: str) -> str:
    """The host as a URL shows it: this machine's name for a wildcard bind, [..] for IPv6."""
    if host in ("", "0.0.0.0", "::"):
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host


class WebServer(Server):
    """textual-serve's Server behind a token: `command` runs once per browser tab."""

    def __init__(self, command: str, *, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None, title: str = "flowtui",
                 on_listen: Callable[[str], None] | None = None) -> None:
        super().__init__(command, host=host, port=port, title=title, statics_path=STATIC,
                         templates_path=TEMPLATES)
        self.token = token or new_token()
        self.on_listen = on_listen
        self.url: str | None = None
        self._tasks: set[asyncio.Task] = set()  # one per open tab
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- access ----------------------------------------------------------------------------
    def _allowed(self, request: web.Request) -> bool:
        first = request.path.lstrip("/").partition("/")[0]
        if not hmac.compare_digest(first.encode(), self.token.encode()):
            return False
        origin = request.headers.get("Origin")
        # A page from another site may open websockets to localhost: only our own page may.
        return origin is None or urlsplit(origin).netloc == request.host

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        if not self._allowed(request):
            raise web.HTTPForbidden(text=REFUSED)
        response = await handler(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    async def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        # Escaped: the page quotes the Host header the request came with.
        aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(self.templates_path),
                             autoescape=True)
        base = f"/{self.token}"
        # No /download route (textual-serve's, outside any prefix): flowtui never delivers a
        # file to the browser; snapshots and exports are written on this machine.
        app.add_routes([
            web.get(base, self._to_index),
            web.get(f"{base}/", self.handle_index, name="index"),
            web.get(f"{base}/ws", self.handle_websocket, name="websocket"),
            web.static(f"{base}/static", self.statics_path, name="static"),
        ])
        app.on_shutdown.append(self.on_shutdown)
        return app

    async def _to_index(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"/{self.token}/")

    async def handle_index(self, request: web.Request) -> web.StreamResponse:
        """The page, its URLs built from the address the browser used (`Host`), so it works
        through a port-forward to any local port."""
        scheme = "wss" if request.secure else "ws"
        context: dict[str, Any] = {
            "font_size": _int(request.query.get("fontsize"), 16),
            "app_websocket_url": f"{scheme}://{request.host}/{self.token}/ws",
            "config": {"static": {"url": f"/{self.token}/static/"}},
            "application": {"name": self.title},
        }
        return aiohttp_jinja2.render_template("app_index.html", request, context)

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        task = asyncio.current_task()
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            return await super().handle_websocket(request)
        finally:
            self._tasks.discard(task)

    async def on_shutdown(self, app: web.Application) -> None:
        """Each open tab is told the session is over and its explorer quits (textual-serve's
        handler sends it `quit` once the websocket closes)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)

    # --- running ---------------------------------------------------------------------------
    async def _run(self) -> None:
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._stop.set)
        runner = web.AppRunner(await self._make_app(), handle_signals=False, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            try:
                await site.start()
            except OSError as exc:
                raise InputError(f"cannot listen on {self.host}:{self.port}: "
                                 f"{exc.strerror or exc} (choose another --port, or --port 0 "
                                 "for any free one)") from None
            port = runner.addresses[0][1]
            self.url = f"http://{shown_host(self.host)}:{port}/{self.token}/"
            if self.on_listen is not None:
                self.on_listen(self.url)
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def stop(self) -> None:
        """Ask a serving server to stop (from any thread)."""
        if self._stop is not None and self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)

    def serve(self, debug: bool = False) -> None:
        """Serve until SIGINT/SIGTERM (or stop()); tabs still open are ended first."""
        self.debug = debug
        logging.basicConfig(level=logging.WARNING, format="flowtui web: %(message)s")
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._run())
        finally:
            self._loop.close()


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def announce(url: str, host: str, out: TextIO) -> None:
    """What the user needs: the URL, and how to reach it from their own machine over ssh."""
    port = urlsplit(url).port
    print(f"flowtui web: open {visible(url)}", file=out, flush=True)
    if host in ("127.0.0.1", "localhost", "::1"):
        print(f"  from another machine: ssh -N -L {port}:127.0.0.1:{port} "
              f"{visible(socket.gethostname())}, then open the same address there "
              "(docs/remote.md)", file=out, flush=True)
    else:
        print(f"  listening on {visible(host)}: anyone who can reach this port and has the URL "
              "can use the model", file=out, flush=True)
    print("  Ctrl+C stops the server, its tabs and its engine", file=out, flush=True)


__all__ = ["WebServer", "announce", "new_token"]
