"""How much of a truncated answer survived, word by word (docs/definitions.md, "Token overlap").
Plain Python, no torch: the sweep chart imports it at start-up."""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """The words and punctuation marks of an answer, lower-cased (docs/definitions.md,
    "Token overlap")."""
    return _WORD.findall(text.lower())


def _lcs_table(b: list[str], t: list[str]) -> list[list[int]]:
    """table[i][j]: length of the longest common subsequence of b[i:] and t[j:]."""
    table = [[0] * (len(t) + 1) for _ in range(len(b) + 1)]
    for i in range(len(b) - 1, -1, -1):
        for j in range(len(t) - 1, -1, -1):
            table[i][j] = (table[i + 1][j + 1] + 1 if b[i] == t[j]
                           else max(table[i + 1][j], table[i][j + 1]))
    return table


def token_overlap(baseline: str, truncated: str) -> float:
    """How much of the baseline answer survived truncation (docs/definitions.md, "Token
    overlap"): the length of the longest common subsequence of the two answers' words over the
    number of baseline words; 1.0 for equal answers, and for an empty baseline only when the
    truncated answer is empty too."""
    b, t = words(baseline), words(truncated)
    if not b:
        return 1.0 if not t else 0.0
    return _lcs_table(b, t)[0][0] / len(b)


def word_changes(baseline: str, truncated: str) -> list[tuple[str, bool]]:
    """The truncated answer's words (case as written), each with whether it changed: not part
    of one longest common subsequence with the baseline's words."""
    b = words(baseline)
    raw = _WORD.findall(truncated)
    t = [w.lower() for w in raw]
    table = _lcs_table(b, t)
    changed = [True] * len(t)
    i = j = 0
    while i < len(b) and j < len(t):
        if b[i] == t[j]:
            changed[j] = False
            i, j = i + 1, j + 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return list(zip(raw, changed, strict=True))
