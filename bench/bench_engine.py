"""Engine benchmarks: one-pass CAM, share capture cost, and sweep reuse, measured side by side.

    python bench/bench_engine.py            # CPU, a deep tiny LLaVA (24 layers, 576 image tokens)
    python bench/bench_engine.py --device cuda --llava7b   # also a LLaVA-1.5-7B-shaped model

Prints numbers and ratios against the targets; see bench/README.md for recorded results.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
import flowtui  # noqa: E402
from flowtui.engine import attention  # noqa: E402
from flowtui.engine.analysis import GROUPS  # noqa: E402
from flowtui.selftest.tiny_llava import Geometry, build_tiny_llava  # noqa: E402

DEEP = Geometry("deep", image_size=336, patch_size=14, system_prompt="you are a helpful model .",
                num_layers=24, num_heads=4, num_kv_heads=4, hidden=128, vision_hidden=32,
                max_positions=1024)


def timed(fn, repeat: int = 3) -> float:
    """Median wall time of `repeat` calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def image(seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))


def inputs_for(engine, question: str, answer_len: int = 4):
    """Teacher-forced model inputs for prompt + a made-up answer, the prompt length, the token
    groups and the feature positions, as the engine builds them."""
    _, inputs = engine._inputs(image(), question)
    ids = inputs["input_ids"][0].cpu().numpy()
    full = engine.adapter.teacher_forced(inputs, [int(ids[-1])] * answer_len)
    groups = engine._groups(ids, answer_len)
    return full, len(ids), groups, engine.adapter.feature_positions(ids)


def cam_one_pass_vs_loop(engine) -> dict:
    full, P, groups, feats = inputs_for(engine, "is there a red circle ?")
    ids = full["input_ids"]
    T = ids.shape[1] - P
    one = timed(lambda: engine._capture(full, P, T, groups, feats, lambda p: None), repeat=2)
    layers = list(engine.adapter.layers)

    def loop():  # the paper's scripts: one forward + backward per layer
        for layer in layers:
            saved = {}
            h1 = engine.adapter.cam_site(layer).register_forward_hook(
                lambda _m, _a, out, saved=saved: saved.setdefault("a", out))
            h2 = engine.model.get_input_embeddings().register_forward_hook(
                lambda _m, _a, out: out.detach().requires_grad_(True))
            with torch.enable_grad():
                logits = engine.model(**full, use_cache=False).logits[0]
                idx = torch.arange(P - 1, P - 1 + T)
                target = logits[idx, ids[0, P:]].sum()
                (g,) = torch.autograd.grad(target, [saved["a"]])
            h1.remove()
            h2.remove()

    def paper_loop():  # as the paper's script runs it: every parameter requires grad, backward()
        engine.model.requires_grad_(True)
        try:
            for layer in layers:
                saved = {}

                def keep(_m, _a, out, saved=saved):
                    out.retain_grad()
                    saved["a"] = out

                h = engine.adapter.cam_site(layer).register_forward_hook(keep)
                engine.model.zero_grad(set_to_none=True)
                with torch.enable_grad():
                    logits = engine.model(**full, use_cache=False).logits[0]
                    idx = torch.arange(P - 1, P - 1 + T)
                    logits[idx, ids[0, P:]].sum().backward()
                _ = saved["a"].grad
                h.remove()
        finally:
            engine.model.requires_grad_(False)
            engine.model.zero_grad(set_to_none=True)

    loop_t = timed(loop, repeat=1)
    paper_t = timed(paper_loop, repeat=1)
    L = len(layers)
    return {"tokens": ids.shape[1], "layers": L, "one_pass_s": one,
            "paper_loop_s": paper_t, "speedup_vs_paper_loop": paper_t / one,
            "activation_only_loop_s": loop_t, "speedup_vs_activation_only_loop": loop_t / one,
            "target_speedup": 0.8 * L}


