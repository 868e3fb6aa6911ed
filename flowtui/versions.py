"""The dependency versions flowtui is tested on, and a check of the installed ones against them.

flowtui reaches inside transformers (attention registry, masks, caches, decoder layers, processor
internals: see `flowtui.engine.compat`), accelerate (sharding) and Textual (SVG snapshots), so a
release outside these ranges may compute different numbers without failing. `.ci/run` tests both
ends of every range; pyproject.toml admits exactly these ranges. Reads package metadata only: no
heavy import, so the CLI can check at start-up for free.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import metadata

# name -> (lowest tested, newest tested). A version is in range when its release numbers lie
# between the two, patch releases of the newest minor included.
TESTED: dict[str, tuple[str, str]] = {
    "torch": ("2.13.0", "2.13.0"),
    "transformers": ("5.22.0", "5.25.0"),
    "accelerate": ("1.1.0", "1.16.0"),
    "textual": ("8.2.8", "8.2.8"),
    "textual-serve": ("1.1.0", "1.1.3"),  # flowtui.web.server subclasses its Server
    "textual-image": ("0.12.0", "0.12.0"),  # ui/widgets/pixel_view.py uses a few internals
}

# Beyond these, a warning line at start-up; within them, silence.
WARN_AT_STARTUP = ("torch", "transformers")


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: '2.13.0+cpu' -> (2, 13, 0), '5.25.0rc1' ->
    (5, 25, 0)."""
    out = []
    for part in version.split("+")[0].split("."):
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        out.append(int(digits))
        if digits != part:
            break
    return tuple(out)


def in_range(version: str, low: str, high: str) -> bool:
    """low <= version, and version within the newest tested minor (high's patch releases count:
    a patch release changes no internals flowtui relies on)."""
    v = release(version)
    return release(low) <= v and v[:2] <= release(high)[:2]


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class VersionCheck:
    name: str
    installed: str | None
    low: str
    high: str

    @property
    def ok(self) -> bool:
        return self.installed is not None and in_range(self.installed, self.low, self.high)

    @property
    def range(self) -> str:
        return self.low if self.low == self.high else f"{self.low} – {self.high}"

    @property
    def message(self) -> str:
        if self.installed is None:
            return f"{self.name} is not installed (flowtui is tested with {self.range})"
        return (f"{self.name} {self.installed} is outside the versions flowtui is tested with "
                f"({self.range}); its numbers may be wrong without an error")


def check(names: tuple[str, ...] | None = None) -> list[VersionCheck]:
    """One VersionCheck per tested package (or per name given), in TESTED's order."""
    return [VersionCheck(n, installed(n), *TESTED[n]) for n in (names or tuple(TESTED))]


@cache
def _startup_warnings() -> tuple[str, ...]:
    return tuple(c.message for c in check(WARN_AT_STARTUP) if not c.ok)


def startup_warnings() -> list[str]:
    """One line per torch/transformers outside the tested range (empty when all is well)."""
    return list(_startup_warnings())


class UntestedVersionWarning(UserWarning):
    """torch or transformers outside the tested range."""


_warned = False


def warn_untested(emit: Callable[[str], None] | None = None) -> list[str]:
    """Say each startup warning once per process: through `emit` (the CLI prints one line on
    stderr), else as an UntestedVersionWarning (Python API users). Returns what was said."""
    global _warned
    if _warned:
        return []
    _warned = True
    lines = startup_warnings()
    for line in lines:
        if emit is not None:
            emit(line)
        else:
            warnings.warn(line, UntestedVersionWarning, stacklevel=3)
    return lines
