"""Curves from per-sample records: accuracy per strategy and K with 95% intervals, the baseline
accuracy, the dataset cliff (DESIGN.md) and the histogram of per-sample cliffs.

Samples with an error are counted and left out of every accuracy (they have no answer to score).
Intervals: Wilson's score interval where every score is 0 or 1 (POPE, exact, choice, same); the
normal approximation with the sample variance, clipped to [0, 1], where scores are fractional
(vqa). Each point's interval is its own; the K's share their samples.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from flowtui.engine.analysis import cliff_layer

SUMMARY_FORMAT = "flowtui.dataset.summary"
DELTA = 0.01
Z95 = 1.959963984540054


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion (0 successes of 0 gives (0, 1))."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


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
        "baseline_accuracy": base_acc if base.size else None,
        "baseline_ci95": list(interval(base)) if base.size else None,
        "dataset_cliff": None,
        "strategies": {},
    }
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
    if "all" in out["strategies"]:
        out["dataset_cliff"] = out["strategies"]["all"]["dataset_cliff"]
    return out


def curves_csv(summary: dict[str, Any]) -> str:
    """One row per strategy and K: accuracy, its 95% interval, the mean baseline log-prob."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["strategy", "K", "accuracy", "ci95_low", "ci95_high", "mean_baseline_logprob",
                "samples", "baseline_accuracy", "dataset_cliff"])
    for name, s in summary["strategies"].items():
        for k, acc in enumerate(s["accuracy"]):
            lo, hi = s["ci95"][k]
            w.writerow([name, k, f"{acc:.6f}", f"{lo:.6f}", f"{hi:.6f}",
                        f"{s['mean_logprob'][k]:.6f}", s["samples"],
                        f"{summary['baseline_accuracy']:.6f}", s["dataset_cliff"]])
    return buf.getvalue()


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
    if not summary["strategies"]:
        lines.append("no scored samples: no curves")
        return "\n".join(lines)
    base = summary["baseline_accuracy"]
    lo, hi = summary["baseline_ci95"]
    lines.append(f"baseline accuracy (K = L, the unmodified model): {base:.3f} "
                 f"[95% {lo:.3f}-{hi:.3f}]")
    L = summary["num_layers"]
    width = max(9, *(len(n) + 1 for n in summary["strategies"]))
    lines.append(f"{'K':<{width}}" + "".join(f"{k:>6}" for k in range(L + 1)))
    for name, s in summary["strategies"].items():
        lines.append(f"{name:<{width}}" + "".join(f"{v:6.2f}" for v in s["accuracy"]))
    cliffs = ", ".join(f"{name} {s['dataset_cliff']}" for name, s in summary["strategies"].items())
    lines.append(f"dataset cliff (accuracy within {summary['delta']:g} of the baseline from K on): "
                 f"{cliffs}")
    return "\n".join(lines)