def capture_overhead(engine) -> dict:
    full, P, groups, feats = inputs_for(engine, "is there a red circle ?")
    T = full["input_ids"].shape[1] - P

    def plain():
        with torch.no_grad():
            engine.model(**full, use_cache=False, logits_to_keep=T + 1)

    def captured():
        cap = attention.ShareCapture.for_groups(groups, GROUPS, T, feats)
        with torch.no_grad(), attention.capturing(cap):
            engine.model(**full, use_cache=False, logits_to_keep=T + 1)

    # Interleave to spread noise from other processes evenly.
    a, b = [], []
    for _ in range(7):
        a.append(timed(plain, 1))
        b.append(timed(captured, 1))
    pa, pb = statistics.median(a), statistics.median(b)
    return {"tokens": full["input_ids"].shape[1], "plain_forward_s": pa, "with_share_capture_s": pb,
            "overhead": pb / pa - 1, "target_overhead": 0.10}


MEMORY_CHILD = r"""
import json, resource, sys, torch
sys.path.insert(0, {tests!r}); sys.path.insert(0, {bench!r})
from bench_engine import inputs_for
import flowtui
from flowtui.engine import attention
from flowtui.engine.analysis import GROUPS
from transformers import AutoModelForImageTextToText
mode = {mode!r}
engine = flowtui.load_engine({path!r}, device="cpu", dtype="float32")
question = " ".join(["is there a red circle in the picture ?"] * {repeats})
full, P, groups, feats = inputs_for(engine, question)
T = full["input_ids"].shape[1] - P
if mode == "eager":
    model = AutoModelForImageTextToText.from_pretrained({path!r}, attn_implementation="eager").eval()
else:
    model = engine.model
with torch.no_grad():  # a warm plain forward first: extra memory is measured above its peak
    engine.model(**full, use_cache=False, logits_to_keep=T + 1)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with torch.no_grad():
    if mode == "eager":
        out = model(**full, use_cache=False, logits_to_keep=T + 1, output_attentions=True)
    elif mode == "capture":
        cap = attention.ShareCapture.for_groups(groups, GROUPS, T, feats)
        with attention.capturing(cap):
            out = model(**full, use_cache=False, logits_to_keep=T + 1)
    else:
        out = model(**full, use_cache=False, logits_to_keep=T + 1)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"tokens": full["input_ids"].shape[1], "base_kb": base, "peak_kb": peak}}))
"""


