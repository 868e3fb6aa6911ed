"""Several finished dataset runs on one figure (the paper's Fig. 5 panels): each run's accuracy
curve under truncation `all` against K, its dataset cliff marked, read from the run's folder
with no model (`flowtui dataset compare RUN_A RUN_B ...`).

Runs of models with different depths are drawn against the relative depth K/L (K/L is the
relative depth of the first truncated layer; 1 is the unmodified model), runs of one depth
against K. Only finished runs compare: an unfinished curve would be over other samples.
Outputs: compare.csv (one row per run and K) and compare.png, each written atomically; an
existing file of either name is replaced only where this command wrote it.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from flowtui.dataset import results
from flowtui.dataset.summary import DELTA
from flowtui.engine.errors import InputError

CSV_NAME = "compare.csv"
PNG_NAME = "compare.png"
CSV_HEADER = ("run", "model", "num_layers", "K", "relative_depth", "accuracy", "ci95_low",
              "ci95_high", "is_cliff")
# Written into compare.png: a later run replaces such a file and no other.
PNG_MARK = "flowtui dataset compare"


@dataclass
class RunCurve:
    """One run's `all` curve: accuracy [L+1] with 95% intervals, its baseline and dataset cliff."""

    run: str  # the folder as given
    model: str
    data: str
    scoring: str
    num_layers: int
    samples: int
    accuracy: list[float]
    ci95: list[tuple[float, float]]
    baseline_accuracy: float
    dataset_cliff: int | None

    def relative(self, k: int) -> float:
        return k / self.num_layers


def load_curve(run_dir: str | Path, delta: float = DELTA) -> RunCurve:
    """The `all` curve of the finished run in `run_dir`; InputError, one line naming the folder,
    for anything that is not a finished run with an `all` curve."""
    from flowtui.dataset.browse import RunView

    path = Path(run_dir)
    if not path.exists():
        raise InputError(f"no results folder {path}")
    if not path.is_dir():
        raise InputError(f"{path} is not a folder (give a results folder of `flowtui dataset run`)")
    try:
        view = RunView.load(path, delta)
    except InputError as exc:
        msg = str(exc)
        raise InputError(msg if str(path) in msg else f"{path}: {msg}") from None
    s = view.summary
    if s.get("skipped"):
        raise InputError(f"{path} is an unfinished run ({s['skipped']} of {s['rows']} samples "
                         "not run yet); finish it with `flowtui dataset run ... --resume` first")
    curve = s["strategies"].get("all")
    if curve is None or not s["samples"] or s.get("num_layers") is None:
        raise InputError(f"{path} has no scored samples under truncation `all`: no curve")
    return RunCurve(
        run=str(run_dir), model=str(view.config.model.get("name") or "?"),
        data=str(view.config.data.get("path") or "?"), scoring=s["scoring"],
        num_layers=int(s["num_layers"]), samples=int(curve["samples"]),
        accuracy=[float(v) for v in curve["accuracy"]],
        ci95=[(float(lo), float(hi)) for lo, hi in curve["ci95"]],
        baseline_accuracy=float(s["baseline_accuracy"]), dataset_cliff=curve["dataset_cliff"],
    )


def load_curves(run_dirs: list[str], delta: float = DELTA) -> list[RunCurve]:
    if len(run_dirs) < 2:
        raise InputError("give at least two results folders to compare")
    seen: dict[Path, str] = {}
    for r in run_dirs:
        key = Path(r).resolve()
        if key in seen:
            raise InputError(f"{r} is given twice (as {seen[key]})")
        seen[key] = r
    return [load_curve(r, delta) for r in run_dirs]


def by_relative_depth(curves: list[RunCurve]) -> bool:
    """Whether the runs' models differ in depth (then K/L is the common axis)."""
    return len({c.num_layers for c in curves}) > 1


