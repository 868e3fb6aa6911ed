"""Dataset-run benchmarks, measured side by side in one run.

    python bench/bench_dataset.py [--n 60] [--threads 1] [--skip-processes]

1. Samples/s of flowtui's per-sample work in `flowtui dataset run` (baseline analysis without
   the CAM backward, the sweep K = 0..L reusing the layers below K, scoring) against the naive
   way, as one benchmark run per K does it: for every K a separate truncated generation of the
   sample, L + 1 in all. Both run on the same toy scenes, interleaved sample by sample so a
   change in machine load hits both alike; the answers of the two are compared K by K.
2. The 2-process CPU speed-up: the same `flowtui dataset run` as 2 processes (torchrun, one
   thread each, as it sets by default) against 1 process (all cores, and 1 thread), timed by the
   run itself (provenance.json's run_seconds: first sample to last, no start-up).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def deep_model(folder: Path) -> Path:
    """bench_engine's deep tiny LLaVA: 24 layers, 576 image tokens, random weights."""
    sys.path.insert(0, str(HERE))
    from bench_engine import DEEP

    from flowtui.selftest.tiny_llava import build_tiny_llava

    return build_tiny_llava(folder / "deep", DEEP)


def per_sample(n: int, threads: int, max_new_tokens: int, model: str | None = None) -> dict:
    import numpy as np
    import torch

    import flowtui
    from flowtui.dataset.config import RunConfig
    from flowtui.dataset.readers import open_dataset
    from flowtui.dataset.runner import process_sample
    from flowtui.dataset.scoring import get_rule
    from flowtui.engine import attention
    from flowtui.toy.dataset import write_toy_dataset

    torch.set_num_threads(threads)
    engine = flowtui.load_engine(model, device="cpu", dtype="float32")
    L = engine.info.num_layers
    with tempfile.TemporaryDirectory() as tmp:
        src = open_dataset(write_toy_dataset(Path(tmp) / "toy", n=n))
        rows = [src.row(i) for i in range(n)]
        images = [flowtui.engine.images.load_image(r.image) for r in rows]
    config = RunConfig(data={}, model={}, scoring="pope", strategies=["all"],
                       max_new_tokens=max_new_tokens)
    rule, strategies = get_rule("pope"), config.strategy_list()

    def ours(i: int) -> list[str]:
        row = rows[i]
        row.image = images[i]
        rec = process_sample(engine, row, rule, strategies, config)
        return rec["strategies"]["all"]["answers"]

    def naive(i: int) -> list[str]:
        """L + 1 truncated generations from scratch, each with its own prefill."""
        _, inputs = engine._inputs(images[i], rows[i].question)
        ids = inputs["input_ids"][0].cpu().numpy()
        image = np.concatenate([np.arange(s, e) for s, e in engine.adapter.image_spans(ids)])
        answers = []
        for K in range(L + 1):
            with attention.truncated(attention.Truncation(K, torch.as_tensor(image))):
                out = engine._generate(inputs, max_new_tokens)
            answers.append(engine._decode(engine._split_eos(out)[0]))
        return answers

    ours(0), naive(0)  # warm-up
    t = {"ours": 0.0, "naive": 0.0}
    cpu = {"ours": 0.0, "naive": 0.0}
    mismatches = 0
    for i in range(n):
        got = {}
        for name, fn in (("ours", ours), ("naive", naive)):
            w, c = time.perf_counter(), time.process_time()
            got[name] = fn(i)
            t[name] += time.perf_counter() - w
            cpu[name] += time.process_time() - c
        mismatches += sum(a != b for a, b in zip(got["ours"], got["naive"], strict=True))
    return {"model": engine.info.name, "samples": n, "layers": L, "threads": threads, "max_new_tokens": max_new_tokens,
            "ours_samples_per_s": n / t["ours"], "naive_samples_per_s": n / t["naive"],
            "time_ratio": t["ours"] / t["naive"], "cpu_ratio": cpu["ours"] / cpu["naive"],
            "answers_differing": mismatches, "answers_compared": n * (L + 1), "target_ratio": 0.5}