def capture_memory(path: Path, repeats: int = 300) -> dict:
    """Peak RSS above a plain forward at ~3,000 tokens, each mode in a fresh process."""
    res = {}
    for mode in ("plain", "capture", "eager"):
        code = MEMORY_CHILD.format(tests=str(HERE.parent / "tests"), bench=str(HERE), mode=mode,
                                   path=str(path), repeats=repeats)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        res[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    extra = {m: (r["peak_kb"] - r["base_kb"]) / 1024 for m, r in res.items()}
    L, H, N = DEEP.num_layers, DEEP.num_heads, res["plain"]["tokens"]
    return {"tokens": N, "plain_forward_extra_mb": extra["plain"],
            "capture_extra_mb": extra["capture"], "eager_attentions_extra_mb": extra["eager"],
            "ratio": max(extra["capture"], 0.0) / extra["eager"], "target_ratio": 0.05,
            # What the capture keeps by design: one [H, T, N] float32 block per layer at a time.
            "capture_transient_mb_by_design": H * 4 * N * 4 / 2**20,
            "eager_attentions_mb_by_design": L * H * N * N * 4 / 2**20}


def sweep_vs_independent(engine, max_new_tokens: int = 6) -> dict:
    question = "what colour is the shape ?"
    a = engine.analyze(image(1), question, max_new_tokens=max_new_tokens)
    L = a.num_layers
    sweep_t = timed(lambda: engine.sweep(a), repeat=1)
    st = engine._state(a, lambda p: None)
    _, prompt_inputs = engine._inputs(image(1), question)

    def independent():  # L+1 plain truncated generations, each with its own prefill
        for K in range(L + 1):
            trunc = engine._truncation(a, st, K, "all", None, 0)
            with attention.truncated(trunc):
                engine._generate(prompt_inputs, max_new_tokens)

    def independent_scored():  # ... plus the teacher-forced log-prob each run records
        independent()
        for K in range(L + 1):
            trunc = engine._truncation(a, st, K, "all", None, 0)
            with torch.no_grad(), attention.truncated(trunc):
                engine.model(**st.full, use_cache=False,
                             logits_to_keep=len(a.answer_token_ids) + 1)

    gen_t = timed(independent, repeat=1)
    scored_t = timed(independent_scored, repeat=1)
    return {"layers": L, "answer_tokens": len(a.answer_token_ids),
            "departing_K": int((~a.sweep_same).sum()), "sweep_s": sweep_t,
            "independent_generations_s": gen_t, "ratio_vs_generations": sweep_t / gen_t,
            "independent_generations_and_scoring_s": scored_t,
            "ratio_vs_generations_and_scoring": sweep_t / scored_t, "target_ratio": 0.6}


def llava7b(device: str) -> dict:
    """A LLaVA-1.5-7B-shaped model with random bf16 weights: full analysis time and memory."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    tmp = Path(tempfile.mkdtemp())
    small = build_tiny_llava(tmp / "proc", DEEP)  # processor only: word-level tokenizer
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16, image_size=336, patch_size=14,
                              projection_dim=768)
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(small)
    text = LlamaConfig(vocab_size=max(32064, len(proc.tokenizer)), hidden_size=4096,
                       intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, max_position_embeddings=4096)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_id=proc.tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy="default", vision_feature_layer=-2)
    with torch.device(device):
        model = LlavaForConditionalGeneration(config).to(torch.bfloat16).eval()
    model.requires_grad_(False)
    from flowtui.engine.analysis import ModelInfo
    from flowtui.engine.families import adapter_for
    from flowtui.engine.local import LocalEngine

    adapter = adapter_for(model, proc)
    engine = LocalEngine(model, proc, adapter, ModelInfo("llava-1.5-7b-shaped", "llava", 32, 32,
                                                         "bfloat16", device))
    q = "is there a red circle in the picture ?"
    engine.analyze(image(), q, max_new_tokens=8)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    a = engine.analyze(image(), q, max_new_tokens=8)
    torch.cuda.synchronize()
    analyze_s = time.perf_counter() - t
    t = time.perf_counter()
    engine.sweep(a)
    torch.cuda.synchronize()
    return {"tokens": len(a.tokens), "answer_tokens": len(a.answer_token_ids),
            "analyze_s": analyze_s, "sweep_s": time.perf_counter() - t,
            "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30, "target_analyze_s": 1.5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--llava7b", action="store_true", help="also time a 7B-shaped model (GPU)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--only-cam", action="store_true", help="only the CAM comparison")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {args.device}")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_llava(Path(tmp) / "deep", DEEP)
        engine = flowtui.load_engine(str(path), device=args.device, dtype="float32")
        results = {"cam": cam_one_pass_vs_loop(engine)}
        print(json.dumps(results, indent=1), flush=True)
        if args.only_cam:
            return
        results["share_capture"] = capture_overhead(engine)
        print(json.dumps({"share_capture": results["share_capture"]}, indent=1), flush=True)
        if not args.skip_memory:
            results["share_memory"] = capture_memory(path)
            print(json.dumps({"share_memory": results["share_memory"]}, indent=1), flush=True)
        results["sweep"] = sweep_vs_independent(engine)
        print(json.dumps({"sweep": results["sweep"]}, indent=1), flush=True)
    if args.llava7b:
        results["llava7b"] = llava7b(args.device)
        print(json.dumps({"llava7b": results["llava7b"]}, indent=1), flush=True)
    c, s, w = results["cam"], results["share_capture"], results["sweep"]
    print("\nsummary")
    print(f"  CAM one pass vs the paper's per-layer loop: {c['speedup_vs_paper_loop']:.1f}x faster "
          f"(target >= {c['target_speedup']:.1f}x, L={c['layers']}); vs an activation-only loop: "
          f"{c['speedup_vs_activation_only_loop']:.1f}x")
    print(f"  share capture time overhead: {100 * s['overhead']:+.1f}% (target <= +10%)")
    if "share_memory" in results:
        m = results["share_memory"]
        print(f"  share capture extra memory at {m['tokens']} tokens: {m['capture_extra_mb']:.1f} MB "
              f"vs eager output_attentions {m['eager_attentions_extra_mb']:.0f} MB "
              f"= {100 * m['ratio']:.2f}% (target <= 5%)")
    print(f"  sweep vs L+1 independent generations: {w['ratio_vs_generations']:.2f} "
          f"(with their scoring passes: {w['ratio_vs_generations_and_scoring']:.2f}; target <= 0.6)")


if __name__ == "__main__":
    main()
