"""Files written so that nothing the user made is lost, and read so that nothing can blow up.

Writing: atomic replacement (a temporary file in the same folder, fsync, rename), the replaced
file's mode kept, and temporaries that a killed writer left behind removed once no live writer
holds them. Snapshots and dataset results both write through here. Reading a zip member (a
snapshot's) takes its declared size from a budget first, so a small file that claims gigabytes
is refused before anything expands.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from flowtui.engine.errors import SnapshotError

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


def write_atomic(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
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




# --- bounded reads ---------------------------------------------------------------------------
# Everything one zip (a snapshot) expands to when read (manifest, arrays, decoded image) stays within
# MIN_EXPANSION bytes, or EXPANSION times the file's size where that is more: a few MB of zip
# that claims gigabytes is refused before anything is expanded.
MIN_EXPANSION = 256 << 20
EXPANSION = 32


class Budget:
    """The bytes a snapshot may still expand to; each member's declared size is taken from it
    before the member is read."""

    def __init__(self, file_size: int) -> None:
        self.file_size = file_size
        self.left = max(MIN_EXPANSION, EXPANSION * file_size)

    def take(self, what: str, n: int) -> None:
        if n > self.left:
            raise SnapshotError(
                f"{what} would expand to {n:,} bytes, out of proportion to the file's "
                f"{self.file_size:,} bytes; refusing it (a zip bomb?)"
            )
        self.left -= n


def read_member(zf: zipfile.ZipFile, name: str, budget: Budget, cap: int | None = None
                 ) -> bytes:
    """A member's bytes, its declared size checked first and the read capped at it."""
    info = zf.getinfo(name)
    if info.flag_bits & 0x1:
        raise SnapshotError(f"{name} is encrypted")
    size = info.file_size
    if cap is not None and size > cap:
        raise SnapshotError(f"{name} declares {size:,} bytes, more than a snapshot's {name} "
                            f"holds ({cap:,}); refusing it")
    budget.take(name, size)
    with zf.open(info) as fh:
        data = fh.read(size + 1)
    if len(data) != size:
        raise SnapshotError(f"{name} is corrupt: it does not expand to its declared size")
    return data
