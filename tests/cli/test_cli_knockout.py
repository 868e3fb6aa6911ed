"""Headless knockout: --knockout FLOWS with --window W or --layers A:B, in the snapshot
(version 3, arrays [F, L] or [F, 1]) and in the --json report; bad input exits 2 in one line."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from flowtui.cli import main
from flowtui.engine import load_snapshot
from flowtui.engine.codec import VERSION


def _run(tiny_paths, image_file, tmp_path, *extra):
    out = tmp_path / "k.flowtui"
    argv = [str(image_file), "Is there a red circle?", "--headless", "--model",
            str(tiny_paths["a"]), "--device", "cpu", "--dtype", "float32", "--max-new-tokens",
            "3", "--no-self-check", "--out", str(out), *extra]
    return main(argv), out


def test_a_sweep_of_windows_is_in_the_snapshot_and_the_json(tiny_paths, image_file, tmp_path,
                                                           capsys):
    code, out = _run(tiny_paths, image_file, tmp_path, "--knockout",
                     "image->question,image->last+image->answer", "--window", "3", "--json")
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    k = report["knockout"]
    assert k["flows"] == ["image->question", "image->last+image->answer"] and k["window"] == 3
    L = report["model"]["num_layers"]
    assert np.asarray(k["rel_change"]).shape == (2, L)
    with zipfile.ZipFile(out) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["version"] == VERSION == 3
    assert manifest["knockout"]["window"] == 3 and "layers" not in manifest["knockout"]
    a = load_snapshot(out)
    assert a.knockout.first_prob.shape == (2, L)
    np.testing.assert_allclose(a.knockout.rel_change, k["rel_change"], rtol=1e-6)
    p0 = manifest["knockout"]["baseline_first_prob"]
    np.testing.assert_allclose(a.knockout.rel_change,
                               100 * (a.knockout.first_prob - p0) / p0, atol=1e-3)


def test_a_layer_range_gives_one_column_and_summary_lines(tiny_paths, image_file, tmp_path,
                                                          capsys):
    code, out = _run(tiny_paths, image_file, tmp_path, "--knockout", "question->last",
                     "--layers", "1:3", "--knockout-answers")
    assert code == 0
    text = capsys.readouterr().out
    assert "knockout: layers 1..2" in text and "question->last: min change" in text
    a = load_snapshot(out)
    assert a.knockout.layers == (1, 3) and a.knockout.window is None
    assert a.knockout.logprob.shape == (1, 1) and len(a.knockout.answers[0]) == 1


@pytest.mark.parametrize("extra,says", [
    (["--knockout", "question->image"], "causal order"),
    (["--knockout", "image->last", "--layers", "3"], "A:B"),
    (["--knockout", "image->last", "--layers", "0:2", "--window", "2"], "give one"),
    (["--window", "2"], "only with --knockout"),
    (["--knockout", "image->last", "--layers", "0:99"], "B <= "),
    (["--knockout", "image->last", "--window", "99"], "window must be"),
])
def test_bad_knockout_options_exit_2_in_one_line(tiny_paths, image_file, tmp_path, capsys,
                                                 extra, says):
    code, out = _run(tiny_paths, image_file, tmp_path, *extra)
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert code == 2 and says in last and last.startswith("flowtui: error:")
    assert "Traceback" not in err and "generating" not in err  # refused before the model ran
    assert not out.exists()


def test_knockout_options_need_headless(image_file, capsys):
    assert main([str(image_file), "q?", "--knockout", "image->last"]) == 2
    assert "only for --headless" in capsys.readouterr().err


def test_older_snapshots_open_without_a_knockout(tiny_paths, image_file, tmp_path):
    code, out = _run(tiny_paths, image_file, tmp_path)
    assert code == 0 and load_snapshot(out).knockout is None