def compare_csv(curves: list[RunCurve]) -> str:
    """One row per run and K (CSV_HEADER); relative_depth is K/L, is_cliff true on the row of
    the run's dataset cliff."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for c in curves:
        for k, acc in enumerate(c.accuracy):
            lo, hi = c.ci95[k]
            w.writerow([c.run, c.model, c.num_layers, k, f"{c.relative(k):.6f}", f"{acc:.6f}",
                        f"{lo:.6f}", f"{hi:.6f}", "true" if k == c.dataset_cliff else "false"])
    return buf.getvalue()


def format_table(curves: list[RunCurve], delta: float = DELTA) -> str:
    """The curves as text (`--table`, or output that is not a terminal): one block per run."""
    rel = by_relative_depth(curves)
    lines = ["accuracy under truncation `all` from layer K (K = L: the unmodified model)"
             + ("; the models' depths differ: compare by relative depth K/L" if rel else "")]
    width = max(len(c.run) for c in curves)
    for c in curves:
        cliff = "none" if c.dataset_cliff is None else (
            f"K={c.dataset_cliff}" + (f" (K/L {c.relative(c.dataset_cliff):.3f})" if rel else ""))
        lines.append(f"{c.run:<{width}}  {c.model}, L={c.num_layers}, {c.samples} samples "
                     f"scored with {c.scoring!r}, baseline {c.baseline_accuracy:.3f}, "
                     f"dataset cliff {cliff}")
        lines.append("  K    " + "".join(f"{k:>6}" for k in range(c.num_layers + 1)))
        if rel:
            lines.append("  K/L  " + "".join(f"{c.relative(k):6.2f}"
                                             for k in range(c.num_layers + 1)))
        lines.append("  acc  " + "".join(f"{v:6.2f}" for v in c.accuracy))
    if len({c.scoring for c in curves}) > 1:
        lines.append("note: the runs are scored with different rules")
    lines.append(f"dataset cliff: the smallest K from which accuracy stays within {delta:g} of "
                 "the run's baseline")
    return "\n".join(lines)


def figure_png(curves: list[RunCurve], title: str = "") -> bytes:
    """All curves on one figure (matplotlib Agg): 95% bands, each run's baseline dashed and
    its dataset cliff marked, against K or, where depths differ, K/L."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from flowtui.dataset.plots import COLOURS

    rel = by_relative_depth(curves)
    fig = Figure(figsize=(7.0, 4.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, c in enumerate(curves):
        colour = COLOURS[i % len(COLOURS)]
        ks = list(range(c.num_layers + 1))
        xs = [c.relative(k) if rel else k for k in ks]
        lo = [v[0] for v in c.ci95]
        hi = [v[1] for v in c.ci95]
        ax.fill_between(xs, lo, hi, color=colour, alpha=0.12, linewidth=0)
        ax.plot(xs, c.accuracy, marker="o", markersize=3.5, color=colour,
                label=f"{c.run}: {c.model}, L={c.num_layers}, n={c.samples}")
        ax.axhline(c.baseline_accuracy, color=colour, linestyle="--", linewidth=0.8, alpha=0.7)
        if c.dataset_cliff is not None:
            k = c.dataset_cliff
            x = c.relative(k) if rel else k
            ax.axvline(x, color=colour, linestyle=":", linewidth=1.3)
            ax.plot([x], [c.accuracy[k]], marker="D", markersize=7, color=colour,
                    markeredgecolor="black", linestyle="none",
                    label=f"cliff K={k}" + (f" (K/L {x:.2f})" if rel else ""))
    if rel:
        ax.set_xlabel("K/L: relative depth of the first truncated layer (the models' depths "
                      "differ; 1 = unmodified)")
        ax.set_xlim(-0.02, 1.02)
    else:
        L = curves[0].num_layers
        ax.set_xlabel("K: image tokens truncated from layer K on (K = L: unmodified)")
        ax.set_xlim(-0.3, L + 0.3)
        ax.set_xticks(range(0, L + 1, max(1, L // 16)))
    scorings = sorted({c.scoring for c in curves})
    ax.set_ylabel(f"accuracy ({', '.join(scorings)}), truncate all")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(title or "accuracy under truncation; dashed: baselines; dotted: dataset cliffs",
                 fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": PNG_MARK})
    return buf.getvalue()


def _is_own_csv(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError):
        return False
    return first.rstrip("\r\n") == ",".join(CSV_HEADER)


def check_out(out: Path, curves: list[RunCurve]) -> None:
    """Refuse (InputError, nothing written) a folder that is a file or one of the runs, and a
    compare.csv / compare.png there that this command did not write."""
    from flowtui.compare import is_own_png

    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder")
    for c in curves:
        if out.exists() and out.resolve() == Path(c.run).resolve():
            raise InputError(f"--out {out} is the run {c.run}'s own folder; choose another")
    csv_path, png_path = out / CSV_NAME, out / PNG_NAME
    if csv_path.exists() and not _is_own_csv(csv_path):
        raise InputError(f"{csv_path} exists and was not written by `{PNG_MARK}`; choose "
                         "another folder")
    if png_path.exists() and not is_own_png(png_path, PNG_MARK):
        raise InputError(f"{png_path} exists and was not written by `{PNG_MARK}`; choose "
                         "another folder")


def write_compare(curves: list[RunCurve], out: str | Path, title: str = "") -> list[Path]:
    """compare.csv and compare.png into `out` (created if missing), each atomically."""
    out = Path(out)
    check_out(out, curves)
    png = figure_png(curves, title)
    try:
        out.mkdir(parents=True, exist_ok=True)
        results.write_atomic(out / CSV_NAME, compare_csv(curves))
        results.write_atomic(out / PNG_NAME, png)
    except OSError as exc:
        raise InputError(f"cannot write to {out}: {exc.strerror or exc}") from None
    return [out / CSV_NAME, out / PNG_NAME]