def run_cli(data: Path, out: Path, procs: int, threads: int | None, n: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    args = ["-m", "flowtui", "dataset", "run", str(data), "--out", str(out), "--device", "cpu",
            "--max-new-tokens", "3", "--limit", str(n), "--no-progress"]
    if procs == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs),
               "--master-port", str(29400 + os.getpid() % 500), *args]
    wall = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - wall
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    session = json.loads((out / "provenance.json").read_text())["sessions"][-1]
    return {"processes": procs, "threads_each": threads or "default", "run_seconds":
            session["run_seconds"], "samples_per_s": n / session["run_seconds"],
            "command_seconds": wall}


def processes(n: int) -> dict:
    from flowtui.toy.dataset import write_toy_dataset

    with tempfile.TemporaryDirectory() as tmp:
        data = write_toy_dataset(Path(tmp) / "toy", n=n)
        runs = [run_cli(data, Path(tmp) / "one", 1, None, n),
                run_cli(data, Path(tmp) / "one1", 1, 1, n),
                run_cli(data, Path(tmp) / "two", 2, 1, n)]
        same = (Path(tmp) / "one" / "samples.jsonl").read_text().count("\n") == n
        a = [json.loads(x)["strategies"] for x in (Path(tmp) / "one" / "samples.jsonl")
             .read_text().splitlines()]
        b = [json.loads(x)["strategies"] for x in (Path(tmp) / "two" / "samples.jsonl")
             .read_text().splitlines()]
    return {"runs": runs, "speedup_vs_1_process_default_threads":
            runs[0]["run_seconds"] / runs[2]["run_seconds"],
            "speedup_vs_1_process_1_thread": runs[1]["run_seconds"] / runs[2]["run_seconds"],
            "answers_equal": same and [s["all"]["answers"] for s in a] ==
            [s["all"]["answers"] for s in b]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=60, help="toy samples for the sweep comparison")
    p.add_argument("--n-processes", type=int, default=120, help="toy samples for the 2-process run")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (comparison 1)")
    p.add_argument("--max-new-tokens", type=int, default=3)
    p.add_argument("--skip-processes", action="store_true")
    p.add_argument("--deep", type=int, default=0, metavar="N",
                   help="also compare on N samples with a 24-layer random LLaVA (576 image tokens)")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    res = {"sweep": per_sample(args.n, args.threads, args.max_new_tokens)}
    print(json.dumps(res, indent=1), flush=True)
    if args.deep:
        with tempfile.TemporaryDirectory() as tmp:
            res["sweep_deep"] = per_sample(args.deep, args.threads, args.max_new_tokens,
                                           str(deep_model(Path(tmp))))
        print(json.dumps({"sweep_deep": res["sweep_deep"]}, indent=1), flush=True)
    if not args.skip_processes:
        res["processes"] = processes(args.n_processes)
        print(json.dumps({"processes": res["processes"]}, indent=1), flush=True)
    print("\nsummary")
    for key in ("sweep", "sweep_deep"):
        if key not in res:
            continue
        s = res[key]
        print(f"  {s['model']} (L={s['layers']}), flowtui vs L+1 truncated generations: "
              f"{s['ours_samples_per_s']:.2f} vs {s['naive_samples_per_s']:.2f} samples/s = "
              f"{s['time_ratio']:.2f} of the naive time (CPU time {s['cpu_ratio']:.2f}; target "
              f"<= 0.5); answers differing {s['answers_differing']}/{s['answers_compared']}")
    if "processes" in res:
        q = res["processes"]
        print(f"  2 processes vs 1: {q['speedup_vs_1_process_default_threads']:.2f}x (1 process "
              f"on all cores), {q['speedup_vs_1_process_1_thread']:.2f}x (1 process, 1 thread); "
              f"same answers: {q['answers_equal']}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
