"""`flowtui dataset compare`: finished runs' `all` curves on one figure and in one CSV, checked
against each run's own summary.json; by K/L where the models' depths differ; bad runs and
outputs refused with one line."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from support.dataset_helpers import write_pope

from flowtui.cli import main
from flowtui.dataset import results
from flowtui.dataset.compare import CSV_HEADER, PNG_MARK
from flowtui.selftest.tiny_llava import build_tiny_llava

# Not in the fast lane (`-m "not slow"`): dataset runs of tiny models.
pytestmark = pytest.mark.slow


def _run(data: Path, out: Path, *extra: str) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as a dataset process runs; and the CPU is shared
    try:
        assert main(["dataset", "run", str(data), "--out", str(out), "--device", "cpu",
                     "--max-new-tokens", "2", "--no-progress", *extra]) == 0
    finally:
        torch.set_num_threads(before)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two toy runs (8 layers, other scenes) and one of a tiny random LLaVA (5 layers)."""
    root = tmp_path_factory.mktemp("cmp")
    out = {}
    for name, seed in (("toy1", 11), ("toy2", 12)):
        assert main(["dataset", "toy", str(root / f"data-{name}"), "--n", "4", "--seed",
                     str(seed)]) == 0
        out[name] = _run(root / f"data-{name}" / "pope.jsonl", root / name)
    model = build_tiny_llava(root / "tiny_b", "b")
    out["tiny"] = _run(write_pope(root / "data-tiny", 4), root / "tiny", "--model", str(model),
                       "--scoring", "same")
    return out


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == CSV_HEADER
        return list(reader)


def _check_rows(rows: list[dict[str, str]], run: Path, label: str) -> None:
    s = _summary(run)
    L = s["num_layers"]
    curve = s["strategies"]["all"]
    mine = [r for r in rows if r["run"] == label]
    assert [int(r["K"]) for r in mine] == list(range(L + 1))
    for k, r in enumerate(mine):
        assert int(r["num_layers"]) == L
        assert float(r["relative_depth"]) == pytest.approx(k / L, abs=1e-6)
        assert float(r["accuracy"]) == pytest.approx(curve["accuracy"][k], abs=1e-6)
        assert float(r["ci95_low"]) == pytest.approx(curve["ci95"][k][0], abs=1e-6)
        assert float(r["ci95_high"]) == pytest.approx(curve["ci95"][k][1], abs=1e-6)
        assert r["is_cliff"] == ("true" if k == s["dataset_cliff"] else "false")
    assert sum(r["is_cliff"] == "true" for r in mine) == (s["dataset_cliff"] is not None)


def _valid_png(path: Path) -> None:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] >= 500 and im.size[1] >= 300
        assert im.info.get("Software") == PNG_MARK
    assert 15_000 < path.stat().st_size < 2_000_000


def test_two_runs_of_one_depth(runs, tmp_path, capsys):
    out = tmp_path / "figs"
    assert main(["dataset", "compare", str(runs["toy1"]), str(runs["toy2"]), "--out",
                 str(out)]) == 0
    assert "compare.csv" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["compare.csv", "compare.png"]
    rows = _rows(out / "compare.csv")
    assert len(rows) == 2 * 9 and {r["model"] for r in rows} == {"flowtui-toy"}
    _check_rows(rows, runs["toy1"], str(runs["toy1"]))
    _check_rows(rows, runs["toy2"], str(runs["toy2"]))
    _valid_png(out / "compare.png")
    # Its own files are replaced on a rerun; the runs are only read.
    before = {p: p.read_bytes() for p in runs["toy1"].rglob("*") if p.is_file()}
    assert main(["dataset", "compare", str(runs["toy2"]), str(runs["toy1"]), "--out",
                 str(out)]) == 0
    assert [r["run"] for r in _rows(out / "compare.csv")][0] == str(runs["toy2"])
    assert {p: p.read_bytes() for p in runs["toy1"].rglob("*") if p.is_file()} == before


