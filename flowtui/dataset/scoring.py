"""Scoring rules: how a model's answer is judged against a sample's reference answer.

Harnesses differ in how they score the same answer, so the rule is named and recorded with every
result (docs/definitions.md, "Scoring rules"), and each rule is exactly the rule of the harness
it names. Each rule checks a reference once (`reference`, which raises LabelError for a label it
cannot score) and then scores any answer against it (`score`, a float in [0, 1]).

- `pope`: lmms-eval's POPE rule (tasks/pope/utils.py): the whole answer, lower-cased and stripped
  of surrounding whitespace, equals the label (`yes`/`no`); nothing else is stripped, so `Yes.`
  and `No, there is not.` are wrong.
- `pope-first-word`: flowtui's own lenient rule: the answer's first word (lower-cased,
  punctuation removed) equals the label; anything else is wrong.
- `pope-negation`: LLaVA's eval_pope.py, which the paper's POPE scripts use: keep the first
  sentence, drop commas, split on spaces; `No`, `no` or `not` among the words means no, anything
  else yes.
- `exact`: normalised exact match (lower case, punctuation and articles removed, whitespace
  collapsed) against the reference or any of a list of references.
- `vqa`: the official VQA accuracy as lmms-eval's vqav2 task computes it (EvalAI's answer
  processor and the VQA evaluation's leave-one-out average); see `vqa_accuracy`.
- `choice`: the multiple-choice letter the answer gives (`B`, `(B)`, `B.`, `The answer is B`)
  against a letter, or a 0-based option index as ScienceQA stores it.
- `chair`: for captions: 1 where the caption mentions no object the image lacks (chair.py;
  the run also keeps every caption's CHAIR counts, from which CHAIR_i, CHAIR_s and recall follow);
  the reference is the image's list of objects.
- `same`: agreement with the model's own baseline answer (the truncated greedy answer equals the
  baseline token for token); needs no labels.

The pope-family rules (`pope`, `pope-first-word`, `pope-negation`) also read an answer as yes, no
or neither (`Rule.predict`), from which POPE's precision, recall, F1 and yes-ratio follow.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flowtui.dataset.labels import LabelError, ScoringError, UnknownRuleError

__all__ = ["LabelError", "ScoringError", "UnknownRuleError", "RULES", "Rule", "get_rule", "score"]


_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = {"a", "an", "the"}


def _words(text: str) -> list[str]:
    return _PUNCT.sub(" ", str(text).lower()).split()


def normalise_exact(text: str) -> str:
    """Lower case, punctuation to spaces, articles dropped, whitespace collapsed."""
    return " ".join(w for w in _words(text) if w not in _ARTICLES)


# --- the VQA evaluation's answer processor (EvalAI / VQA's vqaEval.py) ---------------------
# The tables are the official ones; the evaluation maps a word only when it is a whole word.
_VQA_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    # sic: the official table maps this one backwards; kept, since it is the official table.
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}
_VQA_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_VQA_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
              "@", "`", ",", "?", "!")
# The official pattern is "(?!<=\d)(\.)(?!\d)": its first group is a lookahead (not a
# lookbehind) that can never match at a period, so it strips every period not followed by a
# digit. Its call passes re.UNICODE where `count` goes: at most 32 periods go.
_VQA_PERIOD = re.compile(r"\.(?!\d)")
_VQA_PERIOD_COUNT = int(re.UNICODE)
_VQA_COMMA = re.compile(r"(?<=\d)(,)+(?=\d)")


def vqa_process_punctuation(text: str) -> str:
    """The evaluation's processPunctuation: each punctuation mark is deleted where it touches a
    space (or the text has a comma between digits), else replaced by a space; then periods not
    followed by a digit are deleted."""
    out = text
    glued = _VQA_COMMA.search(text) is not None
    for p in _VQA_PUNCT:
        # Decided on the input text, as the official code does, not on the text so far.
        out = out.replace(p, "" if (p + " " in text or " " + p in text or glued) else " ")
    return _VQA_PERIOD.sub("", out, count=_VQA_PERIOD_COUNT)


def vqa_process_digit_article(text: str) -> str:
    """The evaluation's processDigitArticle: lower case, number words zero..ten (and none) to
    digits, articles dropped, then the contractions table."""
    words = [_VQA_NUMBERS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in _ARTICLES]
    return " ".join(_VQA_CONTRACTIONS.get(w, w) for w in words)


def normalise_vqa(text: str) -> str:
    """EvalAI's answer processor (what lmms-eval applies to a prediction): lower case, commas
    and question marks removed, `'s` split off, newlines and tabs to spaces, then punctuation,
    number words, articles and contractions as above."""
    text = str(text).lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return vqa_process_digit_article(vqa_process_punctuation(text))


def _vqa_strip(text: str) -> str:
    return str(text).replace("\n", " ").replace("\t", " ").strip()


def vqa_accuracy(answer: str, references: Sequence[str]) -> float:
    """The official VQA accuracy, as lmms-eval's vqav2 task computes it.

    The answer goes through EvalAI's processor (`normalise_vqa`). The references are stripped
    of surrounding whitespace and, only where they are not all the same (as the official code
    does), go through processPunctuation and processDigitArticle, and so does the answer again.
    Then for each reference, the others are the leave-one-out subset: acc = min(1, #others equal
    to the answer / 3), and the score is the mean over the references. With the usual ten
    references, 3 matching give 0.9 and 1 gives 0.3. With fewer than ten the same leave-one-out
    mean runs over the references given (with one there are no others: the rule refuses a
    single reference, see `_vqa_reference`).
    """
    refs = [_vqa_strip(r) for r in references]
    res = normalise_vqa(answer)
    if len(set(refs)) > 1:
        refs = [vqa_process_digit_article(vqa_process_punctuation(r)) for r in refs]
        res = vqa_process_digit_article(vqa_process_punctuation(res))
    matches = sum(r == res for r in refs)
    # Leaving reference i out leaves `matches` minus one if it matched itself, else `matches`.
    accs = [min(1.0, (matches - (r == res)) / 3.0) for r in refs]
    return sum(accs) / len(accs)


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
    """A POPE label: yes or no in any case with surrounding whitespace (lmms-eval lower-cases
    and strips it), or a boolean."""
    if isinstance(reference, bool):
        return "yes" if reference else "no"
    text = str(reference).strip().lower() if isinstance(reference, str) else None
    if text not in ("yes", "no"):
        raise LabelError(f"label {reference!r} is not yes or no")
    return text


def pope_prediction(answer: str) -> str:
    """lmms-eval: yes / no when the whole answer, lower-cased and stripped of surrounding
    whitespace, is exactly that word; else other."""
    text = str(answer).lower().strip()
    return text if text in ("yes", "no") else "other"


def pope_first_word_prediction(answer: str) -> str:
    """flowtui's lenient reading: the first word of the answer, lower-cased, punctuation
    removed, if it is yes or no; else other."""
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
    `score(answer, reference, same)` is in [0, 1]; `same` says the answer equals the baseline.
    Pope-family rules have `predict`: an answer read as yes, no or other."""

    name: str
    summary: str
    needs_reference: bool
    _reference: Callable[[Any], Any]
    _score: Callable[[str, Any, bool], float]
    predict: Callable[[str], str] | None = None
    # Rules that count more than a score (chair): measure(answer, reference) -> the counts a
    # record keeps per answer.
    measure: Callable[[str, Any], dict[str, Any]] | None = None

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
    refs = _as_list(raw)
    if not refs:
        raise LabelError("empty list of reference answers")
    if len(refs) < 2:
        # Leave-one-out over one reference leaves none: every answer would score 0.
        raise LabelError("vqa needs at least 2 reference answers (its accuracy leaves one out); "
                         "score a single reference with exact")
    return refs


