"""The dataset run: for each sample the baseline answer, the sweep K = 0..L per strategy, scores
and the sample's cliff, appended to this process's file as each sample finishes.

Only the Engine interface is used (analyze with cam=False unless snapshots are asked for, then
sweep per strategy), so any model family, local or remote, runs the same loop.

Order of events, in every process:
  1. check --out against the run's config (read only; every process reaches the same verdict);
     barrier;
  2. load the engine;
  3. the main process creates the folder, writes config.json and provenance.json; barrier;
  4. each process runs its share (index mod world == rank) minus what any file already holds;
  5. barrier; the main process merges, writes summary.json, curves.csv and the plots.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from flowtui.dataset import knockout, provenance, results
from flowtui.dataset.config import RunConfig, Strategy
from flowtui.dataset.dist import Dist
from flowtui.dataset.lens import lens_record
from flowtui.dataset.readers import DatasetSource, Row
from flowtui.dataset.scoring import LabelError, Rule, chair_rule, get_rule
from flowtui.dataset.summary import DELTA, curves_csv, summarise
from flowtui.engine.analysis import cliff_layer
from flowtui.engine.errors import Cancelled, FlowtuiError, InputError, SnapshotError, first_line
from flowtui.engine.interface import Engine


class RunAborted(FlowtuiError):
    """The run cannot go on (the results folder cannot be written); finished samples are kept."""


def one_line(exc: BaseException) -> str:
    text = first_line(exc, None, "")
    if isinstance(exc, FlowtuiError):
        return text or type(exc).__name__
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def sample_seed(seed: int, index: int) -> int:
    """The random strategy's seed for one sample: fixed by the run's seed and the sample's index,
    so it does not depend on which process runs the sample."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def build_config(
    source: DatasetSource,
    model: str | None = None,
    *,
    dtype: str = "auto",
    quantize: str | None = None,
    scoring: str | None = None,
    strategies: str = "all",
    seed: int = 0,
    max_new_tokens: int = 16,
    question_suffix: str = "",
    limit: int | None = None,
    snapshots: bool = False,
    self_check: bool = True,
    lens: bool = False,
    knockout: dict[str, Any] | None = None,
    chair: dict[str, Any] | None = None,
) -> RunConfig:
    """A run's config from its settings. Scoring defaults to pope for POPE data, exact where
    there are answers, same where there are none; a rule that needs answers on data without
    them is an InputError. `chair` (for --scoring chair): where the objects and the vocabulary
    come from, as chair_settings gives it."""
    from flowtui.dataset.config import parse_strategies
    from flowtui.dataset.provenance import now
    from flowtui.dataset.readers import file_sha256
    from flowtui.engine.loading import resolve_model_path

    if scoring is None:
        scoring = "pope" if source.format == "pope" else "exact" if source.columns.answer else "same"
    rule = get_rule(scoring)
    if chair is not None and scoring != "chair":
        raise InputError("--objects-column, --coco-instances and --vocabulary go with --scoring chair")
    if scoring == "chair" and chair is None:
        chair = {"vocabulary": None, "objects": source.columns.answer}
    coco = source.object_table is not None
    if rule.needs_reference and source.columns.answer is None and not coco:
        raise InputError(f"scoring rule {scoring!r} needs reference answers, but {source.path.name}"
                         f" has no answer column (columns: {', '.join(source.available)}); pass "
                         "--answer-column or --scoring same")
    names = [s.name for s in parse_strategies(strategies)]
    path, name = resolve_model_path(model)
    data = source.describe()
    data["sha256"] = file_sha256(source.path)
    return RunConfig(
        data=data,
        model={"arg": model, "path": str(path), "name": name, "dtype": dtype,
               "quantize": quantize},
        scoring=scoring, strategies=names, seed=seed, max_new_tokens=max_new_tokens,
        question_suffix=question_suffix, limit=limit, snapshots=snapshots,
        self_check=self_check, lens=lens, created=now(), chair=chair,
        extra={"knockout": knockout} if knockout else {},
    )


def rule_for(config: RunConfig) -> Rule:
    """The run's scoring rule; for chair, over the vocabulary file the config names (checked
    against its hash: a changed file would score the rest of the run differently)."""
    if config.scoring != "chair" or not (config.chair or {}).get("vocabulary"):
        return get_rule(config.scoring)
    from flowtui.dataset.chair import Vocabulary
    from flowtui.dataset.readers import file_sha256

    chair = config.chair or {}
    path = Path(chair["vocabulary"])
    digest = chair.get("vocabulary_sha256")
    if digest and path.is_file() and file_sha256(path) != digest:
        raise InputError(f"--vocabulary {path} changed since the run began; restore it or "
                         "choose another --out")
    return chair_rule(Vocabulary.read(path))


