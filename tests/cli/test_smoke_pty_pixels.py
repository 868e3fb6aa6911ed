"""The map's protocols in a real pseudo-terminal (tests/support/pty_term.py): the
installed `flowtui` started with `--pixels halfblock`, with a forced kitty run, and with the
default probe on a terminal that never answers it (pyte answers no query), each quitting
cleanly."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from support.fake_engine import make_analysis
from support.pty_term import Term, term_env

from flowtui.engine.snapshot import save_snapshot

# Not in the fast lane (`-m "not slow"`): the real console script in a pseudo-terminal.
pytestmark = pytest.mark.slow

APC = re.compile(rb"\x1b_G[^\x1b]*\x1b\\")


@pytest.fixture
def snap(tmp_path) -> Path:
    path = tmp_path / "s.flowtui"
    save_snapshot(make_analysis(num_layers=6), path)
    return path


def start(args: list[str], cwd: Path, cls: type[Term] = Term, **env: str) -> Term:
    return cls([str(a) for a in args], cwd, term_env(**env) if env else None)


def test_half_blocks_start_and_quit(snap):
    t = start(["open", snap, "--pixels", "halfblock"], snap.parent)
    try:
        t.wait_for("CAM · layer 0/5", "half-blocks")
        assert "▀" in t.text
        t.press("\x1b[C")
        t.wait_for("CAM · layer 1/5")
        t.quit_cleanly()
    finally:
        t.close()


@pytest.mark.parametrize("colorterm", ["", "truecolor"])
def test_forced_kitty_starts_sends_the_image_and_quits(snap, colorterm):
    """In 256 colours (COLORTERM not passed, as over ssh) and in true colour alike, the cells
    Textual writes name the image sent (kitty reads the id from the 8-bit colour)."""
    raw = bytearray()

    class Recording(Term):
        def _feed(self, data: bytes, final: bool = False) -> None:
            raw.extend(data)
            data = APC.sub(b"", bytes(data))
            super()._feed(data, final)

    extra = {"COLORTERM": colorterm} if colorterm else {}
    t = start(["open", snap, "--pixels", "kitty"], snap.parent, Recording, **extra)
    try:
        t.wait_for("CAM · layer 0/5", "kitty pixels")
        t.wait_until(lambda: b"\x1b_G" in raw, "the kitty image")
        first = re.findall(r"\x1b_Ga=p,i=(\d+),", raw.decode("utf-8", "replace"))
        t.wait_until(lambda: f"\x1b[38;5;{first[0]}m\U0010eeee" in raw.decode("utf-8", "replace"),
                     "placeholder cells naming the image")
        t.press("\x1b[C")
        t.wait_for("CAM · layer 1/5")
        t.quit_cleanly()
        sent = raw.decode("utf-8", "replace")
        ids = set(re.findall(r"\x1b_Ga=p,i=(\d+),", sent))
        deleted = set(re.findall(r"\x1b_Ga=d,d=I,i=(\d+),", sent))
        assert len(ids) >= 2 and ids <= deleted  # both layers' images, freed at the exit
    finally:
        t.close()


def test_a_terminal_that_never_answers_the_probe_gets_half_blocks_at_once(snap):
    t0 = time.monotonic()
    t = start(["open", snap], snap.parent)  # --pixels auto; pyte answers no query
    try:
        t.wait_for("CAM · layer 0/5", "half-blocks (no answer)")
        assert time.monotonic() - t0 < 30
        assert "Gi=31" not in t.text  # the probe left nothing on screen
        t.quit_cleanly()
    finally:
        t.close()