def _pope_rule(name: str, summary: str, predict: Callable[[str], str]) -> Rule:
    return Rule(name, summary, True, _yes_no, lambda a, ref, _s: predict(a) == ref, predict)


def chair_rule(vocabulary: Any = None) -> Rule:
    """The chair rule over `vocabulary` (a chair.Vocabulary; default COCO's synonym table)."""
    vocab = vocabulary

    def get() -> Any:
        nonlocal vocab
        if vocab is None:  # parsed on first use: importing the rules stays cheap
            from flowtui.dataset.chair import Vocabulary

            vocab = Vocabulary.coco()
        return vocab

    def reference(raw: Any) -> list[str]:
        from flowtui.dataset.chair import object_list

        return sorted({get().canonical(o) for o in object_list(raw)})

    def measure(answer: str, ref: Any) -> dict[str, Any]:
        from flowtui.dataset.chair import caption_counts

        return caption_counts(get(), answer, ref)

    return Rule("chair", "captions: 1 where the caption mentions no object the image lacks "
                "(CHAIR; the references are each image's objects, --objects-column or "
                "--coco-instances, read through --vocabulary, default COCO's synonym table); "
                "CHAIR_i, CHAIR_s and recall per K in the summary", True, reference,
                lambda a, ref, _s: float(measure(a, ref)["hallucinated"] == 0), None, measure)


RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        _pope_rule("pope", "lmms-eval's POPE rule: the whole answer, lower-cased and stripped of "
                   "surrounding whitespace, equals the yes/no label (so 'Yes.' is wrong)",
                   pope_prediction),
        _pope_rule("pope-first-word", "flowtui's own lenient rule: the answer's first word, "
                   "lower-cased and without punctuation, equals the yes/no label ('Yes.' is "
                   "right)", pope_first_word_prediction),
        _pope_rule("pope-negation", "LLaVA's eval_pope.py (the paper's scripts): no if the "
                   "first sentence, commas dropped, has the word No, no or not, else yes; "
                   "against the yes/no label", pope_negation_prediction),
        Rule("exact", "normalised exact match (lower case, punctuation and articles removed) "
             "against the reference or any of a list", True, _exact_reference,
             lambda a, refs, _s: normalise_exact(a) in refs),
        Rule("vqa", "the official VQA accuracy (lmms-eval's vqav2): EvalAI's answer processor, "
             "then the mean over the leave-one-out subsets of the references (at least 2) of "
             "min(#matches / 3, 1)", True, _vqa_reference,
             lambda a, refs, _s: vqa_accuracy(a, refs)),
        Rule("choice", "multiple-choice letter against a letter or a 0-based option index", True,
             _choice_reference, lambda a, ref, _s: choice_letter(a) == ref),
        chair_rule(),
        Rule("same", "agreement with the model's own baseline answer, token for token (no "
             "labels needed)", False, lambda raw: raw, lambda _a, _ref, same: same),
    )
}

# Rules whose references are yes/no: POPE's precision, recall, F1 and yes-ratio apply.
POPE_RULES = tuple(name for name, r in RULES.items() if r.predict is not None)


def get_rule(name: str) -> Rule:
    """The rule called `name`, or an InputError naming the known ones."""
    from flowtui.engine.errors import InputError

    if name not in RULES:
        raise InputError(_unknown(name))
    return RULES[name]


def _unknown(name: str) -> str:
    return f"unknown scoring rule {name!r}; choose one of: {', '.join(RULES)}"


def score(rule: str, answer: str, reference: Any) -> float:
    """Score `answer` against `reference` under the rule called `rule`, in [0, 1].

    Raises UnknownRuleError for a rule that does not exist and LabelError for a reference the
    rule cannot score (both ScoringError, a ValueError). For `same`, `reference` is the baseline
    answer and the score is text equality (a run compares tokens)."""
    if rule not in RULES:
        raise UnknownRuleError(_unknown(rule))
    r = RULES[rule]
    if not r.needs_reference:
        if not isinstance(reference, str):
            raise LabelError(f"same compares with the baseline answer, a string, not {reference!r}")
        return r.score(answer, reference, str(answer) == reference)
    return r.score(str(answer), r.reference(reference))
