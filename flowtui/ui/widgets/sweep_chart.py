"""The truncation panel's texts: one line per run of this session, and the sweep K = 0..L as a
chart (log p of the baseline answer on a fixed scale, same/different, the cliff layer)."""

from __future__ import annotations

import numpy as np
from rich.style import Style
from rich.text import Text

from flowtui.engine.analysis import Analysis, TruncationRun
from flowtui.engine.overlap import token_overlap, word_changes, words
from flowtui.render.sparkline import BLOCKS, spark_rows
from flowtui.textsafe import visible
from flowtui.ui.widgets.answer_panel import first_fit
from flowtui.ui.widgets.flow_panel import axis_text, layer_columns

LABEL_WIDTH = 7
# The sweep's log p is drawn from 0 nats (certain) down to the first of these that holds the
# lowest value: one fixed ladder, so two analyses with the same printed scale compare directly.
LOGP_SCALES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def quoted(text: str) -> str:
    """An answer in quotes, with control characters and escape sequences made visible."""
    return f"'{visible(text)}'"


def many_words(answer: str) -> bool:
    """Whether an answer has more than one word (punctuation aside): only then is "how much
    of it survived" more than same/different."""
    return sum(w[0].isalnum() for w in words(answer)) > 1


def changed_words(baseline: str, truncated: str) -> Text:
    """The truncated answer with the words that differ from the baseline marked (bold red,
    underlined), and the token overlap (docs/definitions.md, "Token overlap")."""
    text = Text()
    for i, (word, changed) in enumerate(word_changes(baseline, truncated)):
        if i and word[0].isalnum():
            text.append(" ")
        text.append(visible(word), Style(color="red", bold=True, underline=True) if changed
                    else "")
    if not text.plain:
        text.append("∅", "dim")
    text.append(f"  kept {100 * token_overlap(baseline, truncated):.0f}%", "dim")
    return text


def run_line(run: TruncationRun, baseline: float) -> Text:
    strat = run.strategy if run.keep is None or run.strategy == "all" else f"{run.strategy}-{run.keep}"
    delta = run.baseline_logprob - baseline
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(f"K={run.layer:<3}", "bold")
    line.append(f"{strat:<10}", "dim")
    line.append("✓ " if run.same else "✗ ", "green" if run.same else "bold red")
    line.append(f"{quoted(run.answer):<10} ")
    line.append(f"{run.baseline_logprob:+.2f} ", "dim")
    line.append(f"(Δ{delta:+.2f})", "red" if delta < -0.5 else "dim")
    return line


def sweep_overlap(a: Analysis) -> np.ndarray | None:
    """Token overlap of each K's answer with the baseline [L+1], where the sweep kept its
    answers and the baseline has many words; None otherwise."""
    if a.sweep_answers is None or not many_words(a.answer):
        return None
    return np.array([token_overlap(a.answer, ans) for ans in a.sweep_answers])


def logp_scale(lowest: float) -> float:
    """The bottom of the sweep chart in nats: minus the first LOGP_SCALES step that holds
    `lowest` (the chart's top is always 0 nats)."""
    need = max(0.0, -float(lowest)) if np.isfinite(lowest) else LOGP_SCALES[-1]
    return -float(next((s for s in LOGP_SCALES if s >= need - 1e-9), LOGP_SCALES[-1]))


def sweep_text(a: Analysis, width: int, current: int) -> Text:
    """The sweep over K = 0..L: log p of the baseline answer on a fixed scale (0 nats at the
    top, the printed LOGP_SCALES step at the bottom), same/different, the cliff."""
    lp = np.minimum(np.asarray(a.sweep_logprob, dtype=np.float64), 0.0)
    same = np.asarray(a.sweep_same, dtype=bool)
    n = len(lp)
    cw = layer_columns(n, width - LABEL_WIDTH - 9)
    bottom = logp_scale(float(np.nanmin(lp)) if n else 0.0)
    rows = spark_rows(lp, bottom, 0.0, 2)
    out = Text(no_wrap=True, overflow="crop")
    for r, levels in enumerate(rows):
        out.append(f"{'log p' if r == 0 else '':<{LABEL_WIDTH}}", "dim")
        for k, level in enumerate(levels):
            if r == len(rows) - 1:
                level = max(1, level)  # every K shows at least a sliver
            style = Style(color="#3d8fe0", bgcolor="grey30" if k == current else None)
            out.append(BLOCKS[level] * cw, style)
        out.append(f" {'0' if r == 0 else f'{bottom:g}'.replace('-', '−')}", "dim")
        out.append("\n")
    out.append(f"{'answer':<{LABEL_WIDTH}}", "dim")
    for k in range(n):
        out.append(("●" if same[k] else "✗").ljust(cw), "green" if same[k] else "bold red")
    out.append("\n")
    kept = sweep_overlap(a)
    if kept is not None:  # how much of a many-word answer survived at each K
        out.append(f"{'kept':<{LABEL_WIDTH}}", "dim")
        for k, level in enumerate(spark_rows(kept, 0.0, 1.0, 1)[0]):
            level = max(level, 1) if kept[k] > 0 else 0  # any word kept shows a sliver
            style = Style(color="#2ec27e", bgcolor="grey30" if k == current else None)
            out.append((BLOCKS[level] * cw) if level else "·".ljust(cw), style)
        out.append(f" {100 * kept[min(current, n - 1)]:.0f}%", "dim")
        out.append("\n")
    out.append(f"{'K':<{LABEL_WIDTH}}", "dim")
    marks = {a.cliff_layer: "▲"} if a.cliff_layer is not None else {}
    out.append_text(axis_text(n, cw, current, marks))
    out.append("\n")
    if kept is not None:
        out.append_text(first_fit([
            Text("kept: share of the baseline's words the answer at K keeps (token overlap)",
                 "dim"),
            Text("kept: token overlap with the baseline", "dim"), Text("kept: overlap", "dim")],
            width))
        out.append("\n")
    if a.cliff_layer is not None:
        out.append("cliff layer ", "bold")
        out.append(str(a.cliff_layer), "bold red")
        out.append(" · ● same as baseline ✗ differs", "dim")
    else:
        out.append("no cliff: the answer differs at K = L", "dim")
    k_lo = int(np.nanargmin(lp)) if n else 0
    scale = f"scale 0 to {bottom:g} nats".replace("-", "−")
    lowest = f"lowest {lp[k_lo]:+.2f} at K={k_lo}".replace("-", "−")
    out.append("\n")
    out.append_text(first_fit([
        Text(f"log p of the baseline answer · {scale} · {lowest}", "dim"),
        Text(f"log p of the baseline answer · {scale}", "dim"),
        Text(f"log p {scale}", "dim"),
    ], width))
    return out
