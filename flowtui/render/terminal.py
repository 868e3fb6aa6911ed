"""Which graphics protocol this terminal shows images with: probed once, before the explorer
takes the screen (docs/definitions.md, "Pixel protocol"). Plain Python: no Rich, no Textual.

The probe writes kitty's graphics query and then a DA1 query (primary device attributes),
which every VT100-style terminal answers. A kitty answer that comes before the DA1 answer means
the kitty protocol; a DA1 answer listing 4 means Sixel; iTerm's inline images are chosen from
what iTerm2 and WezTerm put in the environment (neither answers a query for them). No DA1
answer within the timeout (a TERM that lies, a pipe, a serial line) means half-blocks: the
probe never waits longer than `PROBE_TIMEOUT_S`, and the line it was written on is erased.

In tmux the image escapes reach the outer terminal only through passthrough
(`set -g allow-passthrough on`): without it flowtui draws half-blocks and says why.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

PROTOCOLS: tuple[str, ...] = ("kitty", "sixel", "iterm", "halfblock")
PIXEL_CHOICES: tuple[str, ...] = ("auto", *PROTOCOLS)
PROTOCOL_TITLES = {"kitty": "kitty graphics", "sixel": "Sixel", "iterm": "iTerm inline images",
                   "halfblock": "half-blocks"}
PROBE_TIMEOUT_S = 0.5
# Image id 31 in the query: any id works; the answer echoes it.
KITTY_QUERY = "\x1b_Gi=31,s=1,v=1,a=q,t=d,f=24;AAAA\x1b\\"
DA1_QUERY = "\x1b[c"
_KITTY_OK = re.compile(rb"\x1b_Gi=31[^\x1b]*;OK\x1b\\")
_DA1 = re.compile(rb"\x1b\[\?([0-9;]*)c")
# Terminals that answer kitty's query but cannot show its Unicode placeholders, which the kitty
# view draws with (textual-image's own finding): they get Sixel or iTerm images instead.
_NO_PLACEHOLDERS = ("WezTerm", "konsole")


@dataclass(frozen=True)
class Graphics:
    """The protocol the map is drawn with, and why (said in the status line and the doctor)."""

    protocol: str
    reason: str
    tmux: str | None = None  # None outside tmux; else its allow-passthrough setting

    @property
    def pixels(self) -> bool:
        return self.protocol != "halfblock"

    def describe(self) -> str:
        return f"{PROTOCOL_TITLES[self.protocol]} ({self.reason})"


def tmux_wrap(sequence: str) -> str:
    """`sequence` inside tmux's passthrough DCS, escapes doubled, for the outer terminal."""
    return "\x1bPtmux;" + sequence.replace("\x1b", "\x1b\x1b") + "\x1b\\"


def tmux_passthrough(
    env: Mapping[str, str], run: Callable[..., subprocess.CompletedProcess] = subprocess.run
) -> str | None:
    """tmux's allow-passthrough ("on", "all", "off" or "unknown"), or None outside tmux."""
    if not env.get("TMUX"):
        return None
    try:
        out = run(["tmux", "show", "-gv", "allow-passthrough"], capture_output=True, text=True,
                  timeout=1.0)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    value = (out.stdout or "").strip().lower()
    return value if value in ("on", "all", "off") else "unknown"


@dataclass(frozen=True)
class ProbeAnswer:
    kitty: bool  # kitty's graphics query answered OK
    da1: tuple[int, ...] | None  # the DA1 parameters; None: no answer in time
    seconds: float


def parse_answers(data: bytes) -> tuple[bool, tuple[int, ...] | None]:
    """(kitty answered OK before DA1, DA1's parameters or None) from what the terminal sent."""
    da1 = _DA1.search(data)
    kitty = _KITTY_OK.search(data)
    ok = kitty is not None and (da1 is None or kitty.start() < da1.start())
    params = None if da1 is None else tuple(int(p) for p in da1.group(1).split(b";") if p)
    return ok, params


