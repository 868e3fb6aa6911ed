"""CHAIR (Rohrbach et al., 2018): object hallucination in captions, per caption and per run.

A vocabulary maps every phrase a caption may use for an object to that object (docs/
definitions.md, "CHAIR"). A caption's *mentions* are the vocabulary phrases it holds, read left
to right, longest phrase first ("hot dog" is a hot dog, not a dog), a phrase's last word also
matched in its plural ("two dogs", "teddy bears", "knives"), and a mention right after "no",
"not", "without" or "nor" (articles and "any" between them allowed) left out: "there is no
dog" mentions no dog. Every occurrence counts, as in CHAIR: "a dog and a dog" is two mentions.
A mention is *hallucinated* when its object is not among the image's objects.

    CHAIR_i = hallucinated mentions / mentions            (over all captions)
    CHAIR_s = captions with a hallucinated mention / captions
    recall  = image objects mentioned at least once / image objects

Vocabulary file format (`--vocabulary FILE`): one object per line, its synonyms after it, all
comma-separated (`dog, puppy, pup`); blank lines and lines starting with # are skipped. The
default is the standard COCO table (chair_synonyms.py).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowtui.dataset.labels import LabelError
from flowtui.dataset.stats import Z95, wilson
from flowtui.engine.errors import InputError

DEFAULT_VOCABULARY = "coco"  # how a config names the built-in table
_NEGATIONS = {"no", "not", "without", "nor"}
_SKIPPABLE = {"a", "an", "the", "any"}
_IRREGULAR = {"men": "man", "women": "woman", "children": "child", "people": "person",
              "mice": "mouse", "geese": "goose", "knives": "knife", "wives": "wife",
              "leaves": "leaf", "feet": "foot", "teeth": "tooth", "oxen": "ox", "dice": "die",
              "shelves": "shelf", "loaves": "loaf", "calves": "calf", "halves": "half"}
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lower-case words of a text (letters and digits; everything else separates)."""
    return _WORD.findall(str(text).lower())


def singular_forms(word: str) -> list[str]:
    """The word and the singulars it may be the plural of, most likely first."""
    out = [word]
    if word in _IRREGULAR:
        out.append(_IRREGULAR[word])
    if word.endswith("ies") and len(word) > 4:
        out.append(word[:-3] + "y")
    if word.endswith("es") and len(word) > 3:
        out.append(word[:-2])
    if word.endswith("s") and not word.endswith("ss") and len(word) > 2:
        out.append(word[:-1])
    return out


@dataclass
class Vocabulary:
    """Phrases (tuples of words) to the object they name; `objects` in file order."""

    objects: list[str] = field(default_factory=list)
    phrases: dict[tuple[str, ...], str] = field(default_factory=dict)
    not_objects: set[tuple[str, ...]] = field(default_factory=set)

    @property
    def longest(self) -> int:
        return max((len(p) for p in (*self.phrases, *self.not_objects)), default=1)

    @classmethod
    def parse(cls, text: str, source: str = "vocabulary",
              not_objects: Iterable[str] = ()) -> Vocabulary:
        vocab = cls(not_objects={tuple(words(p)) for p in not_objects})
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            names = [tuple(words(part)) for part in line.split(",")]
            if not names[0]:
                raise InputError(f"{source} line {n}: no object name before the first comma")
            obj = " ".join(names[0])
            if obj not in vocab.objects:
                vocab.objects.append(obj)
            for phrase in names:
                if not phrase:
                    continue
                other = vocab.phrases.get(phrase)
                if other is not None and other != obj:
                    raise InputError(f"{source} line {n}: {' '.join(phrase)!r} already names "
                                     f"{other!r}")
                vocab.phrases[phrase] = obj
        if not vocab.objects:
            raise InputError(f"{source} holds no objects (one object per line, synonyms after "
                             "it, comma-separated)")
        return vocab

    @classmethod
    def coco(cls) -> Vocabulary:
        from flowtui.dataset.chair_synonyms import COCO_NOT_OBJECTS, COCO_SYNONYMS

        return cls.parse(COCO_SYNONYMS, "the COCO synonym table", COCO_NOT_OBJECTS)

    @classmethod
    def read(cls, path: str | Path) -> Vocabulary:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read --vocabulary {p}: {exc}") from None
        return cls.parse(text, f"--vocabulary {p.name}")

    def _match(self, ws: Sequence[str], i: int) -> tuple[int, str | None]:
        """(length, object) of the longest phrase at ws[i] (object None for a not-object
        phrase); (0, None) where none starts there."""
        for n in range(min(self.longest, len(ws) - i), 0, -1):
            head = tuple(ws[i:i + n - 1])
            for last in singular_forms(ws[i + n - 1]):
                phrase = (*head, last)
                if phrase in self.not_objects:
                    return n, None
                if phrase in self.phrases:
                    return n, self.phrases[phrase]
        return 0, None

    def mentions(self, caption: str) -> list[tuple[str, str]]:
        """(object, phrase as written) for every mention in the caption, in order."""
        ws = words(caption)
        out, i = [], 0
        while i < len(ws):
            n, obj = self._match(ws, i)
            if n == 0:
                i += 1
                continue
            if obj is not None and not _negated(ws, i):
                out.append((obj, " ".join(ws[i:i + n])))
            i += n
        return out

    def canonical(self, name: str) -> str:
        """The object a reference name stands for (a synonym or a plural allowed)."""
        ws = words(name)
        n, obj = self._match(ws, 0) if ws else (0, None)
        if obj is None or n != len(ws):
            raise LabelError(f"object {name!r} is not in the vocabulary")
        return obj


