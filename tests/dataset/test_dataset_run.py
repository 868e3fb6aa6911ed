"""Dataset runs end to end: on the tiny random LLaVA and the toy model, in one process and in
two (accelerate launch), killed and resumed, with every kind of bad input."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from support.dataset_helpers import samples, shard_indices, write_pope
from support.fake_engine import FakeEngine

from flowtui.cli import main
from flowtui.dataset import results
from flowtui.dataset.readers import open_dataset
from flowtui.dataset.runner import build_config, finalize, run_dataset
from flowtui.dataset.scoring import RULES
from flowtui.dataset.summary import dataset_cliff, wilson
from flowtui.engine.analysis import cliff_layer
from flowtui.engine.images import load_image

# Not in the fast lane (`-m "not slow"`): dataset runs of a tiny model, with 2 processes.
pytestmark = pytest.mark.slow

N = 7  # samples in the tiny model's dataset: odd, so the 2-process split is uneven
STRATEGIES = "all,random:9,top:9"
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(
    Path(__file__).resolve().parents[2]))


@contextmanager
def threads(n: int):
    """One CPU thread, as every process of a torchrun/accelerate launch gets by default: the
    same kernels give the same floats."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pope(tmp_path_factory) -> Path:
    return write_pope(tmp_path_factory.mktemp("data"), N)


def _config(data: Path, model: Path, **kw):
    kw.setdefault("strategies", STRATEGIES)
    kw.setdefault("max_new_tokens", 3)
    return build_config(open_dataset(data), str(model), **kw)


def _run(data, model, engine, out, **kw):
    run_kw = {k: kw.pop(k) for k in ("resume", "stop_after") if k in kw}
    with threads(1):
        return run_dataset(open_dataset(data), _config(data, model, **kw), engine, out, **run_kw)


@pytest.fixture(scope="module")
def reference(pope, tiny_paths, engines, tmp_path_factory) -> Path:
    """One uninterrupted single-process run: what every other way of running must equal."""
    out = tmp_path_factory.mktemp("runs") / "reference"
    _run(pope, tiny_paths["a"], engines["a"], out, scoring="same")
    return out


def _same_rule_recomputed(recs: list[dict], name: str, L: int) -> dict:
    """The summary of strategy `name`, recomputed here from the records' answers and flags."""
    rule = RULES["same"]
    per = [r["strategies"][name] for r in recs]
    scores = np.array([[rule.score(a, None, s) for a, s in zip(p["answers"], p["same"],
                                                              strict=True)] for p in per])
    cliffs = [cliff_layer(np.array(r["strategies"][name]["same"])) for r in recs]
    acc = scores.mean(axis=0)
    return {"accuracy": acc.tolist(), "ci95": [list(wilson(scores[:, k].sum(), len(recs)))
                                               for k in range(L + 1)],
            "cliff_histogram": [cliffs.count(k) for k in range(L + 1)],
            "dataset_cliff": dataset_cliff(acc, 1.0)}


