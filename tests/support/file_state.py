"""What 'no file changed' compares, for the tests that refuse bad input."""

from __future__ import annotations

import stat
from pathlib import Path


def state(folder: Path) -> dict[str, tuple]:
    """Every entry under `folder`: its kind, mode and bytes."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        data = p.read_bytes() if stat.S_ISREG(st.st_mode) else None
        out[str(p.relative_to(folder))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), data)
    return out
