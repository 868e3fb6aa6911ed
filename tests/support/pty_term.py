"""A real pseudo-terminal for the smoke tests: the installed `flowtui` console script run under
pexpect, its screen read through pyte (a pure-Python terminal emulator), keys sent as a keyboard
sends them, and a clean exit checked (exit status 0, the terminal's modes restored, no
traceback). tests/cli/test_smoke_pty.py says why pexpect + pyte rather than tmux.
"""

from __future__ import annotations

import re
import shutil
import sys
import sysconfig
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pexpect
import pyte
import pytest

from support.remote_util import ROOT, subprocess_env

COLS, ROWS = 100, 30
SAMPLE = ROOT / "sample_images" / "toy_scene_1.png"
QUESTION = "Is there a red circle?"
ENTER, RIGHT, LEFT, CTRL_C = "\r", "\x1b[C", "\x1b[D", "\x03"

# Modes a full-screen app sets and must undo on exit: (sequence that sets, sequence that undoes).
MODES = [("\x1b[?1049h", "\x1b[?1049l"),  # alternate screen
         ("\x1b[?25l", "\x1b[?25h"),  # hidden cursor
         ("\x1b[?1000h", "\x1b[?1000l"), ("\x1b[?1003h", "\x1b[?1003l"),  # mouse reports
         ("\x1b[?1006h", "\x1b[?1006l"),
         ("\x1b[?2004h", "\x1b[?2004l"),  # bracketed paste
         ("\x1b[?1004h", "\x1b[?1004l"),  # focus events
         ("\x1b[?7l", "\x1b[?7h")]  # no line wrap


def flowtui_script() -> str:
    """The console script pip installed for this Python (what a user types): next to the
    interpreter in a virtual environment, else in its scripts folder or on PATH."""
    candidates = [Path(sys.executable).parent / "flowtui",
                  Path(sysconfig.get_path("scripts")) / "flowtui", shutil.which("flowtui")]
    for script in candidates:
        if script and Path(script).is_file():
            return str(script)
    pytest.fail(f"no flowtui console script (looked at {candidates}): pip install -e '.[test]'")


def term_env(**extra: str) -> dict[str, str]:
    env = subprocess_env(TERM="xterm-256color", LC_ALL="C.UTF-8", **extra)
    # Settings of whoever runs the tests would change what is drawn or how errors show; the
    # size comes from the pty alone.
    for name in [n for n in env if n.startswith("TEXTUAL_")] + [
            "COLORTERM", "NO_COLOR", "FLOWTUI_DEBUG", "COLUMNS", "LINES"]:
        env.pop(name, None)
    return env


def _default_signals() -> None:
    """Ctrl-C as a terminal gives it: a pytest-xdist worker ignores SIGINT, and an ignored
    signal stays ignored in the programs it starts."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Term:
    """One command in a pseudo-terminal, its screen emulated by pyte."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()
        self._carry = b""
        self.status: int | None = None
        self.tty_sane: bool | None = None  # cooked mode back after the exit
        self.child = pexpect.spawn(flowtui_script(), args, cwd=str(cwd), env=env or term_env(),
                                   dimensions=(ROWS, COLS), preexec_fn=_default_signals)

    def _feed(self, data: bytes, final: bool = False) -> None:
        self.raw.extend(data)
        # pyte knows CSI > (kitty keyboard push) but draws the final byte of CSI < (pop) as a
        # character: make it the same no-op. A sequence's start split across reads waits.
        data = (self._carry + data).replace(b"\x1b[<", b"\x1b[>")
        keep = 0 if final else 1 if data.endswith(b"\x1b") else 2 if data.endswith(b"\x1b[") else 0
        self._carry = data[len(data) - keep:] if keep else b""
        self.stream.feed(data[: len(data) - keep])

    def pump(self, seconds: float) -> bool:
        """Read for `seconds`; False once the command has closed the terminal."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                self._feed(self.child.read_nonblocking(65536, timeout=0.05))
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                self._feed(b"", final=True)
                return False
        return True

    @property
    def text(self) -> str:
        return "\n".join(self.screen.display)

    @property
    def output(self) -> str:
        """Everything written, escape sequences removed, as one string."""
        text = self.raw.decode("utf-8", "replace")
        return re.sub(r"\x1b(\[[0-9;?<>=$]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-B]|.)", "",
                      text).replace("\r\n", "\n")

    def report(self) -> str:
        screen = "\n".join(line.rstrip() for line in self.screen.display).strip("\n")
        return (f"flowtui {' '.join(self.args)}\n--- screen ---\n{screen}\n"
                f"--- output (tail) ---\n{self.output[-3000:]}")

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float = 60) -> None:
        """Until ready() holds for the screen; fails at once if the command ends first."""
        end = time.monotonic() + timeout
        while not ready():
            if not self.pump(0.2):
                self.finish()
                pytest.fail(f"exited ({self.status}) before {what} showed\n{self.report()}")
            if time.monotonic() > end:
                pytest.fail(f"{what} not on screen after {timeout}s\n{self.report()}")

    def wait_for(self, *needles: str, timeout: float = 60) -> None:
        """Until every needle is on screen."""
        self.wait_until(lambda: all(n in self.text for n in needles), repr(needles), timeout)

    def resize(self, cols: int, rows: int) -> None:
        """As a terminal window resized: the pty's size (SIGWINCH) and the emulator's."""
        self.screen.resize(rows, cols)
        self.child.setwinsize(rows, cols)

    def press(self, *keys: str) -> None:
        for key in keys:
            self.child.send(key)

    def finish(self, timeout: float = 60) -> int:
        """Wait for the command to end; its exit status (128+N for signal N)."""
        end = time.monotonic() + timeout
        while self.pump(0.2):
            if time.monotonic() > end:
                pytest.fail(f"still running {timeout}s later\n{self.report()}")
        if self.status is None:
            lflags = termios.tcgetattr(self.child.child_fd)[3]  # the pty's modes, after the exit
            self.tty_sane = bool(lflags & termios.ECHO and lflags & termios.ICANON
                                 and lflags & termios.ISIG)
            self.child.close()
            sig = self.child.signalstatus
            self.status = self.child.exitstatus if sig is None else 128 + sig
        return self.status

    def quit_cleanly(self, key: str = "q") -> None:
        """The app's quit key, then: exit 0, every terminal mode it set undone, cooked mode
        back, and nothing like a traceback written."""
        self.press(key)
        status = self.finish()
        assert status == 0, self.report()
        self.assert_restored()

    def assert_restored(self) -> None:
        raw = self.raw.decode("utf-8", "replace")
        assert MODES[0][0] in raw, f"never went full screen\n{self.report()}"
        for on, off in MODES:
            if on in raw:
                assert raw.rfind(on) < raw.rfind(off), f"{on!r} left set\n{self.report()}"
        assert self.tty_sane, "the terminal was left in raw mode (no echo or line editing)"
        assert "Traceback" not in self.output and "flowtui: error" not in self.output, \
            self.report()

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)


def run_to_end(*args: str | Path, cwd: Path, env: dict[str, str] | None = None,
               timeout: float = 120) -> Term:
    """A command that ends by itself (a headless one, a --help), run to its exit."""
    t = Term([str(a) for a in args], cwd, env)
    try:
        t.finish(timeout)
    finally:
        t.close()
    return t
