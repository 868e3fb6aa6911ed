"""Dataset-run benchmarks, measured side by side in one run.

    python bench/bench_dataset.py [--n 60] [--threads 1] [--skip-processes]

1. Samples/s of flowtui's per-sample work in `flowtui dataset run` (baseline analysis without
   the CAM backward, the sweep K = 0..L reusing the layers below K, scoring) against the naive
   way, as one benchmark run per K does it: for every K a separate truncated generation of the
   sample, L + 1 in all. Both run on the same toy scenes, interleaved sample by sample so a
   change in machine load hits both alike; the answers of the two are compared K by K.
   With --qwen N, the same on N scenes with a Qwen2.5-VL-shaped random model whose images
   come as 1,024 merged tokens (M-RoPE, GQA, 16 layers): the sweep with the reduced rerun (layers
   K..L-1 on the kept positions only), the same sweep on the full sequence, and the naive L + 1
   generations, side by side, with their ratios and answers compared.
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


QWEN_LAYERS, QWEN_HIDDEN = 16, 128
QWEN_TOKENS = 1024  # merged image tokens per image (32 x 32 for a square one)


def qwen_model(folder: Path) -> Path:
    """A random Qwen2.5-VL-shaped model: flowtui/selftest/tiny/qwen2_5_vl.py's vision tower (window
    attention, 2x2 merge), template and M-RoPE, a deeper and wider text model, and min = max
    pixels, so that every image is smart-resized to about QWEN_TOKENS merged tokens."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
    )

    from flowtui.selftest.tiny import qwen2_vl as base
    from flowtui.selftest.tiny.common import save

    tok = base.tokenizer()
    heads = 4
    # M-RoPE sections (temporal, height, width) over half the head dimension, as 7B's 16/24/24.
    half = QWEN_HIDDEN // heads // 2
    rope = {"rope_type": "default", "rope_theta": 1000000.0,
            "mrope_section": [half // 4, 3 * half // 8, 3 * half // 8]}
    text = {**base.text_config(tok, rope_parameters=rope), "hidden_size": QWEN_HIDDEN,
            "intermediate_size": 4 * QWEN_HIDDEN, "num_hidden_layers": QWEN_LAYERS,
            "num_attention_heads": heads, "num_key_value_heads": 2,
            "max_position_embeddings": 4096}
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                           out_hidden_size=QWEN_HIDDEN, patch_size=base.PATCH,
                           spatial_merge_size=2, temporal_patch_size=base.TEMPORAL,
                           window_size=112, fullatt_block_indexes=[1]),
        tie_word_embeddings=False, **base.token_ids(tok))
    model = base.build_model(Qwen2_5_VLForConditionalGeneration, config, tok, seed=2,
                             scale=40.0, qk_scale=8.0)
    pixels = 28 * 28 * QWEN_TOKENS
    processor = base.processor_for(Qwen2_5_VLProcessor, tok, base.PATCH, pixels, pixels)
    return save(model, processor, folder / "qwen2_5_vl", processor_class="Qwen2_5_VLProcessor")


def _toy_rows(n: int) -> tuple[list, list]:
    import flowtui
    from flowtui.dataset.readers import open_dataset
    from flowtui.toy.dataset import write_toy_dataset

    with tempfile.TemporaryDirectory() as tmp:
        src = open_dataset(write_toy_dataset(Path(tmp) / "toy", n=n))
        rows = [src.row(i) for i in range(n)]
        images = [flowtui.engine.images.load_image(r.image) for r in rows]
    return rows, images


def _naive(engine, image, question: str, max_new_tokens: int) -> list[str]:
    """L + 1 truncated generations from scratch, each with its own prefill (and vision tower)."""
    import numpy as np
    import torch

    from flowtui.engine import attention

    _, inputs = engine._inputs(image, question)
    ids = inputs["input_ids"][0].cpu().numpy()
    masked = np.concatenate([np.arange(s, e) for s, e in engine.adapter.image_spans(ids)])
    answers = []
    for K in range(engine.info.num_layers + 1):
        with attention.truncated(attention.Truncation(K, torch.as_tensor(masked))):
            out = engine._generate(inputs, max_new_tokens)
        answers.append(engine._decode(engine._split_eos(out)[0]))
    return answers