def test_different_depths_by_relative_depth(runs, tmp_path, capsys):
    out = tmp_path / "figs"
    argv = ["dataset", "compare", str(runs["toy1"]), str(runs["tiny"])]
    assert main(argv) == 0  # no --out: the table
    text = capsys.readouterr().out
    assert "compare by relative depth K/L" in text and "L=5" in text and "L=8" in text
    tiny = _summary(runs["tiny"])
    acc_line = [line for line in text.splitlines() if line.startswith("  acc")][1]
    assert [float(v) for v in acc_line.split()[1:]] == pytest.approx(
        tiny["strategies"]["all"]["accuracy"], abs=0.005)
    assert not out.exists()
    assert main([*argv, "--out", str(out)]) == 0
    rows = _rows(out / "compare.csv")
    assert len(rows) == 9 + 6
    _check_rows(rows, runs["toy1"], str(runs["toy1"]))
    _check_rows(rows, runs["tiny"], str(runs["tiny"]))
    assert [r["relative_depth"] for r in rows if r["run"] == str(runs["tiny"])] == [
        "0.000000", "0.200000", "0.400000", "0.600000", "0.800000", "1.000000"]
    _valid_png(out / "compare.png")


def _bad(argv, capsys, match):
    got = main(argv)
    err = capsys.readouterr().err.strip()
    assert got == 2, err
    assert err.count("\n") == 0 and err.startswith("flowtui: error: "), err
    assert match in err, err


def test_bad_runs_and_outputs_are_refused(runs, tmp_path, capsys):
    a, b = str(runs["toy1"]), str(runs["toy2"])
    cmp = ["dataset", "compare"]
    _bad([*cmp, a], capsys, "at least two")
    _bad([*cmp, a, a], capsys, "given twice")
    _bad([*cmp, a, str(tmp_path / "missing")], capsys, "no results folder")
    (tmp_path / "empty").mkdir()
    _bad([*cmp, a, str(tmp_path / "empty")], capsys, "holds no flowtui dataset run")
    (tmp_path / "file").write_text("x")
    _bad([*cmp, a, str(tmp_path / "file")], capsys, "is not a folder")
    # An unfinished run: its last sample's record gone.
    part = tmp_path / "part"
    shutil.copytree(runs["toy2"], part)
    for path in [*results.shard_paths(part), part / "samples.jsonl"]:
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[:-1]))
    _bad([*cmp, a, str(part)], capsys, "is an unfinished run (1 of 4 samples not run yet)")
    # A run whose every sample failed: no curve.
    failed = tmp_path / "failed"
    shutil.copytree(runs["toy2"], failed)
    for path in [*results.shard_paths(failed), failed / "samples.jsonl"]:
        recs = results.read_records(path)
        path.write_text("".join(results.encode({"index": r["index"], "id": r["id"],
                                                "error": "bad image", "stage": "image"})
                                for r in recs))
    _bad([*cmp, a, str(failed)], capsys, "has no scored samples")
    _bad([*cmp, a, b, "--delta", "2"], capsys, "--delta must be in [0, 1)")

    # Outputs: never a file, a run's folder, or files this command did not write.
    _bad([*cmp, a, b, "--out", str(tmp_path / "file")], capsys, "is a file")
    _bad([*cmp, a, b, "--out", a], capsys, "own folder")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "compare.csv").write_text("my,own,table\n")
    _bad([*cmp, a, b, "--out", str(mine)], capsys, "compare.csv exists and was not written")
    (mine / "compare.csv").unlink()
    Image.new("RGB", (4, 4)).save(mine / "compare.png")
    _bad([*cmp, a, b, "--out", str(mine)], capsys, "compare.png exists and was not written")
    assert sorted(p.name for p in mine.iterdir()) == ["compare.png"]
    with Image.open(mine / "compare.png") as im:
        assert im.size == (4, 4)
    assert not (runs["toy1"] / "compare.csv").exists()
    assert not (tmp_path / "file").is_dir() and (tmp_path / "file").read_text() == "x"


def test_help_says_what_comes_later(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["dataset", "compare", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: flowtui dataset compare")
    for words in ("compare screen", "K/L", "compare.csv", "is_cliff", "finished runs"):
        assert words in out, words
