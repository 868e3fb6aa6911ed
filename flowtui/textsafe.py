"""Text from outside (questions, answers, tokens, model and file names, snapshot strings) made
safe to print or draw: control characters and escape sequences become visible escapes, so no
input can set the window title, clear the screen, blink, or reorder what follows.

One function, used by the CLI and the explorer alike; plain Python, no dependencies.
"""

from __future__ import annotations

import unicodedata

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\e"}


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: object, keep_newlines: bool = False) -> str:
    """`text` with every control character (C0, DEL, C1), bidi control and other non-printing
    format character shown as an escape (`\\e[2J`, `\\x07`, `\\u202e`); newlines kept only if
    asked (multi-line bodies), else shown as `\\n`."""
    s = str(text)
    if s.isprintable():
        return s  # the common case; bidi overrides and isolates (Cf) are not printable
    out = []
    for ch in s:
        if ch == "\n" and keep_newlines:
            out.append(ch)
        elif (not ch.isprintable() and ch != " "
              and unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cn", "Zl", "Zp")):
            out.append(_escape(ch))
        else:
            out.append(ch)
    return "".join(out)


def signed(v: float, digits: int = 3) -> str:
    """`v` with its sign, never "-0.000": a value that rounds to zero is shown as +0.000."""
    return f"{round(v, digits) + 0.0:+.{digits}f}"  # + 0.0 turns -0.0 into 0.0