def reduced_vs_full(n: int, threads: int, max_new_tokens: int, model: str) -> dict:
    """Per sample, interleaved: the baseline analysis (as `dataset run` makes it: no CAM,
    self-checks on), its sweep K = 0..L with the reduced rerun, the same sweep on the full
    sequence (reduced rerun refused), and the naive L + 1 generations."""
    import torch

    import flowtui

    torch.set_num_threads(threads)
    engine = flowtui.load_engine(model, device="cpu", dtype="float32")
    L = engine.info.num_layers
    rows, images = _toy_rows(n)
    reduced = engine._kept_positions

    def analysis(i: int):
        return engine.analyze(images[i], rows[i].question, max_new_tokens=max_new_tokens,
                              cam=False)

    def sweep(a, on: bool) -> list[str]:
        engine._kept_positions = reduced if on else (lambda _st, _t: None)
        try:
            return engine.sweep(a).answers
        finally:
            engine._kept_positions = reduced

    a0 = analysis(0)  # warm-up
    sweep(a0, True), sweep(a0, False), _naive(engine, images[0], rows[0].question, 1)
    t = dict.fromkeys(("analysis", "reduced", "full", "naive"), 0.0)
    differing = {"full": 0, "naive": 0}
    tokens, failed = [], 0
    for i in range(n):
        w = time.perf_counter()
        a = analysis(i)
        t["analysis"] += time.perf_counter() - w
        tokens.append((len(a.feature_positions), len(a.image_positions), len(a.tokens)))
        failed += len(a.failed_checks)
        got = {}
        for name in ("reduced", "full", "naive"):
            w = time.perf_counter()
            got[name] = (_naive(engine, images[i], rows[i].question, max_new_tokens)
                         if name == "naive" else sweep(a, name == "reduced"))
            t[name] += time.perf_counter() - w
        for name in differing:
            differing[name] += sum(x != y for x, y in zip(got["reduced"], got[name], strict=True))
    feats, image, total = (min(x[j] for x in tokens) for j in range(3))
    return {"model": "random Qwen2.5-VL-shaped", "samples": n, "layers": L, "threads": threads,
            "max_new_tokens": max_new_tokens, "min_feature_tokens": feats,
            "min_image_positions": image, "min_sequence": total, "seconds": t,
            "sweep_reduced_vs_full": t["reduced"] / t["full"],
            "sweep_reduced_vs_naive": t["reduced"] / t["naive"],
            "sample_reduced_vs_naive": (t["analysis"] + t["reduced"]) / t["naive"],
            "sample_full_vs_naive": (t["analysis"] + t["full"]) / t["naive"],
            "target_sample_vs_naive": 0.3, "answers_compared": n * (L + 1),
            "answers_differing": differing, "failed_self_checks": failed}


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
    p.add_argument("--qwen", type=int, default=0, metavar="N",
                   help="also compare reduced vs full-pass sweeps vs naive generations on N "
                        f"samples with a {QWEN_LAYERS}-layer random Qwen2.5-VL "
                        f"({QWEN_TOKENS} image tokens)")
    p.add_argument("--only-qwen", action="store_true",
                   help="run only the --qwen comparison (no toy sweep, no processes)")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    res: dict = {}
    if args.only_qwen:
        args.skip_processes = True
    else:
        res["sweep"] = per_sample(args.n, args.threads, args.max_new_tokens)
        print(json.dumps(res, indent=1), flush=True)
    if args.qwen:
        with tempfile.TemporaryDirectory() as tmp:
            res["qwen"] = reduced_vs_full(args.qwen, args.threads, args.max_new_tokens,
                                          str(qwen_model(Path(tmp))))
        print(json.dumps({"qwen": res["qwen"]}, indent=1), flush=True)
    if args.deep and not args.only_qwen:
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
    if "qwen" in res:
        q = res["qwen"]
        sec = q["seconds"]
        print(f"  {q['model']} (L={q['layers']}, {q['min_feature_tokens']}+ image tokens of "
              f"{q['min_sequence']}+), {q['samples']} samples, seconds: analysis "
              f"{sec['analysis']:.1f}, sweep reduced {sec['reduced']:.1f}, sweep full "
              f"{sec['full']:.1f}, naive {sec['naive']:.1f}")
        print(f"    sweep reduced / full = {q['sweep_reduced_vs_full']:.3f}; sweep reduced / naive "
              f"= {q['sweep_reduced_vs_naive']:.3f}; per sample (analysis + sweep) / naive: "
              f"reduced {q['sample_reduced_vs_naive']:.3f}, full {q['sample_full_vs_naive']:.3f} "
              f"(target <= 0.3); answers differing from the reduced sweep's "
              f"{q['answers_differing']} of {q['answers_compared']}; failed self-checks "
              f"{q['failed_self_checks']}")
    if "processes" in res:
        q = res["processes"]
        print(f"  2 processes vs 1: {q['speedup_vs_1_process_default_threads']:.2f}x (1 process "
              f"on all cores), {q['speedup_vs_1_process_1_thread']:.2f}x (1 process, 1 thread); "
              f"same answers: {q['answers_equal']}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
