"""The CLI against careful users and attackers (issue 11): text from outside never reaches the
terminal as control characters, and bad input is one line on stderr, exit 2, nothing changed."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from PIL import Image

from flowtui.cli import main

TOY = ["--model", "flowtui-toy"]
HOSTILE = "\x1b]0;owned\x07\x1b[2J\x1b[5m\u202e\x9b"  # title, clear, blink, bidi, C1 CSI


def state(folder: Path) -> dict[str, tuple]:
    """Every entry under `folder`: kind, mode and bytes (what 'no file changed' compares)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        data = p.read_bytes() if stat.S_ISREG(st.st_mode) else None
        out[str(p.relative_to(folder))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), data)
    return out


def no_controls(text: str) -> bool:
    return not any(c in text for c in ("\x1b", "\x07", "\u202e", "\x9b"))


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (200, 40, 40)).save(path)
    return path


def test_a_hostile_question_is_shown_not_obeyed(photo, tmp_path, capsys):
    out = tmp_path / "run.flowtui"
    code = main([str(photo), "Is there a red circle?" + HOSTILE, "--headless", *TOY,
                 "--max-new-tokens", "2", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert no_controls(captured.out) and no_controls(captured.err)
    assert "question: Is there a red circle?\\e]0;owned\\x07\\e[2J\\e[5m\\u202e" in captured.out
    assert out.exists()


def test_a_hostile_file_name_in_an_error_is_shown_not_obeyed(tmp_path, capsys):
    before = state(tmp_path)
    code = main(["open", str(tmp_path / f"x{HOSTILE}.flowtui")])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("flowtui: error: snapshot not found")
    assert no_controls(err) and "\\e]0;owned\\x07" in err
    assert state(tmp_path) == before