def rows_in_run(config: RunConfig) -> int:
    rows = int(config.data["rows"])
    return rows if config.limit is None else min(rows, config.limit)


# --- the run folder -------------------------------------------------------------------------
def check_out(out: Path, config: RunConfig, resume: bool) -> RunConfig | None:
    """Refuse an --out that is a file, a non-empty folder that holds no run, or a different run;
    with a run of the same config, demand --resume. Returns the previous config, if any.
    Reads only: nothing already there is touched."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder for the results")
    old = results.read_json(out / results.CONFIG)
    if old is None:
        if out.exists() and any(out.iterdir()):
            raise InputError(f"--out {out} is not empty and holds no flowtui run; choose a new "
                             "or empty folder")
        return None
    try:
        previous = RunConfig.from_json(old)
    except (TypeError, InputError) as exc:
        raise InputError(f"--out {out}: {one_line(exc)}") from None
    diffs = previous.differences(config)
    if "scoring_rules" in diffs:
        raise InputError(f"--out {out} holds a run scored with flowtui's first {previous.scoring} "
                         "rule; resuming it would mix two rules: choose another --out (`flowtui "
                         f"dataset report {out} --scoring {previous.scoring}` rescores its answers)")
    if diffs:
        raise InputError(f"--out {out} holds a different run ({', '.join(diffs[:4])} differ); "
                         "choose another --out")
    if not resume:
        raise InputError(f"--out {out} already holds this run; pass --resume to finish it, or "
                         "choose another --out")
    return previous


# --- one sample -----------------------------------------------------------------------------
def _free_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def process_sample(
    engine: Engine,
    row: Row,
    rule: Rule,
    strategies: list[Strategy],
    config: RunConfig,
    snapshot_dir: Path | None = None,
) -> dict[str, Any]:
    """The record of one sample: its results, or its error. Never raises for a bad sample or a
    model failure; Ctrl-C and cancellation go through."""
    rec: dict[str, Any] = {"index": row.index, "id": row.id, "question": row.question,
                           "reference": row.reference, "image": row.image_label}

    def failed(stage: str, message: str) -> dict[str, Any]:
        rec.update(error=message, stage=stage)
        return rec

    if row.error:
        return failed("input", row.error)
    try:
        reference = rule.reference(row.reference)
    except LabelError as exc:
        return failed("label", f"{rule.name} cannot score this label: {exc}")
    start = time.perf_counter()
    question = f"{row.question}{config.question_suffix}"
    seed = sample_seed(config.seed, row.index)
    try:
        analysis = engine.analyze(row.image, question, max_new_tokens=config.max_new_tokens,
                                  cam=config.snapshots, self_check=config.self_check)
        if config.lens:
            engine.lens(analysis)
        sweeps = {}
        for s in strategies:
            sweeps[s.name] = engine.sweep(analysis, strategy=s.kind, keep=s.keep,
                                          seed=seed if s.kind == "random" else 0)
        if config.extra.get("knockout"):
            rec["knockout"] = knockout.record(engine, analysis, config.extra["knockout"])
    except (KeyboardInterrupt, Cancelled):
        raise
    except InputError as exc:
        return failed("input", one_line(exc))
    except Exception as exc:  # noqa: BLE001 - a model failure is this sample's error
        _free_memory()
        return failed("model", one_line(exc))
    baseline_logprob = float(np.sum(analysis.answer_logprobs))
    if analysis.failed_checks:
        # The sample's numbers may be wrong: kept with it, counted in summary.json.
        rec["self_check_failures"] = [c.describe() for c in analysis.failed_checks]
    rec["baseline"] = {"answer": analysis.answer,
                       "score": rule.score(analysis.answer, reference, True),
                       "logprob": baseline_logprob}
    if rule.measure is not None:
        rec["baseline"]["chair"] = rule.measure(analysis.answer, reference)
    rec["cliff"] = sweeps["all"].cliff_layer
    rec["strategies"] = {}
    for name, sw in sweeps.items():
        same = [bool(v) for v in sw.same]
        rec["strategies"][name] = {
            "answers": list(sw.answers),
            "scores": [rule.score(a, reference, s) for a, s in zip(sw.answers, same, strict=True)],
            "logprob": [float(v) for v in sw.logprob],
            "same": same,
            "cliff": cliff_layer(np.asarray(same)),
        }
        if rule.measure is not None:
            rec["strategies"][name]["chair"] = [rule.measure(a, reference) for a in sw.answers]
    if config.lens:
        rec["lens"] = lens_record(analysis, row.region)
    if any(s.kind == "random" for s in strategies):
        rec["seed"] = seed
    if snapshot_dir is not None:
        name = f"{row.index:06d}.flowtui"
        try:  # before the record: a record never names a ghost
            analysis.save(snapshot_dir / name, inputs=[row.image])
            rec["snapshot"] = f"{results.SNAPSHOTS}/{name}"
        except SnapshotError as exc:  # the results stand; only the snapshot is missing
            rec["snapshot_error"] = one_line(exc)
    rec["seconds"] = round(time.perf_counter() - start, 4)
    return rec


# --- progress -------------------------------------------------------------------------------
class _OtherShards:
    """Counts the records the other processes append (main process only, for one progress bar)."""

    def __init__(self, run_dir: Path, mine: Path) -> None:
        self.run_dir, self.mine = run_dir, mine
        self.offsets: dict[Path, int] = {p: p.stat().st_size for p in results.shard_paths(run_dir)
                                         if p != mine}

    def poll(self) -> tuple[int, int]:
        """(new records, new errors) since the last poll."""
        done = errors = 0
        for p in results.shard_paths(self.run_dir):
            if p == self.mine:
                continue
            start = self.offsets.get(p, 0)
            try:
                with open(p, "rb") as fh:
                    fh.seek(start)
                    chunk = fh.read()
            except OSError:
                continue
            end = chunk.rfind(b"\n") + 1
            for line in chunk[:end].splitlines():
                if line.strip():
                    done += 1
                    errors += b'"error":' in line
            self.offsets[p] = start + end
        return done, errors


class Progress:
    """One bar on the main process's stderr: samples/s, ETA, errors so far (all processes)."""

    def __init__(self, total: int, enabled: bool, others: _OtherShards | None) -> None:
        self.others = others
        self.errors = 0
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="sample", file=sys.stderr, dynamic_ncols=True,
                            mininterval=0.5 if sys.stderr.isatty() else 30, smoothing=0.05,
                            desc="dataset")
            self.bar.set_postfix_str("errors 0")

    def step(self, record: dict[str, Any] | None) -> None:
        if self.bar is None:
            return
        n = 1 if record is not None else 0
        self.errors += int(record is not None and "error" in record)
        if self.others is not None:
            done, errors = self.others.poll()
            n += done
            self.errors += errors
        self.bar.set_postfix_str(f"errors {self.errors}", refresh=False)
        self.bar.update(n)

    @contextmanager
    def following(self, every: float = 1.0) -> Iterator[None]:
        """While the body runs, poll the other processes' files every `every` seconds."""
        if self.bar is None or self.others is None:
            yield
            return
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(every):
                self.step(None)

        thread = threading.Thread(target=poll, daemon=True, name="flowtui-progress")
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.step(None)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --- the run --------------------------------------------------------------------------------
def _model_provenance(engine: Engine, config: RunConfig, previous: dict[str, Any] | None
                      ) -> dict[str, Any]:
    info = engine.info
    out: dict[str, Any] = {"name": info.name, "family": info.family, "num_layers": info.num_layers,
           "num_heads": info.num_heads, "dtype": info.dtype, "device": info.device,
           "path": config.model.get("path"), "revision": None, "weights": {}}
    path = config.model.get("path")
    if path and Path(path).is_dir():
        known = ((previous or {}).get("model") or {}).get("weights")
        out["weights"] = provenance.weight_hashes(Path(path), known)
        out["revision"] = provenance.hub_revision(Path(path))
    return out


