"""Self-checks: every analysis checks that flowtui's reruns reproduce the model's own pass.

Each check is shown to pass on a healthy model and to fail, naming itself, when the thing it
watches is broken: transformers' cache (a fault injected into the installed package's class),
flowtui's LM head (as transformers 5.25 broke it for Aya Vision), the reduced rerun, stored
arrays. Headless, a failed check exits 3 after writing the snapshot; dataset runs count them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from support.images import random_image

from flowtui.engine import selfcheck
from flowtui.engine.snapshot import load_snapshot

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_images" / "toy_scene_1.png"
FAULTS = Path(__file__).parents[1] / "support" / "faults"

ALWAYS = {"answer-is-argmax", "rerun-reproduces-baseline", "cached-decoding-reproduces-baseline",
          "shares-sum-to-one", "finite"}


def _analyze(engine, seed: int = 3, **kw):
    return engine.analyze(random_image(seed), "Is there a red circle?", max_new_tokens=5, **kw)


def _failed(a) -> set[str]:
    return {c.name for c in a.failed_checks}


def test_every_check_runs_and_passes_on_a_healthy_model(engines):
    a = _analyze(engines["a"])
    names = [c.name for c in a.checks]
    # LLaVA runs the reduced rerun, so its comparison with the full pass is there too.
    assert set(names) == ALWAYS | {"reduced-rerun-equals-full"}
    assert set(names) <= set(selfcheck.NAMES)
    assert not a.failed_checks, [c.describe() for c in a.failed_checks]
    rerun = next(c for c in a.checks if c.name == "rerun-reproduces-baseline")
    assert rerun.numbers["logprob"] == pytest.approx(float(np.sum(a.answer_logprobs)), abs=1e-4)
    assert rerun.numbers["max_relative_logit_diff"] < 1e-5


def test_no_self_check_skips_them(engines):
    assert _analyze(engines["a"], self_check=False).checks == []


def test_a_broken_cache_fails_the_cached_decoding_check(engines, monkeypatch):
    import transformers.cache_utils as cu

    original = cu.DynamicLayer.update

    def corrupt(self, key_states, value_states, *args, **kwargs):
        k, v = original(self, key_states, value_states, *args, **kwargs)
        return k, v * 1.5

    monkeypatch.setattr(cu.DynamicLayer, "update", corrupt)
    a = _analyze(engines["a"])
    assert "cached-decoding-reproduces-baseline" in _failed(a)
    check = next(c for c in a.checks if c.name == "cached-decoding-reproduces-baseline")
    assert check.numbers["max_relative_logit_diff"] > check.numbers["tolerance"]


def test_a_head_that_differs_from_the_models_fails_the_rerun_check(engines, monkeypatch):
    """What transformers 5.25 did to Aya Vision: its forward scaled the logits, flowtui's head
    did not. The recording pass uses the model's own head; every rerun uses flowtui's."""
    engine = engines["a"]
    head = engine.adapter.logits
    monkeypatch.setattr(engine.adapter, "logits", lambda h: head(h) * 1.25)
    a = _analyze(engine)
    assert "rerun-reproduces-baseline" in _failed(a)
    assert "answer-is-argmax" not in _failed(a)


def test_a_wrong_reduced_rerun_fails_its_check(engines, monkeypatch):
    engine = engines["a"]
    kept = engine._logits_from_layer_kept

    def off(st, trunc, keep):
        logits, kv = kept(st, trunc, keep)
        return logits + 0.5 * logits.abs().max(), kv

    monkeypatch.setattr(engine, "_logits_from_layer_kept", off)
    a = _analyze(engine)
    assert _failed(a) == {"reduced-rerun-equals-full"}


def test_a_check_that_raises_is_a_failed_check_not_a_failed_analysis(engines, monkeypatch):
    engine = engines["a"]

    def boom(*_a, **_k):
        raise RuntimeError("the cache API moved\nsecond line")

    monkeypatch.setattr(engine, "_cached_step", boom)
    a = _analyze(engine)
    check = next(c for c in a.checks if c.name == "cached-decoding-reproduces-baseline")
    assert not check.passed and check.detail == "raised RuntimeError: the cache API moved"


def test_stored_arrays_are_checked(engines):
    a = _analyze(engines["a"], self_check=False)
    a.shares = a.shares.copy()
    a.shares[2] *= 0.5
    a.cam_tokens = a.cam_tokens.copy()
    a.cam_tokens[0, 0] = np.nan
    checks = {c.name: c for c in selfcheck._stored(a)}
    assert not checks["shares-sum-to-one"].passed and "layer 2" in checks["shares-sum-to-one"].detail
    assert not checks["finite"].passed and "cam_tokens" in checks["finite"].detail


def test_checks_travel_in_the_snapshot(engines, tmp_path, monkeypatch):
    engine = engines["a"]
    head = engine.adapter.logits
    monkeypatch.setattr(engine.adapter, "logits", lambda h: head(h) * 1.25)
    a = _analyze(engine)
    path = tmp_path / "s.flowtui"
    a.save(path)
    back = load_snapshot(path)
    assert [(c.name, c.passed, c.numbers) for c in back.checks] == [
        (c.name, c.passed, c.numbers) for c in a.checks]
    with zipfile.ZipFile(path) as z:
        manifest = json.loads(z.read("manifest.json"))
    assert {c["name"] for c in manifest["checks"] if not c["passed"]} == _failed(a)


def _cli(*args: str, cwd: Path, fault: bool) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if fault:  # transformers' cache broken inside the installed package, for this process
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FAULTS), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "flowtui", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_headless_exits_3_naming_the_check_after_writing_the_snapshot(tmp_path):
    out = tmp_path / "s.flowtui"
    r = _cli(str(SAMPLE), "Is there a red circle?", "--headless", "--out", str(out),
             cwd=tmp_path, fault=True)
    assert r.returncode == 3, r.stderr
    failed = [line for line in r.stderr.splitlines() if line.startswith("flowtui: self-check")]
    assert len(failed) == 1 and "cached-decoding-reproduces-baseline" in failed[0]
    assert "FAILED: cached-decoding-reproduces-baseline" in r.stdout
    assert {c.name for c in load_snapshot(out).failed_checks} == {
        "cached-decoding-reproduces-baseline"}
    # The same run on a healthy install: exit 0, every check passed and said so.
    ok = _cli(str(SAMPLE), "Is there a red circle?", "--headless", "--out", str(out),
              cwd=tmp_path, fault=False)
    assert ok.returncode == 0, ok.stderr
    assert "6 of 6 self-checks passed" in ok.stdout
    skipped = _cli(str(SAMPLE), "Is there a red circle?", "--headless", "--out", str(out),
                   "--no-self-check", cwd=tmp_path, fault=True)
    assert skipped.returncode == 0 and load_snapshot(out).checks == []


@pytest.mark.slow
def test_dataset_runs_record_and_count_failed_checks(tmp_path):
    data = tmp_path / "toy"
    assert _cli("dataset", "toy", str(data), "--n", "3", cwd=tmp_path, fault=False).returncode == 0
    run = tmp_path / "run"
    files = [p for p in data.iterdir() if p.suffix == ".jsonl"]
    r = _cli("dataset", "run", str(files[0]), "--out", str(run), "--no-progress",
             "--scoring", "same", cwd=tmp_path, fault=True)
    assert r.returncode == 0, r.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["self_check_failures"] == summary["samples"] == 3
    records = [json.loads(line) for p in run.glob("results*.jsonl")
               for line in p.read_text().splitlines() if line.strip()]
    assert all("cached-decoding-reproduces-baseline" in r["self_check_failures"][0]
               for r in records)
    assert "3 samples failed a self-check" in r.stdout + r.stderr
