"""Text from outside cannot drive the terminal: every control and bidi character is made visible."""

from __future__ import annotations

import pytest

from flowtui.textsafe import visible


@pytest.mark.parametrize(
    "raw,shown",
    [
        ("Is there a horse?", "Is there a horse?"),
        ("naïve café 馬 🐎", "naïve café 馬 🐎"),  # printable Unicode stays as it is
        ("\x1b]0;pwned\x07title", "\\e]0;pwned\\x07title"),  # window title (OSC)
        ("\x1b[2J\x1b[H", "\\e[2J\\e[H"),  # clear screen
        ("\x1b[5mblink", "\\e[5mblink"),
        ("a\rb", "a\\rb"),  # carriage return overwrites the line
        ("\x9b31m", "\\x9b31m"),  # C1 CSI, the 8-bit escape
        ("abc\u202edcba", "abc\\u202edcba"),  # right-to-left override
        ("tab\there", "tab\\there"),
        ("del\x7f", "del\\x7f"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
    ],
)
def test_controls_are_visible(raw, shown):
    assert visible(raw) == shown


def test_newlines_kept_only_when_asked():
    assert visible("a\nb") == "a\\nb"
    assert visible("a\nb\x1b", keep_newlines=True) == "a\nb\\e"


def test_non_strings_are_shown_as_text():
    assert visible(3) == "3" and visible(None) == "None"


def test_signed_never_shows_minus_zero():
    from flowtui.textsafe import signed

    assert [signed(v) for v in (-0.0002, -0.0, 0.0004, -0.0006, 0.12345, -1.0)] == \
        ["+0.000", "+0.000", "+0.000", "-0.001", "+0.123", "-1.000"]
    assert signed(-0.004, 2) == "+0.00" and signed(-0.006, 2) == "-0.01"
