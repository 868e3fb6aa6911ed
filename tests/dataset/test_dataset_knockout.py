"""Dataset runs with --knockout: per sample the engine's knockout, in summary.json per flow the
mean relative change per layer with its 95% interval (recomputed here from the samples), and the
figure."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flowtui.cli import main
from flowtui.dataset import results
from flowtui.dataset.knockout import Z95, summarise

# Not in the fast lane (`-m "not slow"`): toy dataset runs with knockout.
pytestmark = pytest.mark.slow

FLOWS = "image->question,image->last,question->last,last->last"


def test_a_toy_run_with_knockout_summarises_each_flow(tmp_path, capsys):
    data, run = tmp_path / "toy", tmp_path / "run"
    assert main(["dataset", "toy", str(data), "--n", "4"]) == 0
    assert main(["dataset", "run", str(data / "pope.jsonl"), "--out", str(run), "--device", "cpu",
                 "--max-new-tokens", "2", "--no-progress", "--no-self-check", "--knockout",
                 FLOWS, "--window", "3"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    k = summary["knockout"]
    assert k["flows"] == FLOWS.split(",") and k["samples"] == 4 and k["window"] == 3
    recs = [r for r in results.read_records(run / "samples.jsonl")]
    rel = np.asarray([r["knockout"]["rel_change"] for r in recs])  # [n, F, L]
    L = summary["num_layers"]
    assert rel.shape == (4, 4, L)
    for f, name in enumerate(k["flows"]):
        mean = rel[:, f].mean(axis=0)
        half = Z95 * rel[:, f].std(axis=0, ddof=1) / 2.0  # sqrt(4)
        np.testing.assert_allclose(k[name]["rel_change"], mean, atol=1e-3)
        np.testing.assert_allclose(np.asarray(k[name]["ci95"]),
                                   np.stack([mean - half, mean + half], 1), atol=1e-3)
    assert (run / "knockout.png").stat().st_size > 1000
    config = json.loads((run / "config.json").read_text())
    assert config["extra"]["knockout"] == {"flows": FLOWS.split(","), "window": 3}


def test_one_sample_gives_a_zero_width_interval_and_errors_are_left_out():
    recs = [{"knockout": {"window": 2, "baseline_first_prob": 0.5,
                          "rel_change": [[-10.0, 5.0]], "logprob": [[-1.0, -0.5]]}},
            {"error": "bad image"}]
    s = summarise(recs, {"flows": ["image->last"], "window": None})
    assert s["samples"] == 1 and s["window"] == 2
    assert s["image->last"] == {"rel_change": [-10.0, 5.0], "ci95": [[-10.0, -10.0], [5.0, 5.0]]}


@pytest.mark.parametrize("extra,says", [(["--knockout", "question->image"], "causal order"),
                                        (["--window", "3"], "only with --knockout")])
def test_bad_knockout_options_exit_2(tmp_path, capsys, extra, says):
    data = tmp_path / "toy"
    assert main(["dataset", "toy", str(data), "--n", "2"]) == 0
    capsys.readouterr()
    code = main(["dataset", "run", str(data / "pope.jsonl"), "--out", str(tmp_path / "run"),
                 "--device", "cpu", "--no-progress", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and says in err and "\n" not in err
    assert not (tmp_path / "run").exists()
