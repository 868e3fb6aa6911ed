"""Rescoring a finished run under another scoring rule, from the answers it stored: no model is
loaded and no model time is spent (`flowtui dataset report RUN --scoring RULE`).

Every record holds the baseline answer, each truncated answer and the same-as-baseline flags,
and the sample's reference as the data gave it, which is all a rule needs. The rescored summary,
curves and plots go to their own folder (by default RUN/scoring-RULE/); the run's own files
are only read, so its summary stays the one of the rule it was run with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flowtui.dataset import results
from flowtui.dataset.config import RunConfig
from flowtui.dataset.scoring import LabelError, Rule, get_rule
from flowtui.dataset.summary import DELTA, curves_csv, summarise
from flowtui.engine.errors import FlowtuiError, InputError

FOLDER_PREFIX = "scoring-"


class RescoreAborted(FlowtuiError):
    """The rescored files could not be written (the run itself is untouched)."""


def rescore_records(records: list[dict[str, Any]], rule: Rule, where: str = "the run"
                    ) -> list[dict[str, Any]]:
    """Copies of `records` with the baseline's and every truncated answer's score under `rule`.
    A record with an error stays as it is. `same` uses the flags the run recorded (token
    equality with the baseline). InputError, naming the first, when the rule cannot score the
    reference of a scored sample: a rescored curve covers the same samples as the run's own."""
    out, bad = [], []
    scored = 0
    for rec in records:
        if "error" in rec:
            out.append(rec)
            continue
        scored += 1
        try:
            ref = rule.reference(rec.get("reference"))
        except LabelError as exc:
            bad.append((rec, exc))
            continue
        new = dict(rec)
        base = rec["baseline"]
        new["baseline"] = dict(base, score=rule.score(base["answer"], ref, True))
        if rule.measure is not None:
            new["baseline"]["chair"] = rule.measure(base["answer"], ref)
        new["strategies"] = {}
        for name, s in rec.get("strategies", {}).items():
            same = s.get("same") or [a == base["answer"] for a in s["answers"]]
            new["strategies"][name] = dict(s, scores=[
                rule.score(a, ref, bool(f)) for a, f in zip(s["answers"], same, strict=True)])
            if rule.measure is not None:
                new["strategies"][name]["chair"] = [rule.measure(a, ref) for a in s["answers"]]
        out.append(new)
    if bad:
        rec, err = bad[0]
        raise InputError(f"--scoring {rule.name} cannot score {len(bad)} of the {scored} scored "
                         f"samples' references in {where} (sample {rec.get('id')}: {err})")
    return out


def default_folder(run_dir: Path, scoring: str) -> Path:
    return Path(run_dir) / f"{FOLDER_PREFIX}{scoring}"


def _check_folder(out: Path, run_dir: Path) -> None:
    """Refuse the run's own folder, a file, and a non-empty folder that holds no rescoring:
    only files this command wrote are ever replaced."""
    if out.resolve() == run_dir.resolve():
        raise InputError(f"--out {out} is the run's own folder, whose summary belongs to the rule "
                         "it was run with; choose another folder")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()):
        old = results.read_json(out / results.SUMMARY)
        if old is None or "rescored_from" not in old:
            raise InputError(f"--out {out} is not empty and holds no rescored summary; choose a "
                             "new or empty folder")


def rescore_run(run_dir: str | Path, scoring: str, out: str | Path | None = None,
                delta: float = DELTA, plots: bool = True) -> tuple[dict[str, Any], Path]:
    """Rescore the run in `run_dir` under `scoring`; write summary.json, curves.csv and the plots
    into `out` (default RUN/scoring-RULE/). Returns the summary and the folder. Reads the run
    only; InputError for a rule its references cannot be scored with."""
    run_dir = Path(run_dir)
    raw = results.read_json(run_dir / results.CONFIG) if run_dir.is_dir() else None
    if raw is None:
        raise InputError(f"{run_dir} holds no flowtui dataset run (no {results.CONFIG})")
    config = RunConfig.from_json(raw)
    if scoring == "chair" and config.scoring == "chair":
        from flowtui.dataset.runner import rule_for

        rule = rule_for(config)  # the run's own vocabulary
    else:
        rule = get_rule(scoring)
    has_refs = (config.data.get("columns") or {}).get("answer") or (config.chair or {}).get(
        "coco_instances")
    if rule.needs_reference and not has_refs:
        raise InputError(f"--scoring {scoring} needs reference answers, but the run's data has "
                         "none (no answer column); only --scoring same rescores it")
    folder = Path(out) if out is not None else default_folder(run_dir, scoring)
    _check_folder(folder, run_dir)
    prov = results.read_json(run_dir / results.PROVENANCE) or {}
    rows = int(config.data.get("rows", 0))
    rows = rows if config.limit is None else min(rows, config.limit)
    records = [r for r in results.load_records(run_dir) if r["index"] < rows]
    rescored = rescore_records(records, rule, str(run_dir))
    summary = summarise(rescored, scoring, delta, rows=rows,
                        num_layers=(prov.get("model") or {}).get("num_layers"),
                        strategies=config.strategies)
    summary["complete"] = summary["skipped"] == 0
    summary["model"] = config.model.get("name")
    summary["data"] = config.data.get("path")
    summary["rescored_from"] = {"run": str(run_dir), "scoring": config.scoring}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        results.write_json(folder / results.SUMMARY, summary)
        if summary["strategies"]:
            results.write_atomic(folder / results.CURVES, curves_csv(summary))
            if plots:
                from flowtui.dataset.plots import plot_accuracy, plot_cliffs

                title = (f"{summary['model']} · {Path(str(summary['data'])).name} · "
                         f"{summary['samples']} samples · rescored")
                plot_accuracy(summary, folder / results.PLOT_ACCURACY, title)
                plot_cliffs(summary, folder / results.PLOT_CLIFFS, title)
                if summary.get("baseline_chair_i") is not None:
                    from flowtui.dataset.plots import plot_chair

                    plot_chair(summary, folder / results.PLOT_CHAIR, title)
    except OSError as exc:
        raise RescoreAborted(f"cannot write the rescored results to {folder}: {exc}") from None
    return summary, folder
