"""Writing files so that nothing the user made is lost: atomic replacement (a temporary file in
the same folder, fsync, rename), the replaced file's mode kept, and temporaries that a killed
writer left behind removed once no live writer holds them. Snapshots and dataset results both
write through here.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # not POSIX: stale temporaries are told by their age instead of a lock
    fcntl = None  # type: ignore[assignment]

# Temporary files are `.{name}.{12 hex}.flowtui-tmp` next to the target; only names of this form
# are ever cleaned up, and only when no live writer holds them (a lock, see _remove_if_stale).
TMP_SUFFIX = ".flowtui-tmp"
_TMP_NAME = re.compile(r"^\..*\.[0-9a-f]{12}" + re.escape(TMP_SUFFIX) + r"$", re.DOTALL)
# Without flock (not POSIX), a temporary this old is taken for a dead writer's.
_STALE_AGE = 24 * 3600.0



class WriteError(OSError):
    """A write that failed, with a one-line reason (callers turn it into their own error)."""


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write `path` through `write(fh)` atomically: a reader sees the old file or the whole new
    one, never half. A new file gets the mode the umask gives; a replaced one keeps its mode; a
    link is followed (its target is replaced, the link kept). Raises WriteError."""
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    folder = path.parent if str(path.parent) else Path(".")
    try:
        mode = stat.S_IMODE(path.stat().st_mode)  # replacing: the file keeps its permissions
    except FileNotFoundError:
        mode = None
    fd, tmp = temporary(folder, path.name)
    try:
        with os.fdopen(fd, "wb") as fh:  # closing it releases the lock: after the rename
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    clean_stale(folder)
    return path


def temporary(folder: Path, name: str) -> tuple[int, Path]:
    """A new locked temporary file in `folder` (open fd, path). Created with mode 0666, so the
    umask (and a default ACL) decide its permissions as for any new file."""
    stem = name.encode()[:180].decode(errors="ignore")  # room for the suffix within NAME_MAX
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        tmp = folder / f".{stem}.{secrets.token_hex(6)}{TMP_SUFFIX}"
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise WriteError(f"cannot write in {folder}: {exc.strerror or exc}") from None
        if fcntl is None:
            return fd, tmp
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink:  # not taken for stale between open and lock
            return fd, tmp
        os.close(fd)
    raise WriteError(f"cannot write in {folder}: no free temporary name")


def clean_stale(folder: Path) -> None:
    """Remove temporaries that writers killed mid-write left in `folder`: only flowtui's own
    names, only regular files of this user, and only while no live writer holds their lock."""
    try:
        entries = [e.name for e in os.scandir(folder) if _TMP_NAME.match(e.name)]
    except OSError:
        return
    for name in entries:
        with contextlib.suppress(OSError):
            _remove_if_stale(folder / name)


def _remove_if_stale(tmp: Path) -> None:
    flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(tmp, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            return
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # a live writer
        elif time.time() - st.st_mtime < _STALE_AGE:
            return
        now = os.lstat(tmp)
        if (now.st_ino, now.st_dev) == (st.st_ino, st.st_dev):  # still the file we locked
            tmp.unlink()
    finally:
        os.close(fd)


