"""PNG plots of a run with matplotlib (Agg; no display, no pyplot state): the paper's Fig. 5
(accuracy against K per strategy, the baseline as a line, the dataset cliff marked) and the
histogram of per-sample cliff layers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

COLOURS = ("#1f5fbf", "#d9480f", "#2b8a3e", "#862e9c", "#c92a2a", "#5c940d")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_accuracy(summary: dict[str, Any], path: Path, title: str = "") -> Path:
    """Accuracy against K per strategy with 95% bands; baseline dashed; dataset cliff marked."""
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    L = summary["num_layers"]
    ks = np.arange(L + 1)
    for i, (name, s) in enumerate(summary["strategies"].items()):
        colour = COLOURS[i % len(COLOURS)]
        ci = np.asarray(s["ci95"], dtype=float)
        ax.fill_between(ks, ci[:, 0], ci[:, 1], color=colour, alpha=0.15, linewidth=0)
        ax.plot(ks, s["accuracy"], marker="o", markersize=3.5, color=colour,
                label=f"truncate {name}")
    base = summary.get("baseline_accuracy")
    if base is not None:
        ax.axhline(base, color="0.35", linestyle="--", linewidth=1,
                   label=f"baseline {base:.3f}")
    cliff = summary.get("dataset_cliff")
    if cliff is not None:
        ax.axvline(cliff, color="#c92a2a", linestyle=":", linewidth=1.2,
                   label=f"dataset cliff K={cliff}")
    ax.set_xlabel("K: image tokens truncated from layer K on (K = L: unmodified)")
    ax.set_ylabel(f"accuracy ({summary['scoring']})")
    ax.set_xlim(-0.3, L + 0.3)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks(ks if L <= 16 else ks[:: max(1, L // 16)])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or f"{summary['samples']} samples", fontsize=10)
    fig.savefig(path)
    return Path(path)


def plot_cliffs(summary: dict[str, Any], path: Path, title: str = "") -> Path:
    """Histogram of per-sample cliff layers (strategy `all`), with a bar for 'none'."""
    fig = _figure(6.4, 3.2)
    ax = fig.add_subplot()
    L = summary["num_layers"]
    s = summary["strategies"].get("all", {"cliff_histogram": [0] * (L + 1), "cliff_none": 0})
    counts = list(s["cliff_histogram"])
    labels = [str(k) for k in range(L + 1)]
    if s.get("cliff_none"):
        counts.append(s["cliff_none"])
        labels.append("none")
    ax.bar(range(len(counts)), counts, color=COLOURS[0])
    ax.set_xticks(range(len(counts)), labels if len(counts) <= 34 else None)
    ax.set_xlabel("per-sample cliff layer (truncate all)")
    ax.set_ylabel("samples")
    cliff = summary.get("dataset_cliff")
    if cliff is not None:
        ax.axvline(cliff, color="#c92a2a", linestyle=":", linewidth=1.2,
                   label=f"dataset cliff K={cliff}")
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(title or "per-sample cliff layers", fontsize=10)
    fig.savefig(path)
    return Path(path)


def plot_chair(summary: dict[str, Any], path: Path, title: str = "") -> Path:
    """The paper's CHAIR panel: CHAIR_i and CHAIR_s against K per strategy with 95% bands,
    each baseline dashed, the dataset cliff (on CHAIR_i) marked; recall in a second panel."""
    fig = _figure(6.4, 5.2)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    L = summary["num_layers"]
    ks = np.arange(L + 1)
    styles = (("chair_i", "-", "o"), ("chair_s", "--", "s"))
    for i, (name, s) in enumerate(summary["strategies"].items()):
        colour = COLOURS[i % len(COLOURS)]
        for metric, line, marker in styles:
            ci = np.asarray(s[f"{metric}_ci95"], dtype=float)
            top.fill_between(ks, ci[:, 0], ci[:, 1], color=colour, alpha=0.12, linewidth=0)
            top.plot(ks, s[metric], linestyle=line, marker=marker, markersize=3.5, color=colour,
                     label=f"{metric.replace('chair_', 'CHAIR_')} ({name})")
        ci = np.asarray(s["recall_ci95"], dtype=float)
        bottom.fill_between(ks, ci[:, 0], ci[:, 1], color=colour, alpha=0.12, linewidth=0)
        bottom.plot(ks, s["recall"], marker="o", markersize=3, color=colour, label=f"recall ({name})")
    for metric, line, _ in styles:
        base = summary.get(f"baseline_{metric}")
        if base is not None:
            top.axhline(base, color="0.35", linestyle=line, linewidth=0.9,
                        label=f"baseline {metric.replace('chair_', 'CHAIR_')} {base:.3f}")
    if summary.get("baseline_recall") is not None:
        bottom.axhline(summary["baseline_recall"], color="0.35", linestyle="--", linewidth=0.9)
    cliff = summary.get("dataset_cliff")
    for ax in (top, bottom):
        if cliff is not None:
            ax.axvline(cliff, color="#c92a2a", linestyle=":", linewidth=1.2,
                       label=f"dataset cliff K={cliff}" if ax is top else None)
        ax.grid(alpha=0.3)
        ax.set_xlim(-0.3, L + 0.3)
        ax.set_ylim(-0.02, 1.02)
    top.set_ylabel("hallucination rate")
    bottom.set_ylabel("object recall")
    bottom.set_xlabel("K: image tokens truncated from layer K on (K = L: unmodified)")
    bottom.set_xticks(ks if L <= 16 else ks[:: max(1, L // 16)])
    top.legend(fontsize=7, loc="best")
    top.set_title(title or f"CHAIR, {summary['samples']} captions", fontsize=10)
    fig.savefig(path)
    return Path(path)