def probe(fd_in: int, fd_out: int, timeout: float = PROBE_TIMEOUT_S,
          wrap: Callable[[str], str] = lambda s: s) -> ProbeAnswer:
    """Ask the terminal on fd_in/fd_out; never longer than `timeout` seconds. The terminal is
    put in non-canonical, no-echo mode for the probe and restored after it."""
    import termios

    t0 = time.monotonic()
    old = termios.tcgetattr(fd_in)
    new = termios.tcgetattr(fd_in)
    new[3] &= ~(termios.ICANON | termios.ECHO)
    new[6][termios.VMIN], new[6][termios.VTIME] = 0, 0
    data = b""
    try:
        termios.tcsetattr(fd_in, termios.TCSANOW, new)
        os.write(fd_out, (wrap(KITTY_QUERY) + DA1_QUERY).encode())
        deadline = t0 + timeout
        while not _DA1.search(data):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([fd_in], [], [], left)
            if ready:
                chunk = os.read(fd_in, 4096)
                if not chunk:
                    break
                data += chunk
        # An APC the terminal did not understand may have been printed: erase the line.
        os.write(fd_out, b"\r\x1b[2K")
    finally:
        termios.tcsetattr(fd_in, termios.TCSAFLUSH, old)
    kitty, da1 = parse_answers(data)
    return ProbeAnswer(kitty, da1, time.monotonic() - t0)


def choose(answer: ProbeAnswer | None, env: Mapping[str, str]) -> tuple[str, str]:
    """(protocol, reason) from a probe's answer and the environment (None: no terminal)."""
    if answer is None:
        return "halfblock", "not a terminal"
    if answer.da1 is None and not answer.kitty:
        return "halfblock", f"no answer to the probe in {PROBE_TIMEOUT_S:g} s"
    program = env.get("TERM_PROGRAM", "")
    iterm = program in ("iTerm.app", "WezTerm") or env.get("LC_TERMINAL") == "iTerm2"
    no_placeholders = program == "WezTerm" or bool(env.get("KONSOLE_VERSION"))
    if answer.kitty and not no_placeholders:
        return "kitty", "probed"
    if iterm:
        return "iterm", f"TERM_PROGRAM={program or env.get('LC_TERMINAL')}"
    if answer.da1 is not None and 4 in answer.da1:
        return "sixel", "probed"
    return "halfblock", "no image protocol answered"


def detect(
    requested: str = "auto",
    env: Mapping[str, str] | None = None,
    fd_in: int | None = None,
    fd_out: int | None = None,
    timeout: float = PROBE_TIMEOUT_S,
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> Graphics:
    """The protocol to draw the map with: `requested` unless it is "auto", else probed on the
    terminal at fd_in/fd_out (stdin/stdout by default). Never raises for a terminal's sake."""
    if requested not in PIXEL_CHOICES:
        raise ValueError(f"unknown pixel protocol {requested!r} "
                         f"(choose from {', '.join(PIXEL_CHOICES)})")
    env = os.environ if env is None else env
    tmux = tmux_passthrough(env, run)
    blocked = tmux not in (None, "on", "all")
    if requested != "auto":
        reason = "--pixels"
        if blocked and requested != "halfblock":
            reason += f"; tmux allow-passthrough is {tmux}: images may not show"
        return Graphics(requested, reason, tmux)
    if blocked:
        return Graphics("halfblock", f"tmux allow-passthrough is {tmux}: "
                        "set -g allow-passthrough on", tmux)
    fd_in = 0 if fd_in is None else fd_in
    fd_out = 1 if fd_out is None else fd_out
    answer = None
    try:
        if os.isatty(fd_in) and os.isatty(fd_out):
            answer = probe(fd_in, fd_out, timeout, tmux_wrap if tmux else (lambda s: s))
    except (OSError, ValueError, ImportError):
        answer = None  # termios missing (Windows) or the terminal went away: half-blocks
    protocol, reason = choose(answer, env)
    if tmux and protocol != "halfblock":
        reason += ", through tmux passthrough"
    return Graphics(protocol, reason, tmux)