def run_dataset(
    source: DatasetSource,
    config: RunConfig,
    engine: Engine | Callable[[], Engine],
    out: str | Path,
    *,
    resume: bool = False,
    dist: Dist | None = None,
    delta: float = DELTA,
    progress: bool = False,
    argv: list[str] | None = None,
    stop_after: int | None = None,
) -> dict[str, Any] | None:
    """Run (or resume) a dataset run into `out`. Returns the summary on the main process once
    every process is done; None on the others, and when `stop_after` (a test hook: stop as if
    killed after that many samples of this process) cut the run short."""
    out = Path(out)
    dist = dist or Dist()
    rule = rule_for(config)
    strategies = config.strategy_list()
    previous = check_out(out, config, resume)
    dist.barrier()  # every process has checked the folder before the main one writes to it
    if callable(engine) and not isinstance(engine, Engine):
        engine = engine()
    prev_prov = results.read_json(out / results.PROVENANCE) if previous else None
    if dist.is_main:
        try:
            out.mkdir(parents=True, exist_ok=True)
            if config.snapshots:
                (out / results.SNAPSHOTS).mkdir(exist_ok=True)
            if previous is not None:
                config.created = previous.created
            results.write_json(out / results.CONFIG, config.to_json())
            prov = provenance.build(
                prev_prov, _model_provenance(engine, config, prev_prov), dict(config.data),
                {"scoring": config.scoring, "strategies": config.strategies, "seed": config.seed,
                 "max_new_tokens": config.max_new_tokens, "limit": config.limit,
                 "question_suffix": config.question_suffix, "snapshots": config.snapshots},
                provenance.session_info(dist.world, engine.info.device, argv))
            results.write_json(out / results.PROVENANCE, prov)
        except OSError as exc:
            raise RunAborted(f"cannot write to {out}: {exc}") from None
    dist.barrier()

    loop_start = time.perf_counter()
    n_rows = rows_in_run(config)
    done = results.finished_indices(out)
    todo = [i for i in range(n_rows) if dist.owns(i) and i not in done]
    shard = results.shard_path(out, dist.rank)
    others = _OtherShards(out, shard) if dist.is_main and dist.world > 1 else None
    remaining = n_rows - len(done & set(range(n_rows)))
    bar = Progress(remaining, progress and dist.is_main, others)
    snapshot_dir = out / results.SNAPSHOTS if config.snapshots else None
    ran = 0
    try:
        with results.ShardWriter(shard) as writer:
            for i in todo:
                if stop_after is not None and ran >= stop_after:
                    return None
                record = process_sample(engine, source.row(i), rule, strategies, config,
                                        snapshot_dir)
                record["rank"] = dist.rank
                try:
                    writer.append(record)
                except OSError as exc:
                    raise RunAborted(f"cannot write to {shard}: {exc}; the samples already "
                                     "written are kept: fix it and rerun with --resume") from None
                ran += 1
                bar.step(record)
        # The others may still run: the bar follows their files while this process waits.
        with bar.following():
            dist.barrier()
        loop_seconds = time.perf_counter() - loop_start
    finally:
        bar.close()
    if not dist.is_main:
        return None
    summary = finalize(out, delta)
    prov = results.read_json(out / results.PROVENANCE) or {}
    if prov.get("sessions"):
        session = prov["sessions"][-1]
        session["finished"] = provenance.now()
        # From the first sample to the last process done: the run's own throughput, without
        # start-up (imports, model loading).
        session["run_seconds"] = round(loop_seconds, 3)
        session["samples_run"] = len(results.finished_indices(out) - done)
        results.write_json(out / results.PROVENANCE, prov)
    return summary


