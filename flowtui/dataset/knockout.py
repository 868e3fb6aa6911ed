"""Attention knockout over a dataset (docs/definitions.md, "Knockout positions and flows"):
per sample the relative change of the first answer token's probability for each flow and
window, and over the run its mean per flow and layer with a 95% interval, as in Zhang, Yadav,
Han & Shutova (CVPR 2025), Fig. 2-style curves.

The interval is the normal one for a mean, mean ± 1.96·s/√n (s the sample standard deviation);
a single sample gives a zero-width interval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from flowtui.engine.interface import Engine
from flowtui.engine.knockout_flows import parse_flows

PLOT = "knockout.png"
Z95 = 1.959963984540054


def settings(flows: str | None, window: int | None) -> dict[str, Any] | None:
    """The run's knockout settings (stored in config.json's `extra`), checked; None: none."""
    from flowtui.engine.errors import InputError

    if flows is None:
        if window is not None:
            raise InputError("--window: only with --knockout FLOWS")
        return None
    return {"flows": [f.name for f in parse_flows(flows)], "window": window}


def record(engine: Engine, analysis, spec: dict[str, Any]) -> dict[str, Any]:
    """One sample's knockout: rel_change [F][L], first_prob, the answer's log-prob."""
    k = engine.knockout(analysis, spec["flows"], window=spec.get("window"))
    return {"window": k.window, "baseline_first_prob": k.baseline_first_prob,
            "rel_change": k.rel_change.astype(float).tolist(),
            "logprob": k.logprob.astype(float).tolist()}


def summarise(records: list[dict[str, Any]], spec: dict[str, Any]) -> dict[str, Any]:
    """Per flow: `rel_change` [L] (mean over samples) and `ci95` [L][2], with the count."""
    rows = [r["knockout"] for r in records if "error" not in r and "knockout" in r]
    out: dict[str, Any] = {"flows": list(spec["flows"]), "samples": len(rows),
                           "window": rows[0]["window"] if rows else spec.get("window")}
    if not rows:
        return out
    rel = np.asarray([r["rel_change"] for r in rows], dtype=np.float64)  # [n, F, L]
    n = rel.shape[0]
    mean = rel.mean(axis=0)
    half = (Z95 * rel.std(axis=0, ddof=1) / np.sqrt(n)) if n > 1 else np.zeros_like(mean)
    for f, name in enumerate(spec["flows"]):
        out[name] = {"rel_change": [round(float(v), 4) for v in mean[f]],
                     "ci95": [[round(float(lo), 4), round(float(hi), 4)]
                              for lo, hi in zip(mean[f] - half[f], mean[f] + half[f],
                                                strict=True)]}
    out["baseline_first_prob"] = float(np.mean([r["baseline_first_prob"] for r in rows]))
    return out


def plot(summary: dict[str, Any], path: Path, title: str = "") -> Path:
    """One curve per flow over layers (mean relative change, 95% band), as the paper draws."""
    from flowtui.dataset.plots import COLOURS, _figure

    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    for i, name in enumerate(summary["flows"]):
        s = summary.get(name)
        if s is None:
            continue
        colour = COLOURS[i % len(COLOURS)]
        ls = np.arange(len(s["rel_change"]))
        ci = np.asarray(s["ci95"], dtype=float)
        ax.fill_between(ls, ci[:, 0], ci[:, 1], color=colour, alpha=0.15, linewidth=0)
        ax.plot(ls, s["rel_change"], marker="o", markersize=3, color=colour, label=name)
    ax.axhline(0, color="0.35", linestyle="--", linewidth=1)
    ax.set_xlabel(f"layer (window of {summary.get('window')} centred on it)")
    ax.set_ylabel("relative change of p(first answer token), %")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.savefig(path)
    return path