def _negated(ws: Sequence[str], i: int) -> bool:
    j = i - 1
    while j >= 0 and ws[j] in _SKIPPABLE and i - j <= 2:
        j -= 1
    return j >= 0 and ws[j] in _NEGATIONS


def object_list(raw: Any) -> list[str]:
    """A reference list of objects: a list of names, a JSON-encoded list, or a comma-separated
    string (how a CSV cell holds one)."""
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("["):
            try:
                raw = json.loads(text)
            except ValueError:
                raise LabelError(f"objects {raw!r} is not a JSON list") from None
        else:
            return [p.strip() for p in text.split(",") if p.strip()]
    if isinstance(raw, list | tuple):
        if not all(isinstance(x, str) for x in raw):
            raise LabelError(f"objects {raw!r} is not a list of names")
        return [x for x in raw if x.strip()]
    raise LabelError(f"objects {raw!r} is neither a list of names nor a string")


def caption_counts(vocab: Vocabulary, caption: str, objects: Sequence[str]) -> dict[str, Any]:
    """One caption against its image's (canonical) objects: mentions, hallucinated mentions
    (with the words), image objects and the image objects mentioned."""
    truth = set(objects)
    found = vocab.mentions(caption)
    wrong = [phrase for obj, phrase in found if obj not in truth]
    return {"mentions": len(found), "hallucinated": len(wrong), "words": wrong,
            "objects": len(truth), "covered": len(truth & {obj for obj, _ in found})}



def ratio_interval(num: Sequence[float], den: Sequence[float]) -> tuple[float, float]:
    """95% interval of sum(num) / sum(den) with captions as the units (a caption's mentions are
    not independent): the ratio estimator's delta-method interval, clipped to [0, 1]."""
    n = len(num)
    total = float(sum(den))
    if n == 0 or total == 0:
        return 0.0, 1.0
    r = float(sum(num)) / total
    if n == 1:
        return 0.0, 1.0
    mean_den = total / n
    resid = [a - r * b for a, b in zip(num, den, strict=True)]
    se = math.sqrt(sum(e * e for e in resid) / (n * (n - 1))) / mean_den
    return max(0.0, r - Z95 * se), min(1.0, r + Z95 * se)


def chair_metrics(counts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """CHAIR_i, CHAIR_s and recall of a set of captions, each with its 95% interval (CHAIR_s:
    Wilson over captions; the other two: ratio_interval)."""
    m = [c["mentions"] for c in counts]
    h = [c["hallucinated"] for c in counts]
    g = [c["objects"] for c in counts]
    cov = [c["covered"] for c in counts]
    bad = sum(x > 0 for x in h)
    return {
        "chair_i": sum(h) / sum(m) if sum(m) else 0.0,
        "chair_i_ci95": list(ratio_interval(h, m)),
        "chair_s": bad / len(counts) if counts else 0.0,
        "chair_s_ci95": list(wilson(bad, len(counts))),
        "recall": sum(cov) / sum(g) if sum(g) else 0.0,
        "recall_ci95": list(ratio_interval(cov, g)),
    }


def coco_objects(path: str | Path) -> dict[str, list[str]]:
    """COCO instance annotations (instances_val2014.json): each image's file name (and its
    numeric id, as a string) to the names of the categories annotated in it."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        names = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        by_id: dict[int, set[str]] = {int(im["id"]): set() for im in data["images"]}
        files = {int(im["id"]): str(im["file_name"]) for im in data["images"]}
        for a in data["annotations"]:
            by_id.setdefault(int(a["image_id"]), set()).add(names[int(a["category_id"])])
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read --coco-instances {p}: {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"--coco-instances {p.name} is not COCO instance annotations "
                         f"({type(exc).__name__}: {exc})") from None
    out: dict[str, list[str]] = {}
    for imid, objs in by_id.items():
        out[str(imid)] = sorted(objs)
        if imid in files:
            out[files[imid]] = sorted(objs)
    return out


def settings(source: Any, vocabulary: str | None, coco_instances: str | None) -> dict[str, Any]:
    """The chair part of a run's config, checking the files now (one-line InputErrors); with
    --coco-instances the rows' references come from the annotations (source.object_table)."""
    from flowtui.dataset.readers import file_sha256

    out: dict[str, Any] = {"vocabulary": None, "objects": source.columns.answer}
    if vocabulary is not None:
        path = Path(vocabulary).expanduser().resolve()
        Vocabulary.read(path)  # a bad file fails here, before any model time
        out.update(vocabulary=str(path), vocabulary_sha256=file_sha256(path))
    if coco_instances is not None:
        path = Path(coco_instances).expanduser().resolve()
        source.object_table = coco_objects(path)
        out.update(objects=None, coco_instances=str(path), coco_sha256=file_sha256(path))
    return out
