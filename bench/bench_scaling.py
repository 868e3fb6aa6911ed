"""Analysis time and peak memory against sequence length, on a tiny Qwen2.5-VL-shaped model.

    python bench/bench_scaling.py                 # 1k, 2k, 4k, 8k image tokens (CPU)
    python bench/bench_scaling.py --tokens 1024 2048 --device cuda

A full analysis (greedy answer, attention shares and head shares, attention maps, LLaVA-CAM of
every layer from one forward + one backward) at each length, each in a fresh process, printed
beside a plain forward + backward of the same model (what any gradient method costs) and beside
what eager `output_attentions` needs for the attention matrices alone (L x H x N x N floats,
measured where it fits, else computed). flowtui keeps only the answer rows of attention, so its
time and memory should grow linearly with the image tokens, not quadratically.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Image sizes whose smart resize gives exactly N image tokens (28 px per merged token).
SIZES = {1024: (896, 896), 2048: (1792, 896), 4096: (1792, 1792), 8192: (3584, 1792)}

BUILD = r"""
import sys, torch
sys.path.insert(0, {tests!r})
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
from flowtui.selftest.tiny import qwen2_vl as base
from flowtui.selftest.tiny.common import save
tok = base.tokenizer()
rope = {{"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]}}
text = base.text_config(tok, rope_parameters=rope)
text.update(hidden_size={hidden}, intermediate_size={hidden} * 4, num_hidden_layers={layers},
            num_attention_heads={hidden} // 64, num_key_value_heads=max(1, {hidden} // 256),
            max_position_embeddings=16384)
# All vision blocks windowed (no full-attention block): the tower stays linear in the image.
config = Qwen2_5_VLConfig(
    text_config=text,
    vision_config=dict(depth=1, hidden_size=64, intermediate_size=128, num_heads=2,
                       out_hidden_size={hidden}, patch_size=14, spatial_merge_size=2,
                       temporal_patch_size=2, window_size=112, fullatt_block_indexes=[]),
    tie_word_embeddings=False, **base.token_ids(tok))
model = base.build_model(Qwen2_5_VLForConditionalGeneration, config, tok, 0, 1.0)
processor = base.processor_for(Qwen2_5_VLProcessor, tok, 14, 28 * 28 * 4, 28 * 28 * 9000)
save(model, processor, __import__("pathlib").Path({path!r}), processor_class="Qwen2_5_VLProcessor")
"""

CHILD = r"""
import json, resource, sys, time, numpy as np, torch
from PIL import Image
sys.path.insert(0, {tests!r})
import flowtui
from flowtui.engine.analysis import GROUPS
mode, device, measure = {mode!r}, {device!r}, {measure!r}
engine = flowtui.load_engine({path!r}, device=device, dtype="float32")
cuda = device.startswith("cuda")
def sync():
    if cuda: torch.cuda.synchronize()
def peak():
    return torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
w, h = {size!r}
rng = np.random.default_rng(0)
image = Image.fromarray(rng.integers(0, 256, (h // 32, w // 32, 3), dtype=np.uint8)).resize((w, h))
question = "is there a red circle ?"
# Warm up on a small image, so one-off allocations are not counted against the length.
engine.analyze(image.resize((112, 112)), question, max_new_tokens=2)
sync()
def once():
  if mode == "analysis":
    a = engine.analyze(image, question, max_new_tokens=2)
    return a.num_features, len(a.tokens)
  else:
    _, inputs = engine._inputs(image, question)
    ids = inputs["input_ids"][0].cpu().numpy()
    full = engine.adapter.teacher_forced(inputs, [int(ids[-1])] * 2)
    if mode == "eager":
        engine.model.set_attn_implementation({{"text_config": "eager"}})
        with torch.no_grad():
            out = engine.model(**full, use_cache=False, output_attentions=True, logits_to_keep=3)
    else:  # a plain forward + backward to the input embeddings, no capture
        h = engine.model.get_input_embeddings().register_forward_hook(
            lambda _m, _a, out: out.detach().requires_grad_(True))
        with torch.enable_grad():
            logits = engine.model(**full, use_cache=False, logits_to_keep=3).logits
            logits.sum().backward()
        h.remove()
    return len(engine.adapter.feature_positions(ids)), full["input_ids"].shape[1]
if measure == "memory":  # the first run at this size: the process' peak is its peak
    if cuda: torch.cuda.reset_peak_memory_stats()
    base = peak()
    n_img, n = once()
    sync()
    result = {{"extra_mb": (peak() - base) / 2**20}}
else:  # a warm-up at this size, then the median of three
    once()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        n_img, n = once()
        sync()
        times.append(time.perf_counter() - t)
    result = {{"seconds": sorted(times)[1]}}
print(json.dumps({{**result, "image_tokens": n_img, "tokens": n}}))
"""


def run_child(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr.strip().splitlines()[-1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, nargs="+", default=sorted(SIZES), choices=sorted(SIZES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--hidden", type=int, default=256, help="text hidden size (head dim 64)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--eager-up-to", type=int, default=2048,
                   help="measure eager output_attentions up to this many image tokens")
    args = p.parse_args()
    tests = str(HERE.parent / "tests")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "qwen")
        subprocess.run([sys.executable, "-c", BUILD.format(tests=tests, path=path,
                        hidden=args.hidden, layers=args.layers)], check=True, capture_output=True)
        heads = args.hidden // 64
        for n in args.tokens:
            fmt = {"tests": tests, "path": path, "device": args.device, "size": SIZES[n]}

            def measured(mode: str, fmt=fmt) -> dict:
                mem = run_child(CHILD.format(mode=mode, measure="memory", **fmt))
                return {**mem, **run_child(CHILD.format(mode=mode, measure="time", **fmt))}

            a = measured("analysis")
            plain = measured("plain")
            eager = (run_child(CHILD.format(mode="eager", measure="memory", **fmt))
                     if n <= args.eager_up_to else None)
            N = a["tokens"]
            rows.append({"image_tokens": a["image_tokens"], "tokens": N,
                         "analysis_s": a["seconds"], "analysis_mb": a["extra_mb"],
                         "forward_backward_s": plain["seconds"], "forward_backward_mb": plain["extra_mb"],
                         "eager_attentions_mb": eager["extra_mb"] if eager else None,
                         "eager_attentions_mb_by_design": args.layers * heads * N * N * 4 / 2**20})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\ntiny Qwen2.5-VL: {args.layers} layers, hidden {args.hidden}, {heads} heads, "
          f"device {args.device}")
    print(f"{'image tok':>9} {'tokens':>7} {'analysis s':>11} {'x prev':>7} {'analysis MB':>12} "
          f"{'x prev':>7} {'fwd+bwd s':>10} {'x prev':>7} {'fwd+bwd MB':>11} {'analysis/fwd+bwd s':>19} "
          f"{'eager attn MB':>14}")
    prev = None
    for r in rows:
        ts = f"{r['analysis_s'] / prev['analysis_s']:.2f}" if prev else ""
        ms = f"{r['analysis_mb'] / prev['analysis_mb']:.2f}" if prev and prev["analysis_mb"] > 0 else ""
        fs = f"{r['forward_backward_s'] / prev['forward_backward_s']:.2f}" if prev else ""
        eager = (f"{r['eager_attentions_mb']:.0f}" if r["eager_attentions_mb"] is not None
                 else f"{r['eager_attentions_mb_by_design']:.0f}*")
        print(f"{r['image_tokens']:>9} {r['tokens']:>7} {r['analysis_s']:>11.2f} {ts:>7} "
              f"{r['analysis_mb']:>12.0f} {ms:>7} {r['forward_backward_s']:>10.2f} {fs:>7} "
              f"{r['forward_backward_mb']:>11.0f} "
              f"{r['analysis_s'] / r['forward_backward_s']:>19.2f} {eager:>14}")
        prev = r
    print("* computed (L x H x N x N float32), not measured")


if __name__ == "__main__":
    main()
