"""The remote engine's server: `flowtui serve --stdio` (one session on stdin/stdout) and
`flowtui serve --daemon` (models kept warm for many sessions behind an owner-only Unix socket).
What a session does is flowtui.remote.session.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from flowtui.engine.errors import (
    InputError,
)
from flowtui.remote.protocol import (
    LIMITS,
    Limits,
)
from flowtui.remote.session import LoadFn, Models, Session, log
from flowtui.version import __version__


# --- stdio ---------------------------------------------------------------------------------------
def _private_streams() -> tuple[BinaryIO, BinaryIO]:
    """The protocol's own copies of stdin/stdout. File descriptors 0 and 1 are then pointed at
    /dev/null and stderr, so a library that reads stdin or prints cannot touch the frames."""
    rfile = os.fdopen(os.dup(0), "rb")
    wfile = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return rfile, wfile


def serve_stdio(load: LoadFn | None = None, socket_path: str | Path | None = None,
                relay: bool = True, limits: Limits = LIMITS) -> int:
    """`flowtui serve --stdio`: relay to the warm daemon if one runs, else serve one session
    here. Returns when the client closes the stream (in-flight work is cancelled)."""
    rfile, wfile = _private_streams()
    if relay:
        path = Path(socket_path) if socket_path else default_socket_path()
        sock = connect_daemon(path)
        if sock is not None:
            log(f"relaying to the warm daemon at {path}")
            return relay_streams(sock, rfile, wfile)
    session = Session(rfile, wfile, Models(load, max_models=1), limits=limits, name="stdio")
    session.serve()
    if not session.wait(timeout=2.0):
        # A forward pass cannot be interrupted; nobody is listening for its result any more.
        sys.stderr.flush()
        os._exit(0)
    return 0


def relay_streams(sock: socket.socket, rfile: BinaryIO, wfile: BinaryIO) -> int:
    """Copy bytes both ways until the daemon closes; the client's end of stream is passed on
    (the daemon then cancels this session's work and keeps serving others)."""

    def upstream() -> None:
        try:
            while chunk := rfile.read1(1 << 16):  # type: ignore[attr-defined]
                sock.sendall(chunk)
        except OSError:
            pass
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    threading.Thread(target=upstream, daemon=True, name="flowtui-relay").start()
    try:
        while chunk := sock.recv(1 << 16):
            wfile.write(chunk)
            wfile.flush()
    except OSError:
        pass
    finally:
        sock.close()
    return 0


# --- daemon --------------------------------------------------------------------------------------
def default_socket_path() -> Path:
    """$FLOWTUI_SOCKET, else <tmp>/flowtui-<uid>/daemon.sock in a folder only its owner opens."""
    env = os.environ.get("FLOWTUI_SOCKET")
    if env:
        return Path(env).expanduser()
    return Path(tempfile.gettempdir()) / f"flowtui-{os.getuid()}" / "daemon.sock"


def _private_folder(folder: Path) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = folder.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise InputError(
            f"{folder} must be a folder owned by you that no one else can open (mode 700); "
            "refusing to put the daemon's socket there"
        )


def _own_socket(path: Path) -> bool:
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISSOCK(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def connect_daemon(path: Path) -> socket.socket | None:
    """A connection to a daemon listening on `path`, or None. A socket someone else owns, or
    that others may open, is ignored: sessions only ever talk to their owner's daemon."""
    if not _own_socket(path):
        if path.exists():
            log(f"ignoring {path}: not a socket owned by you with mode 600")
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    return sock


def _peer_uid(conn: socket.socket) -> int | None:
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:  # not Linux: the socket's mode and folder keep others out
        return None
    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, option,
                                                          struct.calcsize("3i")))
    return uid


def serve_daemon(socket_path: str | Path | None = None, load: LoadFn | None = None,
                 max_models: int = 1, limits: Limits = LIMITS,
                 ready: Callable[[Path], None] | None = None) -> int:
    """`flowtui serve --daemon`: keep models loaded for every session of this user. Runs in the
    foreground until SIGTERM or Ctrl+C; removes its socket on the way out."""
    import signal

    explicit = socket_path is not None or bool(os.environ.get("FLOWTUI_SOCKET"))
    path = Path(socket_path) if socket_path else default_socket_path()
    if not explicit:
        _private_folder(path.parent)  # <tmp>/flowtui-<uid>: made private, or refused
    elif not path.parent.is_dir():
        raise InputError(f"socket {path}: folder {path.parent} does not exist")
    if path.exists() or path.is_symlink():
        alive = connect_daemon(path)
        if alive is not None:
            alive.close()
            raise InputError(f"a flowtui daemon already listens on {path}")
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise InputError(f"{path} exists and is not a socket; remove it or pick --socket")
        path.unlink()  # a stale socket from a daemon that died
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket is born owner-only: no window where others can connect
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    inode = path.stat().st_ino
    listener.listen(16)
    models = Models(load, max_models)

    def stop(signum, _frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
    log(f"daemon (pid {os.getpid()}, flowtui {__version__}) listening on {path}")
    if ready is not None:
        ready(path)
    count = 0
    try:
        while True:
            conn, _ = listener.accept()
            uid = _peer_uid(conn)
            if uid is not None and uid != os.getuid():
                log(f"refused a connection from uid {uid}")
                conn.close()
                continue
            count += 1
            threading.Thread(target=_daemon_session, args=(conn, models, limits, count),
                             daemon=True, name=f"flowtui-session-{count}").start()
    except KeyboardInterrupt:
        log("daemon stopping")
    finally:
        listener.close()
        try:
            if path.stat().st_ino == inode:
                path.unlink()
        except OSError:
            pass
    return 0


def _daemon_session(conn: socket.socket, models: Models, limits: Limits, number: int) -> None:
    name = f"session {number}"
    log(f"{name} connected")
    try:
        with conn, conn.makefile("rb") as rfile, conn.makefile("wb") as wfile:
            session = Session(rfile, wfile, models, daemon=True, limits=limits, name=name)
            session.serve()
    except OSError:
        pass  # the client left before reading what was sent (closing flushes): nothing lost
    log(f"{name} ended")


__all__ = ["connect_daemon", "default_socket_path", "relay_streams", "serve_daemon",
           "serve_stdio"]
