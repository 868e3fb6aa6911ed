"""Notes about a question: what a first-time user should know before reading the answer.

Two kinds, each a sentence in Analysis.notes: words the model's tokenizer does not know (read as
its unknown token, so the answer cannot be about them), and a question outside the forms a model
says it answers. A model folder says the latter in a `flowtui.json` beside its config:

    {"questions": {"words": "<regex over the question's words>", "note": "<what to tell>"}}

where the question's words are lower-cased, with every character that is not a letter or digit
read as a space, joined by single spaces. The built-in toy ships one (flowtui.toy.questions);
the engine knows no model by name.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowtui.engine.errors import ModelLoadError

FILE = "flowtui.json"


def words_of(question: str) -> str:
    """The question as `flowtui.json`'s pattern sees it: lower case, alphanumeric words."""
    return " ".join("".join(c if c.isalnum() else " " for c in question.lower()).split())


@dataclass(frozen=True)
class QuestionForms:
    """The questions a model answers (a regex over `words_of(question)`) and the note to give
    for any other."""

    words: re.Pattern[str]
    note: str

    def accepts(self, question: str) -> bool:
        return self.words.fullmatch(words_of(question)) is not None

    @classmethod
    def read(cls, folder: str | Path) -> QuestionForms | None:
        """The forms a model folder declares in flowtui.json, None where it declares none.
        A file that is there but wrong is a ModelLoadError naming it."""
        path = Path(folder) / FILE
        if not path.is_file():
            return None
        try:
            spec: Any = json.loads(path.read_text(encoding="utf-8")).get("questions")
            if spec is None:
                return None
            return cls(re.compile(spec["words"]), str(spec["note"]))
        except (OSError, ValueError, TypeError, KeyError, AttributeError, re.error) as exc:
            raise ModelLoadError(f"{path} is not a valid flowtui.json ({type(exc).__name__}: "
                                 f"{exc}); fix or remove it") from None


def question_notes(tokenizer: Any, name: str, question: str,
                   forms: QuestionForms | None = None) -> list[str]:
    """The notes for `question` asked of model `name` (its tokenizer, its declared forms)."""
    notes = []
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None:
        unknown: list[str] = []
        for word in question.split():
            word = word.strip(string.punctuation) or word
            if word not in unknown and unk in tokenizer(word, add_special_tokens=False)["input_ids"]:
                unknown.append(word)
        if unknown:
            shown = ", ".join(repr(w) for w in unknown[:5]) + (" …" if len(unknown) > 5 else "")
            notes.append(f"{name}'s tokenizer does not know {shown} (read as "
                         f"{tokenizer.unk_token}): the answer cannot be about "
                         f"{'it' if len(unknown) == 1 else 'them'}")
    if forms is not None and not forms.accepts(question):
        notes.append(forms.note)
    return notes
