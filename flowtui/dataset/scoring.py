"""Scoring rules: how a model's answer is judged against a sample's reference answer.

Harnesses differ in how they score the same answer, so the rule is named and recorded with every
result (DESIGN.md). Each rule checks a reference once (`reference`, which raises LabelError for a
label it cannot score) and then scores any answer against it (`score`, a float in [0, 1]).

- `pope`: the answer's first word is yes/no (lower-cased, punctuation stripped), as lmms-eval
  scores POPE; anything else is wrong.
- `pope-negation`: LLaVA's eval_pope.py, which the paper's POPE scripts use: keep the first
  sentence, drop commas, split on spaces; `No`, `no` or `not` among the words means no, anything
  else yes.
- `exact`: normalised exact match (lower case, punctuation and articles removed, whitespace
  collapsed) against the reference or any of a list of references.
- `vqa`: min(#references equal to the answer / 3, 1), with the VQA evaluation's normalisation
  (number words to digits, articles and punctuation removed).
- `choice`: the multiple-choice letter the answer gives (`B`, `(B)`, `B.`, `The answer is B`)
  against a letter, or a 0-based option index as ScienceQA stores it.
- `same`: agreement with the model's own baseline answer (the truncated greedy answer equals the
  baseline token for token); needs no labels.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class LabelError(ValueError):
    """A reference answer the rule cannot score (recorded as that sample's error)."""


_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = {"a", "an", "the"}
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
            "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}


def _words(text: str) -> list[str]:
    return _PUNCT.sub(" ", str(text).lower()).split()


def normalise_exact(text: str) -> str:
    """Lower case, punctuation to spaces, articles dropped, whitespace collapsed."""
    return " ".join(w for w in _words(text) if w not in _ARTICLES)


def normalise_vqa(text: str) -> str:
    """The VQA evaluation's normalisation, in short: lower case; a period inside a number stays
    (`1.5`), other punctuation goes; number words become digits; articles go."""
    text = str(text).lower().replace("\n", " ").replace("\t", " ").strip()
    text = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", text)
    text = re.sub(r"[^\w\s.]", " ", text.replace("'", ""))
    words = [_NUMBERS.get(w, w) for w in text.split()]
    return " ".join(w for w in words if w not in _ARTICLES)


def _as_list(reference: Any) -> list[str]:
    """A reference as a list of strings: a string, a list of strings, a list of VQA answer dicts
    ({"answer": ...}), or a JSON-encoded list (how a CSV cell holds one)."""
    if isinstance(reference, str):
        text = reference.strip()
        if text.startswith("["):
            try:
                reference = json.loads(text)
            except ValueError:
                return [reference]
        else:
            return [reference]
    if isinstance(reference, list | tuple):
        out = []
        for r in reference:
            if isinstance(r, dict) and "answer" in r:
                r = r["answer"]
            if r is None or isinstance(r, dict | list):
                raise LabelError(f"reference {r!r} is not a string")
            out.append(str(r))
        return out
    if isinstance(reference, int | float) and not isinstance(reference, bool):
        return [str(reference)]
    raise LabelError(f"reference {reference!r} is neither a string nor a list of strings")


def _yes_no(reference: Any) -> str:
    if isinstance(reference, bool):
        return "yes" if reference else "no"
    text = str(reference).strip().lower() if isinstance(reference, str) else None
    if text not in ("yes", "no"):
        raise LabelError(f"label {reference!r} is not yes or no")
    return text


def pope_prediction(answer: str) -> str:
    """yes / no / other: the first word of the answer, lower-cased, punctuation stripped."""
    words = _words(answer)
    return words[0] if words and words[0] in ("yes", "no") else "other"


def pope_negation_prediction(answer: str) -> str:
    """LLaVA's eval_pope.py: first sentence, commas dropped, `No`/`no`/`not` among the
    space-separated words -> no, anything else -> yes."""
    text = answer.split(".")[0] if "." in answer else answer
    words = text.replace(",", "").split(" ")
    return "no" if {"No", "no", "not"} & set(words) else "yes"


_LETTER_PAREN = re.compile(r"^\s*\(([A-Za-z])\)")
_LETTER_START = re.compile(r"^\s*([A-Z])(?:[).:,]|\s|$)")
_LETTER_SAID = re.compile(r"\b(?:answer|option|choice)\s*(?:is|:)?\s*\(?([A-Z])\b(?![a-z])",
                          re.IGNORECASE)


def choice_letter(answer: str) -> str | None:
    """The option letter an answer gives, or None: a leading `(b)` in any case, a leading
    capital `B`, `B.`, `B)` or `B ...` (so "A cat" reads as option A, as harnesses read it),
    else `answer is B` / `option (B)` anywhere."""
    m = _LETTER_PAREN.match(answer) or _LETTER_START.match(answer)
    if m:
        return m.group(1).upper()
    m = _LETTER_SAID.search(answer)
    return m.group(1).upper() if m else None


def _choice_reference(reference: Any) -> str:
    if isinstance(reference, int) and not isinstance(reference, bool):
        index = reference
    elif isinstance(reference, str) and reference.strip().isdigit():
        index = int(reference.strip())
    else:
        text = str(reference).strip().strip("()").strip() if isinstance(reference, str) else ""
        if len(text) == 1 and text.isalpha():
            return text.upper()
        raise LabelError(f"label {reference!r} is not an option letter or a 0-based index")
    if not 0 <= index < 26:
        raise LabelError(f"option index {index} is out of range A..Z")
    return chr(ord("A") + index)


@dataclass(frozen=True)
class Rule:
    """A named scoring rule. `reference` normalises a raw label (or raises LabelError);
    `score(answer, reference, same)` is in [0, 1]; `same` says the answer equals the baseline."""

    name: str
    summary: str
    needs_reference: bool
    _reference: Callable[[Any], Any]
    _score: Callable[[str, Any, bool], float]

    def reference(self, raw: Any) -> Any:
        if not self.needs_reference:
            return raw
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            raise LabelError("no reference answer")
        return self._reference(raw)

    def score(self, answer: str, reference: Any, same: bool = False) -> float:
        return float(self._score(answer, reference, same))


def _exact_reference(raw: Any) -> list[str]:
    refs = [normalise_exact(r) for r in _as_list(raw)]
    if not refs:
        raise LabelError("empty list of reference answers")
    return refs


def _vqa_reference(raw: Any) -> list[str]:
    refs = [normalise_vqa(r) for r in _as_list(raw)]
    if not refs:
        raise LabelError("empty list of reference answers")
    return refs


RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule("pope", "first word yes/no against a yes/no label (lmms-eval)", True, _yes_no,
             lambda a, ref, _s: pope_prediction(a) == ref),
        Rule("pope-negation", "no if the first sentence has No/no/not, else yes (LLaVA's "
             "eval_pope.py, the paper's scripts)", True, _yes_no,
             lambda a, ref, _s: pope_negation_prediction(a) == ref),
        Rule("exact", "normalised exact match against the reference (or any of a list)", True,
             _exact_reference, lambda a, refs, _s: normalise_exact(a) in refs),
        Rule("vqa", "min(#matching references / 3, 1), VQA normalisation", True,
             _vqa_reference,
             lambda a, refs, _s: min(sum(r == normalise_vqa(a) for r in refs) / 3.0, 1.0)),
        Rule("choice", "multiple-choice letter against a letter or a 0-based option index", True,
             _choice_reference, lambda a, ref, _s: choice_letter(a) == ref),
        Rule("same", "agreement with the model's own baseline answer (no labels needed)", False,
             lambda raw: raw, lambda _a, _ref, same: same),
    )
}


def get_rule(name: str) -> Rule:
    """The rule called `name`, or an InputError naming the known ones."""
    from flowtui.engine.errors import InputError

    if name not in RULES:
        raise InputError(f"unknown scoring rule {name!r}; choose one of: {', '.join(RULES)}")
    return RULES[name]