def test_summary_equals_recomputation_from_the_lines(reference, engines, pope):
    summary = json.loads((reference / "summary.json").read_text())
    recs = results.read_records(reference / "samples.jsonl")
    L = engines["a"].info.num_layers
    assert [r["index"] for r in recs] == list(range(N)) and summary["samples"] == N
    assert summary["num_layers"] == L and summary["scoring"] == "same"
    assert list(summary["strategies"]) == ["all", "random:9", "top:9"]
    assert summary["baseline_accuracy"] == 1.0
    for name in summary["strategies"]:
        want = _same_rule_recomputed(recs, name, L)
        got = summary["strategies"][name]
        assert got["accuracy"] == pytest.approx(want["accuracy"])
        assert np.allclose(got["ci95"], want["ci95"])
        assert got["cliff_histogram"] == want["cliff_histogram"]
        assert got["dataset_cliff"] == want["dataset_cliff"]
    assert summary["dataset_cliff"] == summary["strategies"]["all"]["dataset_cliff"]
    # Truncating the image must change something somewhere, or this test checks nothing.
    assert min(summary["strategies"]["all"]["accuracy"]) < 1.0
    for r in recs:
        s = r["strategies"]["all"]
        assert r["cliff"] == s["cliff"] == cliff_layer(np.array(s["same"]))
        assert s["answers"][L] == r["baseline"]["answer"]  # K = L is the unmodified model
        assert s["logprob"][L] == pytest.approx(r["baseline"]["logprob"], abs=1e-5)
        assert len(set(r["strategies"]["random:9"]["answers"])) >= 1 and "seed" in r
    # The curves CSV and the plots are there, and say the same.
    csv_lines = (reference / "curves.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 3 * (L + 1)
    row = csv_lines[1].split(",")
    assert row[:2] == ["all", "0"]
    assert float(row[2]) == pytest.approx(summary["strategies"]["all"]["accuracy"][0])
    for png in ("accuracy.png", "cliffs.png"):
        assert (reference / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_records_match_the_engine_called_directly(reference, engines, pope):
    """The runner adds nothing of its own: one sample, asked of the engine by hand."""
    rec = results.read_records(reference / "samples.jsonl")[3]
    src = open_dataset(pope)
    row = src.row(3)
    e = engines["a"]
    with threads(1):
        a = e.analyze(load_image(row.image), row.question, max_new_tokens=3, cam=False)
        sw = e.sweep(a)
        top = e.sweep(a, strategy="top", keep=9)
    assert rec["baseline"]["answer"] == a.answer and rec["id"] == "1003"
    assert rec["strategies"]["all"]["answers"] == sw.answers
    assert rec["strategies"]["all"]["same"] == sw.same.tolist()
    assert rec["strategies"]["top:9"]["answers"] == top.answers
    assert rec["strategies"]["all"]["logprob"] == pytest.approx(sw.logprob.tolist())


def test_provenance_and_config(reference, tiny_paths):
    prov = json.loads((reference / "provenance.json").read_text())
    cfg = json.loads((reference / "config.json").read_text())
    weights = prov["model"]["weights"]["model.safetensors"]
    digest = hashlib.sha256((tiny_paths["a"] / "model.safetensors").read_bytes()).hexdigest()
    assert weights["sha256"] == digest
    assert prov["model"]["family"] == "llava" and prov["model"]["num_layers"] == 4
    assert prov["data"]["sha256"] == cfg["data"]["sha256"]
    assert prov["run"]["scoring"] == "same" and prov["run"]["strategies"] == STRATEGIES.split(",")
    session = prov["sessions"][-1]
    assert session["finished"] and session["versions"]["torch"] and session["world_size"] == 1
    assert cfg["format"] == "flowtui.dataset.run" and cfg["max_new_tokens"] == 3


def test_two_process_accelerate_run_equals_one_process(reference, pope, tiny_paths, tmp_path):
    out = tmp_path / "two"
    # `--cpu --num_processes 2` starts a single process in accelerate (it wants an MPI
    # hostfile); --multi_gpu runs torch.distributed.run, which works without a GPU.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
           "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(29500 + os.getpid() % 1000),
           "-m", "flowtui", "dataset", "run", str(pope), "--out", str(out), "--model",
           str(tiny_paths["a"]), "--device", "cpu", "--scoring", "same", "--strategies",
           STRATEGIES, "--max-new-tokens", "3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shards = results.shard_paths(out)
    assert [p.name for p in shards] == ["samples-rank00000.jsonl", "samples-rank00001.jsonl"]
    split = [sorted(r["index"] for r in results.read_records(p)) for p in shards]
    assert split == [[0, 2, 4, 6], [1, 3, 5]]  # index mod 2, each process its own file
    assert samples(out) == samples(reference)  # merged == 1 process, sample by sample
    two = json.loads((out / "summary.json").read_text())
    one = json.loads((reference / "summary.json").read_text())
    assert two["strategies"] == one["strategies"]
    assert json.loads((out / "provenance.json").read_text())["sessions"][-1]["world_size"] == 2
    assert proc.stdout.count("dataset cliff") == 1  # only the main process reports


def test_stopped_run_resumes_to_the_same_result(reference, pope, tiny_paths, engines, tmp_path):
    out = tmp_path / "stopped"
    assert _run(pope, tiny_paths["a"], engines["a"], out, scoring="same", stop_after=3) is None
    assert shard_indices(out) == [0, 1, 2] and not (out / "summary.json").exists()
    summary = _run(pope, tiny_paths["a"], engines["a"], out, scoring="same", resume=True)
    assert summary["samples"] == N
    assert sorted(shard_indices(out)) == list(range(N))  # no duplicates
    assert samples(out) == samples(reference)
    sessions = json.loads((out / "provenance.json").read_text())["sessions"]
    assert len(sessions) == 2 and sessions[0]["finished"] is None


def test_killed_process_loses_only_the_sample_in_flight(reference, pope, tiny_paths, engines,
                                                         tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "flowtui", "dataset", "run", str(pope), "--out", str(out),
           "--model", str(tiny_paths["a"]), "--device", "cpu", "--scoring", "same",
           "--strategies", STRATEGIES, "--max-new-tokens", "3", "--no-progress"]
    env = dict(ENV, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    shard = results.shard_path(out, 0)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if shard.exists() and shard.read_bytes().count(b"\n") >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    done = shard_indices(out)
    assert 2 <= len(done) < N and done == sorted(set(done))
    with open(shard, "ab") as fh:
        fh.write(b'{"index": 6, "id": "1006", "quest')  # as if killed mid-write
    summary = _run(pope, tiny_paths["a"], engines["a"], out, scoring="same", resume=True)
    assert summary["samples"] == N and sorted(shard_indices(out)) == list(range(N))
    assert samples(out) == samples(reference)


def _bad(argv, capsys, match, code=2):
    got = main(argv)
    err = capsys.readouterr().err.strip()
    assert got == code, err
    lines = [x for x in err.splitlines() if x.startswith("flowtui: error:")]
    assert len(lines) == 1 and err.splitlines()[-1] == lines[0], err
    assert match in lines[0], err
    assert "Traceback" not in err


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_bad_input_is_one_line_and_nothing_written_is_touched(reference, pope, tiny_paths,
                                                              tmp_path, capsys):
    model = ["--model", str(tiny_paths["a"]), "--device", "cpu"]
    run = ["dataset", "run"]
    _bad([*run, str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o"), *model], capsys,
         "data not found")
    _bad([*run, str(pope), "--out", str(tmp_path / "o"), "--answer-column", "solution", *model],
         capsys, "no column 'solution' for the answer")
    _bad([*run, str(pope), "--out", str(tmp_path / "o"), "--scoring", "bleu", *model], capsys,
         "unknown scoring rule 'bleu'")
    _bad([*run, str(pope), "--out", str(tmp_path / "o"), "--strategies", "all,half", *model],
         capsys, "unknown strategy 'half'")
    (tmp_path / "afile").write_text("x")
    _bad([*run, str(pope), "--out", str(tmp_path / "afile"), *model], capsys, "is a file")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    _bad([*run, str(pope), "--out", str(tmp_path / "busy"), *model], capsys,
         "not empty and holds no flowtui run")
    nolabel = tmp_path / "nolabel.jsonl"
    nolabel.write_text('{"image": "a.png", "question": "q?"}\n')
    _bad([*run, str(nolabel), "--out", str(tmp_path / "o"), "--scoring", "vqa", *model], capsys,
         "needs reference answers")
    _bad(["dataset", "frobnicate"], capsys, "unknown dataset command 'frobnicate'")
    _bad(["dataset", "report", str(tmp_path / "busy")], capsys, "holds no flowtui dataset run")
    # A folder that holds a run: refused without --resume, and refused as a different run.
    before = _tree(reference)
    same = [*run, str(pope), "--out", str(reference), "--scoring", "same", "--strategies",
            STRATEGIES, "--max-new-tokens", "3", *model]
    _bad(same, capsys, "already holds this run; pass --resume")
    _bad([*same[:-2], "--scoring", "pope", *model, "--resume"], capsys,
         "holds a different run (scoring differ)")
    _bad([*same, "--resume", "--max-new-tokens", "4"], capsys, "max_new_tokens differ")
    assert _tree(reference) == before
    assert not (tmp_path / "o").exists()


def test_per_sample_errors_are_recorded_and_counted(tmp_path, capsys):
    class ImageReadingFake(FakeEngine):
        """Reads the image as a real engine does, and fails on one question."""

        def analyze(self, image, question, max_new_tokens=32, progress=None, cam=True,
                    self_check=True, per_token=False):
            load_image(image)
            if "horse" in question:
                raise RuntimeError("CUDA error: device-side assert triggered\nmore lines")
            return super().analyze(image, question, max_new_tokens, progress, cam)

    extra = [
        {"question_id": 1, "image": "img/missing.png", "text": "Is there a cat?", "label": "yes"},
        {"question_id": 2, "image": "img/0.png", "text": "", "label": "no"},
        {"question_id": 3, "image": "img/0.png", "text": "Is it?", "label": "perhaps"},
    ]
    data = write_pope(tmp_path / "d", 5, extra=extra)
    with open(data, "a") as fh:
        fh.write("{oops\n")
    src = open_dataset(data)
    # The fake answers "Yes." / "No.": the first-word rule reads them (lmms-eval's pope does not).
    cfg = build_config(src, None, max_new_tokens=4, scoring="pope-first-word")
    summary = run_dataset(src, cfg, ImageReadingFake(num_layers=4, cliff=2), tmp_path / "run")
    recs = results.read_records(tmp_path / "run" / "samples.jsonl")
    errors = {r["index"]: (r["stage"], r["error"]) for r in recs if "error" in r}
    assert errors == {
        3: ("model", "RuntimeError: CUDA error: device-side assert triggered"),
        5: ("input", f"image not found: {data.parent / 'img' / 'missing.png'}"),
        6: ("input", "empty question in column 'text'"),
        7: ("label", "pope-first-word cannot score this label: label 'perhaps' is not yes or "
                     "no"),
        8: ("input", "line 9 is not valid JSON (Expecting property name enclosed in double "
                     "quotes)"),
    }
    assert summary["errors"] == 5 and summary["samples"] == 4 and summary["rows"] == 9
    assert summary["errors_by_stage"] == {"input": 3, "label": 1, "model": 1}
    # FakeEngine answers "Yes." from K = 2 on, "No." below, scored against the labels.
    labels = ["no", "yes", "no", "yes", "no"]
    ok = [i for i in range(5) if i != 3]
    want0 = np.mean([labels[i] == "no" for i in ok])
    assert summary["strategies"]["all"]["accuracy"][0] == pytest.approx(want0)
    assert summary["baseline_accuracy"] == pytest.approx(np.mean([labels[i] == "yes" for i in ok]))
    # POPE's metrics beside accuracy: "No." below K = 2 reads as no, "Yes." from K = 2 on as yes;
    # of the 4 scored samples one is labelled yes.
    curve = summary["strategies"]["all"]
    assert curve["yes_ratio"] == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert curve["recall"] == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert curve["precision"][4] == pytest.approx(1 / 4) and summary["baseline_f1"] == 0.4
    assert main(["dataset", "report", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "4 samples scored with 'pope-first-word', 5 errors" in out and "dataset cliff" in out


def test_disk_full_stops_with_one_line_and_keeps_what_was_written(
        reference, pope, tiny_paths, engines, tmp_path, capsys, monkeypatch):
    out = tmp_path / "full"
    real = results.ShardWriter.append
    calls = {"n": 0}

    def append(self, record):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        real(self, record)

    monkeypatch.setattr(results.ShardWriter, "append", append)
    argv = ["dataset", "run", str(pope), "--out", str(out), "--model", str(tiny_paths["a"]),
            "--device", "cpu", "--scoring", "same", "--strategies", STRATEGIES,
            "--max-new-tokens", "3", "--no-progress"]
    with threads(1):
        _bad(argv, capsys, "No space left on device; the samples already written are kept",
             code=1)
    assert shard_indices(out) == [0, 1]
    monkeypatch.setattr(results.ShardWriter, "append", real)
    with threads(1):
        assert main([*argv, "--resume"]) == 0
    assert samples(out) == samples(reference)


def test_toy_dataset_reproduces_the_model_card_curve(tmp_path):
    """The toy on its own held-out scenes: the curve of the card, within sampling error."""
    import flowtui
    from flowtui.toy.dataset import write_toy_dataset
    from flowtui.toy.evaluate import CARD_JSON

    card = json.loads(CARD_JSON.read_text())
    data = write_toy_dataset(tmp_path / "toy", n=24)
    first = json.loads(data.read_text().splitlines()[0])
    assert set(first) >= {"question_id", "image", "text", "label"} and first["label"] == "yes"
    engine = flowtui.load_engine(None, device="cpu", dtype="float32")
    src = open_dataset(data)
    with threads(1):
        summary = run_dataset(src, build_config(src, None, max_new_tokens=3), engine,
                              tmp_path / "r")
    acc = summary["strategies"]["all"]["accuracy"]
    ci = summary["strategies"]["all"]["ci95"]
    assert summary["scoring"] == "pope" and summary["samples"] == 24
    assert summary["baseline_accuracy"] == 1.0 == acc[-1]
    for k, want in enumerate(card["truncation_accuracy"]):
        assert ci[k][0] <= want <= ci[k][1], (k, acc[k], ci[k], want)
    assert abs(summary["dataset_cliff"] - card["cliff_layer"]) <= 1


def test_report_rewrites_a_lost_summary(reference, tmp_path, capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in reference.iterdir():
        if p.is_file() and p.name not in ("summary.json", "curves.csv", "samples.jsonl"):
            (copy / p.name).write_bytes(p.read_bytes())
    assert main(["dataset", "report", str(copy), "--json", "--no-plots"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["strategies"] == json.loads((reference / "summary.json").read_text())[
        "strategies"]
    assert samples(copy) == samples(reference)
    assert finalize(copy, delta=0.5)["delta"] == 0.5


@pytest.mark.parametrize("strategy, keep", [("all", None), ("top", 6), ("random", 6)])
def test_reruns_on_the_kept_positions_equal_the_full_pass(engines, strategy, keep, monkeypatch):
    """What makes a dataset sweep cheap: from layer K only the unmasked positions are run.
    It must give what the full, masked pass gives (geometry b: GQA, 5 layers)."""
    from support.images import random_image

    e = engines["b"]
    a = e.analyze(random_image(11), "Is there a red circle?", max_new_tokens=4, cam=False)
    st = e._state(a, lambda p: None)
    trunc = e._truncation(a, st, 2, strategy, keep, 5)
    kept = e._kept_positions(st, trunc)
    n_image = sum(end - start for start, end in a.groups["image"])
    assert kept is not None and len(kept) == len(a.tokens) - n_image + (keep or 0)
    fast = e.sweep(a, strategy=strategy, keep=keep, seed=5)
    monkeypatch.setattr(e.adapter, "reduced_rerun", False)
    assert e._kept_positions(st, trunc) is None
    full = e.sweep(a, strategy=strategy, keep=keep, seed=5)
    assert fast.answers == full.answers and fast.same.tolist() == full.same.tolist()
    assert np.allclose(fast.logprob, full.logprob, atol=1e-4)


def _rewrite_answers(run: Path, baseline: str, at_k0: str) -> None:
    """Doctor a finished run's stored answers (its own files, in the test's folder): the baseline
    answer and every strategy's answer at K = 0, so that the rules disagree on them."""
    for path in [*results.shard_paths(run), run / "samples.jsonl"]:
        recs = results.read_records(path)
        for r in recs:
            r["baseline"]["answer"] = baseline
            for s in r["strategies"].values():
                s["answers"][0] = at_k0
        path.write_text("".join(results.encode(r) for r in recs))


def test_report_rescores_a_finished_toy_run_without_the_model(tmp_path, capsys, monkeypatch):
    data, run = tmp_path / "toy", tmp_path / "run"
    assert main(["dataset", "toy", str(data), "--n", "6"]) == 0
    with threads(1):
        assert main(["dataset", "run", str(data / "pope.jsonl"), "--out", str(run), "--device",
                     "cpu", "--max-new-tokens", "2", "--no-progress"]) == 0
    own = json.loads((run / "summary.json").read_text())
    assert own["scoring"] == "pope" and own["samples"] == 6
    labels = [r["reference"] for r in results.read_records(run / "samples.jsonl")]
    assert labels == ["yes", "no"] * 3  # the toy dataset alternates its labels
    _rewrite_answers(run, baseline="No, there is not.", at_k0="Yes.")
    capsys.readouterr()
    before = _tree(run)

    # No model may be loaded: rescoring works from the stored answers alone.
    import flowtui.engine

    def no_model(*a, **k):
        raise AssertionError("rescoring loaded a model")

    monkeypatch.setattr(flowtui.engine, "load_engine", no_model)
    assert main(["dataset", "report", str(run), "--scoring", "pope-first-word"]) == 0
    out = capsys.readouterr().out
    assert "rescored with 'pope-first-word' (run with 'pope')" in out
    folder = run / "scoring-pope-first-word"
    assert sorted(p.name for p in folder.iterdir()) == [
        "accuracy.png", "cliffs.png", "curves.csv", "summary.json"]
    first = json.loads((folder / "summary.json").read_text())
    assert first["scoring"] == "pope-first-word" and first["rescored_from"]["scoring"] == "pope"
    # The first word: "No," is right on the 3 "no" labels, "Yes." at K = 0 on the 3 "yes" ones.
    assert first["baseline_accuracy"] == 0.5 and first["strategies"]["all"]["accuracy"][0] == 0.5
    assert first["baseline_yes_ratio"] == 0.0 and first["strategies"]["all"]["yes_ratio"][0] == 1
    assert first["strategies"]["all"]["precision"][0] == 0.5
    # lmms-eval's pope: neither "yes." nor "no, there is not." is a yes/no answer.
    assert main(["dataset", "report", str(run), "--scoring", "pope", "--json", "--no-plots"]) == 0
    strict = json.loads(capsys.readouterr().out)
    assert strict["baseline_accuracy"] == 0.0 and strict["strategies"]["all"]["accuracy"][0] == 0
    assert strict["strategies"]["all"]["recall"][0] == 0.0
    assert sorted(p.name for p in (run / "scoring-pope").iterdir()) == [
        "curves.csv", "summary.json"]
    # same: from the flags the run recorded; the baseline agrees with itself.
    assert main(["dataset", "report", str(run), "--scoring", "same", "--no-plots"]) == 0
    same = json.loads((run / "scoring-same" / "summary.json").read_text())
    recs = results.read_records(run / "samples.jsonl")
    flags = np.array([r["strategies"]["all"]["same"] for r in recs], dtype=float)
    assert same["baseline_accuracy"] == 1.0
    assert same["strategies"]["all"]["accuracy"] == pytest.approx(flags.mean(axis=0).tolist())
    assert "baseline_f1" not in same
    # The run's own files are only read.
    after = _tree(run)
    assert {k: v for k, v in after.items() if not k.startswith("scoring-")} == before
    # Rerunning replaces the rescored files only.
    assert main(["dataset", "report", str(run), "--scoring", "pope", "--no-plots"]) == 0
    capsys.readouterr()

    # Refused, one line and exit 2, nothing written: labels the rule cannot score, unknown
    # rules, the run's own folder, a folder holding something else.
    assert main(["dataset", "report", str(run), "--scoring", "choice"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1  # exactly one line
    assert captured.err.startswith("flowtui: error: --scoring choice cannot score 6 of the 6 "
                                   "scored samples' references in ")
    assert "(sample 0: label 'yes' is not an option letter or a 0-based index)" in captured.err
    _bad(["dataset", "report", str(run), "--scoring", "vqa"], capsys,
         "vqa needs at least 2 reference answers")
    _bad(["dataset", "report", str(run), "--scoring", "bleu"], capsys,
         "unknown scoring rule 'bleu'")
    _bad(["dataset", "report", str(run), "--scoring", "pope", "--out", str(run)], capsys,
         "is the run's own folder")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    _bad(["dataset", "report", str(run), "--scoring", "pope", "--out", str(tmp_path / "mine")],
         capsys, "not empty and holds no rescored summary")
    _bad(["dataset", "report", str(run), "--out", str(tmp_path / "x")], capsys,
         "--out goes with --scoring")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    assert not (run / "scoring-choice").exists() and not (run / "scoring-vqa").exists()
    assert {k: v for k, v in _tree(run).items() if not k.startswith("scoring-")} == before


def test_rescoring_a_run_without_answers_needs_same(tmp_path, capsys):
    folder = tmp_path / "d"
    write_pope(folder, 3)
    rows = [json.loads(x) for x in (folder / "pope.jsonl").read_text().splitlines()]
    data = folder / "nolabels.jsonl"
    data.write_text("".join(json.dumps({"image": r["image"], "question": r["text"]}) + "\n"
                            for r in rows))
    src = open_dataset(data)
    cfg = build_config(src, None, max_new_tokens=4)
    assert cfg.scoring == "same"
    run_dataset(src, cfg, FakeEngine(num_layers=4, cliff=2), tmp_path / "run")
    _bad(["dataset", "report", str(tmp_path / "run"), "--scoring", "exact"], capsys,
         "--scoring exact needs reference answers, but the run's data has none")
    assert main(["dataset", "report", str(tmp_path / "run"), "--scoring", "same"]) == 0
    s = json.loads((tmp_path / "run" / "scoring-same" / "summary.json").read_text())
    # FakeEngine keeps the baseline answer from K = 2 on.
    assert s["strategies"]["all"]["accuracy"] == [0.0, 0.0, 1.0, 1.0, 1.0]
