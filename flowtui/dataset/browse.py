"""What the results browser shows, without the UI: a run loaded read-only, its table rows, the
filter language and the sort keys (so they are testable with no Textual).

Filter: space-separated terms, all must hold.
  correct | wrong | error | ok          baseline scored 1 / below 1 / the sample failed / it did not
  hallucinated                           the baseline caption names an object the image lacks
                                         (--scoring chair runs)
  cliff=N cliff<N cliff<=N cliff>N cliff>=N cliff=none     the sample's cliff layer (truncate all)
  logp<X logp<=X logp>X logp>=X          the baseline answer's log-prob (K = L)
  any other word                         a case-insensitive substring of id, question, answers
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from flowtui.dataset import results
from flowtui.dataset.config import RunConfig
from flowtui.dataset.summary import DELTA, summarise
from flowtui.engine.errors import InputError

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le, ">=": operator.ge, "=": operator.eq, "<": operator.lt, ">": operator.gt,
}
_TERM = re.compile(r"^(cliff|logp)(<=|>=|=|<|>)(.+)$")

Predicate = Callable[[dict[str, Any]], bool]


def correct(rec: dict[str, Any]) -> bool | None:
    """Whether the baseline answer scored full marks; None for a failed sample."""
    if "error" in rec:
        return None
    return rec["baseline"]["score"] >= 1.0


def hallucinated(rec: dict[str, Any]) -> list[str]:
    """The phrases of the baseline caption that name objects the image lacks (runs scored with
    chair keep them per answer); [] for other runs and failed samples."""
    if "error" in rec:
        return []
    return [str(w) for w in (rec["baseline"].get("chair") or {}).get("words", [])]


def baseline_logprob(rec: dict[str, Any]) -> float | None:
    return None if "error" in rec else float(rec["baseline"]["logprob"])


def parse_filter(text: str) -> Predicate:
    """A predicate over records, or InputError naming the term it cannot read."""
    preds: list[Predicate] = []
    for term in text.split():
        low = term.lower()
        if low == "hallucinated":
            preds.append(lambda r: bool(hallucinated(r)))
            continue
        if low in ("correct", "wrong", "error", "ok"):
            preds.append({
                "correct": lambda r: correct(r) is True,
                "wrong": lambda r: correct(r) is False,
                "error": lambda r: "error" in r,
                "ok": lambda r: "error" not in r,
            }[low])
            continue
        m = _TERM.match(low)
        if m:
            field, op, value = m.groups()
            fn = _OPS[op]
            if field == "cliff" and value == "none":
                if op != "=":
                    raise InputError(f"filter {term!r}: only cliff=none compares with none")
                preds.append(lambda r: "error" not in r and r.get("cliff") is None)
                continue
            try:
                number = int(value) if field == "cliff" else float(value)
            except ValueError:
                raise InputError(f"filter {term!r}: {value!r} is not a number") from None
            if field == "cliff":
                # cast: mypy cannot infer a lambda whose defaults bind the loop's values
                preds.append(cast(Predicate, lambda r, fn=fn, n=number: "error" not in r
                             and r.get("cliff") is not None and fn(r["cliff"], n)))
            else:
                preds.append(cast(Predicate, lambda r, fn=fn, x=number: baseline_logprob(r)
                             is not None and fn(baseline_logprob(r), x)))
            continue
        if term.startswith(("cliff", "logp")):
            raise InputError(f"filter {term!r}: use cliff=N, cliff<N, logp<X, ...")
        preds.append(cast(Predicate, lambda r, t=low: t in _haystack(r)))
    return lambda r: all(p(r) for p in preds)


def _haystack(rec: dict[str, Any]) -> str:
    parts = [str(rec.get("id", "")), str(rec.get("question", "")), str(rec.get("reference", ""))]
    if "baseline" in rec:
        parts.append(rec["baseline"]["answer"])
    if "error" in rec:
        parts.append(rec["error"])
    return " ".join(parts).lower()


# Sort keys: failed samples and missing values go last whatever the direction.
SORTS: dict[str, Callable[[dict[str, Any]], tuple]] = {
    "index": lambda r: (0, r["index"]),
    "correct": lambda r: (correct(r) is None, correct(r) or False, r["index"]),
    "cliff": lambda r: (r.get("cliff") is None, r.get("cliff") or 0, r["index"]),
    "logp": lambda r: (baseline_logprob(r) is None, baseline_logprob(r) or 0.0, r["index"]),
}


@dataclass
class RunView:
    """A results folder opened read-only for browsing."""

    path: Path
    config: RunConfig
    summary: dict[str, Any]
    records: list[dict[str, Any]]
    _source: Any = field(default=None, repr=False)

    @classmethod
    def load(cls, path: Path, delta: float = DELTA) -> RunView:
        path = Path(path)
        raw = results.read_json(path / results.CONFIG) if path.is_dir() else None
        if raw is None:
            raise InputError(f"{path} holds no flowtui dataset run (no {results.CONFIG})")
        config = RunConfig.from_json(raw)
        records = results.load_records(path)
        prov = results.read_json(path / results.PROVENANCE) or {}
        rows = int(config.data.get("rows", len(records)))
        rows = rows if config.limit is None else min(rows, config.limit)
        records = [r for r in records if r["index"] < rows]
        # Computed, not read: the browser shows what the files hold now, even mid-run.
        summary = summarise(records, config.scoring, delta, rows=rows,
                            num_layers=(prov.get("model") or {}).get("num_layers"),
                            strategies=config.strategies)
        return cls(path, config, summary, records)

    def snapshot_path(self, rec: dict[str, Any]) -> Path | None:
        name = rec.get("snapshot")
        if not name:
            return None
        p = self.path / name
        return p if p.is_file() else None

    def sample_input(self, rec: dict[str, Any]) -> tuple[Any, str]:
        """(image, question as the run asked it) for analysing a sample again: the data file is
        reopened as the run's config describes it."""
        from flowtui.dataset.readers import open_dataset

        if self._source is None:  # opened once: a large Parquet file is not read per sample
            d = self.config.data
            cols = d.get("columns") or {}
            self._source = open_dataset(d["path"], d.get("format", "auto"), d.get("images"),
                                        cols.get("image"), cols.get("question"),
                                        cols.get("answer"), cols.get("id"), d.get("split"))
        row = self._source.row(int(rec["index"]))
        if row.error:
            raise InputError(f"sample {rec['id']}: {row.error}")
        return row.image, f"{row.question}{self.config.question_suffix}"
