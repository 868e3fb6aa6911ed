"""Curves from per-sample records: accuracy per strategy and K with 95% intervals, the baseline
accuracy, the dataset cliff (docs/definitions.md) and the histogram of per-sample cliffs.

Samples with an error are counted and left out of every accuracy (they have no answer to score).
Intervals: Wilson's score interval where every score is 0 or 1 (POPE, exact, choice, same); the
normal approximation with the sample variance, clipped to [0, 1], where scores are fractional
(vqa). Each point's interval is its own; the K's share their samples.

POPE's metrics, for the rules whose references are yes/no (`POPE_RULES`), with yes the positive
class, as the POPE paper defines them: precision = TP / (TP + FP), recall = TP / (TP + FN),
F1 their harmonic mean, yes-ratio = answers read as yes / answers. Each answer is read as the
rule reads it (`Rule.predict`); an answer read as neither yes nor no is not a yes: a false
negative on a yes label. A ratio with nothing to divide by is 0, as lmms-eval and scikit-learn
report it.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from flowtui.dataset.lens import lens_summary
from flowtui.dataset.scoring import RULES, LabelError
from flowtui.dataset.stats import Z95, wilson
from flowtui.engine.analysis import cliff_layer

SUMMARY_FORMAT = "flowtui.dataset.summary"
DELTA = 0.01


def interval(scores: np.ndarray) -> tuple[float, float]:
    """95% interval of the mean of `scores` in [0, 1] (see the module docstring)."""
    scores = np.asarray(scores, dtype=np.float64)
    n = scores.size
    if n == 0:
        return 0.0, 1.0
    if np.all((scores == 0) | (scores == 1)):
        return wilson(float(scores.sum()), n)
    mean = float(scores.mean())
    half = Z95 * float(scores.std(ddof=1)) / math.sqrt(n) if n > 1 else 1.0
    return max(0.0, mean - half), min(1.0, mean + half)


def dataset_cliff(accuracy: Sequence[float], baseline: float, delta: float = DELTA) -> int | None:
    """Smallest K such that accuracy(K') >= baseline - delta for every K' >= K."""
    acc = np.asarray(accuracy, dtype=np.float64)
    if acc.size == 0 or not np.isfinite(baseline):
        return None
    return cliff_layer(acc >= baseline - delta - 1e-12)


POPE_METRICS = ("precision", "recall", "f1", "yes_ratio")


def pope_metrics(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """POPE's precision, recall, F1 and yes-ratio (see the module docstring) of predictions
    (yes / no / other) against yes/no labels."""
    if len(predictions) != len(labels):
        raise ValueError("one prediction per label")
    tp = sum(p == "yes" and t == "yes" for p, t in zip(predictions, labels, strict=True))
    fp = sum(p == "yes" and t == "no" for p, t in zip(predictions, labels, strict=True))
    fn = sum(p != "yes" and t == "yes" for p, t in zip(predictions, labels, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    yes = sum(p == "yes" for p in predictions)
    return {"precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": yes / len(predictions) if predictions else 0.0}


def _pope_labels(records: list[dict[str, Any]], scoring: str) -> list[str] | None:
    """The yes/no labels of scored records under a pope-family rule; None for another rule (or a
    label the rule cannot read, which a scored record should not have)."""
    rule = RULES.get(scoring)
    if rule is None or rule.predict is None:
        return None
    try:
        return [rule.reference(r.get("reference")) for r in records]
    except LabelError:
        return None


def _strategy_names(records: list[dict[str, Any]], given: Sequence[str] | None) -> list[str]:
    if given:
        return list(given)
    names: list[str] = []
    for r in records:
        for name in r.get("strategies", {}):
            if name not in names:
                names.append(name)
    return names


def summarise(
    records: list[dict[str, Any]],
    scoring: str,
    delta: float = DELTA,
    rows: int | None = None,
    num_layers: int | None = None,
    strategies: Sequence[str] | None = None,
) -> dict[str, Any]:
    """summary.json's content from the records of a run (merged, one per sample)."""
    ok = [r for r in records if "error" not in r]
    errors = [r for r in records if "error" in r]
    if num_layers is None and ok:
        num_layers = len(ok[0]["strategies"]["all"]["scores"]) - 1
    names = _strategy_names(ok, strategies)
    base = np.array([r["baseline"]["score"] for r in ok], dtype=np.float64)
    base_acc = float(base.mean()) if base.size else float("nan")
    out: dict[str, Any] = {
        "format": SUMMARY_FORMAT,
        "version": 1,
        "num_layers": num_layers,
        "scoring": scoring,
        "delta": delta,
        "rows": rows if rows is not None else len(records),
        "samples": len(ok),
        "errors": len(errors),
        "errors_by_stage": dict(sorted(Counter(r.get("stage", "?") for r in errors).items())),
        "skipped": (rows - len(records)) if rows is not None else 0,
        # Samples whose analysis failed a self-check: their numbers may be wrong.
        "self_check_failures": sum(bool(r.get("self_check_failures")) for r in ok),
        "baseline_accuracy": base_acc if base.size else None,
        "baseline_ci95": list(interval(base)) if base.size else None,
        "dataset_cliff": None,
        "strategies": {},
    }
    labels = _pope_labels(ok, scoring)
    predict = RULES[scoring].predict if labels is not None else None
    if predict is not None and labels is not None and ok:
        base_pope = pope_metrics([predict(r["baseline"]["answer"]) for r in ok], labels)
        out.update({f"baseline_{m}": base_pope[m] for m in POPE_METRICS})
    if num_layers is None:
        return out
    L = int(num_layers)
    for name in names:
        have = [r["strategies"][name] for r in ok if name in r.get("strategies", {})]
        if not have:
            continue
        scores = np.array([s["scores"] for s in have], dtype=np.float64)
        logprob = np.array([s["logprob"] for s in have], dtype=np.float64)
        acc = scores.mean(axis=0)
        cliffs = Counter(s.get("cliff") for s in have)
        out["strategies"][name] = {
            "samples": len(have),
            "accuracy": [float(v) for v in acc],
            "ci95": [list(interval(scores[:, k])) for k in range(L + 1)],
            "mean_logprob": [float(v) for v in logprob.mean(axis=0)],
            "dataset_cliff": dataset_cliff(acc, base_acc, delta),
            "cliff_histogram": [int(cliffs.get(k, 0)) for k in range(L + 1)],
            "cliff_none": int(cliffs.get(None, 0)),
        }
        if predict is not None and labels is not None:
            mine = [lab for r, lab in zip(ok, labels, strict=True)
                    if name in r.get("strategies", {})]
            per_k = [pope_metrics([predict(s["answers"][k]) for s in have], mine)
                     for k in range(L + 1)]
            out["strategies"][name].update({m: [v[m] for v in per_k] for m in POPE_METRICS})
    if scoring == "chair":
        _chair_curves(out, ok, L, delta)
    if "all" in out["strategies"]:
        out["dataset_cliff"] = out["strategies"]["all"]["dataset_cliff"]
    lens = lens_summary(ok)
    if lens is not None:
        out["lens"] = lens
    return out


CHAIR_METRICS = ("chair_i", "chair_s", "recall")


def chair_cliff(chair_i: Sequence[float], baseline: float, delta: float = DELTA) -> int | None:
    """The dataset cliff for captions: smallest K such that CHAIR_i(K') <= baseline + delta for
    every K' >= K (docs/definitions.md, "CHAIR"); accuracy's rule with the inequality flipped,
    since fewer hallucinations are better."""
    h = np.asarray(chair_i, dtype=np.float64)
    if h.size == 0 or not np.isfinite(baseline):
        return None
    return cliff_layer(h <= baseline + delta + 1e-12)


def _chair_curves(out: dict[str, Any], ok: list[dict[str, Any]], L: int, delta: float) -> None:
    """CHAIR_i, CHAIR_s and recall (with 95% intervals) for the baseline and per strategy and
    K, from the counts each record keeps; the strategies' dataset cliffs become CHAIR_i's."""
    from flowtui.dataset.chair import chair_metrics

    have = [r for r in ok if "chair" in r["baseline"]]
    if not have:
        return
    base = chair_metrics([r["baseline"]["chair"] for r in have])
    out.update({f"baseline_{k}": v for k, v in base.items()})
    for name, s in out["strategies"].items():
        per_k = [chair_metrics([r["strategies"][name]["chair"][k] for r in have
                                if name in r.get("strategies", {})]) for k in range(L + 1)]
        for key in per_k[0]:
            s[key] = [m[key] for m in per_k]
        s["dataset_cliff"] = chair_cliff(s["chair_i"], base["chair_i"], delta)


def curves_csv(summary: dict[str, Any]) -> str:
    """One row per strategy and K: accuracy, its 95% interval, the mean baseline log-prob; for a
    pope-family rule also precision, recall, F1 and yes-ratio at K and the baseline's (the
    columns are there, empty, for other rules)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["strategy", "K", "accuracy", "ci95_low", "ci95_high", "mean_baseline_logprob",
                "samples", "baseline_accuracy", "dataset_cliff", *POPE_METRICS,
                *(f"baseline_{m}" for m in POPE_METRICS), *_CHAIR_COLUMNS,
                *(f"baseline_{m}" for m in _CHAIR_COLUMNS)])

    def num(v: float | None) -> str:
        return "" if v is None else f"{v:.6f}"

    pope = summary.get("baseline_f1") is not None
    base_pope = [num(summary.get(f"baseline_{m}")) if pope else "" for m in POPE_METRICS]
    chair = summary.get("baseline_chair_i") is not None
    no_chair = [""] * len(_CHAIR_COLUMNS)
    base_chair = _chair_cells({m: [summary.get(f"baseline_{m}")] for m in _CHAIR_KEYS}, 0) \
        if chair else no_chair
    for name, s in summary["strategies"].items():
        for k, acc in enumerate(s["accuracy"]):
            lo, hi = s["ci95"][k]
            w.writerow([name, k, f"{acc:.6f}", f"{lo:.6f}", f"{hi:.6f}",
                        f"{s['mean_logprob'][k]:.6f}", s["samples"],
                        f"{summary['baseline_accuracy']:.6f}", s["dataset_cliff"],
                        *(num(s[m][k]) if pope and m in s else "" for m in POPE_METRICS),
                        *base_pope,
                        *(_chair_cells(s, k) if chair else no_chair), *base_chair])
    return buf.getvalue()


# CHAIR's columns in curves.csv (empty for other rules): each metric and its interval.
_CHAIR_KEYS = tuple(k for m in CHAIR_METRICS for k in (m, f"{m}_ci95"))
# (recall is POPE's column already: CHAIR's is object_recall.)
_CHAIR_COLUMNS = tuple(c for m in ("chair_i", "chair_s", "object_recall")
                       for c in (m, f"{m}_ci95_low", f"{m}_ci95_high"))


def _chair_cells(s: dict[str, Any], k: int) -> list[Any]:
    cells: list[Any] = []
    for m in CHAIR_METRICS:
        v, ci = (s.get(m) or [None])[k], (s.get(f"{m}_ci95") or [None])[k]
        cells += [v, *(ci if ci is not None else (None, None))]
    return ["" if v is None else f"{v:.6f}" if isinstance(v, float) else str(v) for v in cells]


def format_table(summary: dict[str, Any], title: str = "") -> str:
    """The curves as a text table: one row per strategy, one column per K."""
    lines = []
    if title:
        lines.append(title)
    n, e = summary["samples"], summary["errors"]
    head = f"{n} samples scored with {summary['scoring']!r}, {e} error{'s' * (e != 1)}"
    if summary.get("skipped"):
        head += f", {summary['skipped']} not run yet"
    lines.append(head)
    if summary.get("self_check_failures"):
        lines.append(f"WARNING: {summary['self_check_failures']} samples failed a self-check; "
                     "their numbers may be wrong (see self_check_failures in their records)")
    if summary.get("scoring_rules", 2) < 2:
        lines.append(f"(scored with flowtui's first {summary['scoring']} rule, not the harness's: "
                     f"`flowtui dataset report RUN --scoring {summary['scoring']}` rescores it)")
    if not summary["strategies"]:
        lines.append("no scored samples: no curves")
        return "\n".join(lines)
    base = summary["baseline_accuracy"]
    lo, hi = summary["baseline_ci95"]
    lines.append(f"baseline accuracy (K = L, the unmodified model): {base:.3f} "
                 f"[95% {lo:.3f}-{hi:.3f}]")
    L = summary["num_layers"]
    pope = summary.get("baseline_f1") is not None
    # Room for "random:72 yes-ratio" where the POPE rows follow.
    width = max(9, *(len(n) + (11 if pope else 9 if summary.get("baseline_chair_i") is not None
                                   else 1) for n in summary["strategies"]))
    lines.append(f"{'K':<{width}}" + "".join(f"{k:>6}" for k in range(L + 1)))
    for name, s in summary["strategies"].items():
        lines.append(f"{name:<{width}}" + "".join(f"{v:6.2f}" for v in s["accuracy"]))
    cliffs = ", ".join(f"{name} {s['dataset_cliff']}" for name, s in summary["strategies"].items())
    on = "CHAIR_i" if summary.get("baseline_chair_i") is not None else "accuracy"
    lines.append(f"dataset cliff ({on} within {summary['delta']:g} of the baseline from K on): "
                 f"{cliffs}")
    if summary.get("baseline_chair_i") is not None:
        lines.append("CHAIR (hallucination, lower is better); baseline: " + ", ".join(
            f"{m} {summary[f'baseline_{m}']:.3f}" for m in CHAIR_METRICS))
        for name, s in summary["strategies"].items():
            for m in CHAIR_METRICS:
                label = f"{name} {m}"
                lines.append(f"{label:<{width}}" + "".join(f"{v:6.2f}" for v in s[m]))
    if pope:
        names = {"precision": "precision", "recall": "recall", "f1": "F1",
                 "yes_ratio": "yes-ratio"}
        lines.append("POPE, yes the positive class; baseline: " + ", ".join(
            f"{names[m]} {summary[f'baseline_{m}']:.3f}" for m in POPE_METRICS))
        for name, s in summary["strategies"].items():
            for m in POPE_METRICS:
                if m in s:
                    label = f"{name} {names[m]}"
                    lines.append(f"{label:<{width}}" + "".join(f"{v:6.2f}" for v in s[m]))
    return "\n".join(lines)
