"""Text from outside (questions, answers, tokens, model and file names, snapshot strings) made
safe to print or draw: control characters and escape sequences become visible escapes, so no
input can set the window title, clear the screen, blink, or reorder what follows.

One function, used by the CLI and the explorer alike; plain Python, no dependencies.
"""

from __future__ import annotations

import unicodedata

# Bidirectional overrides and isolates reorder the text after them on screen.
_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)}
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
    if s.isprintable() and not (_BIDI & set(s)):
        return s  # the common case: nothing to do
    out = []
    for ch in s:
        if ch == "\n" and keep_newlines:
            out.append(ch)
        elif ch in _BIDI or (not ch.isprintable() and ch != " "
                             and unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cn", "Zl", "Zp")):
            out.append(_escape(ch))
        else:
            out.append(ch)
    return "".join(out)