def finalize(out: str | Path, delta: float = DELTA, plots: bool = True) -> dict[str, Any]:
    """Merge the process files and (re)write samples.jsonl, summary.json, curves.csv and the
    plots. `flowtui dataset report` runs this too: after copying the files of a run whose
    machines had no shared folder into one, it merges them."""
    out = Path(out)
    raw = results.read_json(out / results.CONFIG)
    if raw is None:
        raise InputError(f"{out} holds no flowtui dataset run (no {results.CONFIG})")
    config = RunConfig.from_json(raw)
    prov = results.read_json(out / results.PROVENANCE) or {}
    n_rows = rows_in_run(config)
    shards = results.shard_paths(out)
    if shards:
        records, duplicates = results.merge(shards)
    else:
        records, duplicates = results.read_records(out / results.MERGED), 0
    records = [r for r in records if r["index"] < n_rows]
    num_layers = (prov.get("model") or {}).get("num_layers")
    summary = summarise(records, config.scoring, delta, rows=n_rows, num_layers=num_layers,
                        strategies=config.strategies)
    summary["duplicates"] = duplicates
    summary["complete"] = summary["skipped"] == 0
    summary["model"] = config.model.get("name")
    summary["data"] = config.data.get("path")
    summary["scoring_rules"] = config.scoring_rules
    if config.extra.get("knockout"):
        summary["knockout"] = knockout.summarise(records, config.extra["knockout"])
    try:
        if shards:
            results.write_atomic(out / results.MERGED, "".join(results.encode(r) for r in records))
        results.write_json(out / results.SUMMARY, summary)
        if summary["strategies"]:
            results.write_atomic(out / results.CURVES, curves_csv(summary))
            if plots:
                from flowtui.dataset.plots import plot_accuracy, plot_cliffs

                title = f"{summary['model']} · {Path(str(summary['data'])).name} · " \
                        f"{summary['samples']} samples"
                plot_accuracy(summary, out / results.PLOT_ACCURACY, title)
                plot_cliffs(summary, out / results.PLOT_CLIFFS, title)
                if summary.get("knockout", {}).get("samples"):
                    knockout.plot(summary["knockout"], out / knockout.PLOT, title)
                if summary.get("baseline_chair_i") is not None:
                    from flowtui.dataset.plots import plot_chair

                    plot_chair(summary, out / results.PLOT_CHAIR, title)
    except OSError as exc:
        raise RunAborted(f"cannot write the results to {out}: {exc}") from None
    return summary
