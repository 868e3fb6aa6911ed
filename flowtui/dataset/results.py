"""The results directory of a dataset run (README, "The results folder") and its crash-safe writes.

    config.json            the run's settings (RunConfig): --resume refuses a different run
    provenance.json        model and weights hash, versions, devices, argv, data hash, each session
    samples-rankNNNNN.jsonl  per-sample records, one file per process, appended as each finishes
    samples.jsonl          all records merged, sorted by sample index (written by the main process)
    summary.json           curves with 95% intervals, baseline accuracy, dataset cliff, histograms
    curves.csv             the curves, one row per strategy and K
    accuracy.png, cliffs.png   the paper's Fig. 5 and the histogram of per-sample cliffs
    snapshots/             with --snapshots: one .flowtui per sample

A record is one JSON line written with a single write, flushed and fsynced, so a killed process
leaves at most a torn last line; readers skip it and the next append cuts it off first.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flowtui.engine import filesafe
from flowtui.engine.errors import InputError

CONFIG = "config.json"
PROVENANCE = "provenance.json"
SUMMARY = "summary.json"
MERGED = "samples.jsonl"
CURVES = "curves.csv"
PLOT_ACCURACY = "accuracy.png"
PLOT_CLIFFS = "cliffs.png"
PLOT_CHAIR = "chair.png"  # --scoring chair only
SNAPSHOTS = "snapshots"
SHARD_GLOB = "samples-rank*.jsonl"


def shard_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / f"samples-rank{rank:05d}.jsonl"


def shard_paths(run_dir: Path) -> list[Path]:
    return sorted(Path(run_dir).glob(SHARD_GLOB))


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write via a temporary file in the same folder and rename: a reader never sees half, a
    replaced file keeps its mode, a killed writer's temporary is cleaned up later (the engine's
    filesafe, as snapshots are written). Raises OSError (filesafe.WriteError)."""
    raw = data.encode() if isinstance(data, str) else data
    filesafe.write_atomic(path, lambda fh: fh.write(raw))


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, None if there is no file; InputError if it is unreadable."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is unreadable: {exc}") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path} does not hold a JSON object")
    return obj


def encode(record: dict[str, Any]) -> str:
    # default=str: a reference of an odd type (a date from Parquet, bytes) must not stop a run.
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str) + "\n"


class ShardWriter:
    """Appends records to one process's file: one write per record, flushed and fsynced."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        cut_torn_tail(self.path)
        self._fh = open(self.path, "ab")  # noqa: SIM115 - closed by close()

    def append(self, record: dict[str, Any]) -> None:
        self._fh.write(encode(record).encode())
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cut_torn_tail(path: Path) -> int:
    """Cut a last line that has no newline (a write a kill interrupted); returns bytes cut."""
    path = Path(path)
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return 0
        # Walk back to the last newline.
        pos, keep = size, 0
        while pos > 0:
            step = min(1 << 16, pos)
            pos -= step
            fh.seek(pos)
            chunk = fh.read(step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                keep = pos + nl + 1
                break
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
        return size - keep


def read_records(path: Path) -> list[dict[str, Any]]:
    """The complete records of one file; a torn or corrupt line is skipped, never fatal."""
    out: list[dict[str, Any]] = []
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return out
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("index"), int):
            out.append(rec)
    return out


def merge(shards: Iterable[Path]) -> tuple[list[dict[str, Any]], int]:
    """All records of the shard files, one per sample index, sorted; and how many duplicates
    were dropped (a finished run has none)."""
    by_index: dict[int, dict[str, Any]] = {}
    duplicates = 0
    for path in shards:
        for rec in read_records(path):
            if rec["index"] in by_index:
                duplicates += 1
                continue
            by_index[rec["index"]] = rec
    return [by_index[i] for i in sorted(by_index)], duplicates


def finished_indices(run_dir: Path) -> set[int]:
    return {rec["index"] for path in shard_paths(run_dir) for rec in read_records(path)}


def load_records(run_dir: Path) -> list[dict[str, Any]]:
    """A run's records: a merge of the shard files (the truth while a run goes on), or the merged
    file where the shards are gone (a results folder copied without them)."""
    run_dir = Path(run_dir)
    shards = shard_paths(run_dir)
    if shards:
        return merge(shards)[0]
    return read_records(run_dir / MERGED)


def sample_key(record: dict[str, Any]) -> dict[str, Any]:
    """A record without what legitimately differs between equal runs (timing, which process)."""
    return {k: v for k, v in record.items() if k not in ("seconds", "rank")}
