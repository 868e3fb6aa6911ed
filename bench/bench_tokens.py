"""Every answer token's LLaVA-CAM from one forward, against T separate analyses, at T = 16.

    python bench/bench_tokens.py               # CPU, a tiny LLaVA (12 layers, 576 image tokens)
    python bench/bench_tokens.py --layers 24 --device cuda

Both sides compute the same [T, L, N] maps (checked): `all-token` is what analyze(per_token=True)
runs (one recording forward with share capture, then batched backwards over the T targets,
`--chunk` at a time); `separate` is T recording passes, each a forward and a backward with one
answer token's logit as the target (what T separate analyses would spend on the CAM). Times are
medians after a warm-up; memory is each side's peak RSS (CPU) or peak CUDA memory above a warm
plain forward, in a fresh process (on a CPU with a model this small both stay under the peak of
loading the model, and read 0: then the by-design sizes printed beside them are what counts). See
bench/README.md for recorded results.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
from bench_engine import timed  # noqa: E402  # median of repeats after one warm-up

import flowtui  # noqa: E402
from flowtui.engine import attention, tokens  # noqa: E402
from flowtui.engine.analysis import GROUPS, no_progress  # noqa: E402
from flowtui.engine.recording import cam_from  # noqa: E402
from flowtui.selftest.tiny_llava import Geometry, build_tiny_llava  # noqa: E402


def geometry(layers: int) -> Geometry:
    return Geometry("tokens", image_size=336, patch_size=14,
                    system_prompt="you are a helpful model .", num_layers=layers, num_heads=4,
                    num_kv_heads=4, hidden=128, vision_hidden=32, max_positions=1024)


def setup(engine, T: int):
    """Teacher-forced inputs for prompt + a made-up T-token answer (what the engine builds)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    _, inputs = engine._inputs(img, "describe this picture")
    ids = inputs["input_ids"][0].cpu().numpy()
    answer = [int(x) for x in rng.integers(10, 40, T)]
    full = engine.adapter.teacher_forced(inputs, answer)
    return full, len(ids), engine._groups(ids, T), engine.adapter.feature_positions(ids)


def all_token(engine, full, P, T, groups, feats, chunk: int) -> np.ndarray:
    tokens.DEFAULT_CHUNK = chunk
    return engine._capture(full, P, T, groups, feats, no_progress, cam=True,
                           per_token=True)["token_cam"]


def separate(engine, full, P, T, groups, feats) -> np.ndarray:
    """T recording passes, one target each: forward with share capture + one backward."""
    L = engine.adapter.num_layers
    out = np.zeros((T, L, len(feats)), dtype=np.float32)
    pos = torch.as_tensor(feats, dtype=torch.long)
    answer = full["input_ids"][0, P:]
    for t in range(T):
        cap = attention.ShareCapture.for_groups(groups, GROUPS, T, feats)
        with attention.capturing(cap):
            rec = engine._forward_recording(full, T, with_cam=True)
        target = rec["logits"][t, answer[t]]
        grads = torch.autograd.grad(target, rec["sites"], allow_unused=True)
        for layer, (a, g) in enumerate(zip(rec["sites"], grads, strict=True)):
            if g is not None:
                out[t, layer] = cam_from(a[0, pos], g[0, pos])
    return out


MEMORY_CHILD = """
import json, sys, torch
sys.path.insert(0, {bench!r})


def status_mb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(field)


import flowtui
from bench_tokens import setup, all_token, separate
engine = flowtui.load_engine({path!r}, device={device!r}, dtype="float32")
full, P, groups, feats = setup(engine, {T})
with torch.no_grad():  # a warm plain forward first: extra memory is measured above its peak
    engine.model(**full, use_cache=False, logits_to_keep={T} + 1)
cuda = {device!r} != "cpu"
if cuda:
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.max_memory_allocated() / 2**20
else:
    # Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS, so the
    # peak below is this pass's, not the model load's (which ru_maxrss would report).
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status_mb("VmRSS")
if {mode!r} == "all":
    all_token(engine, full, P, {T}, groups, feats, {chunk})
else:
    separate(engine, full, P, {T}, groups, feats)
peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else status_mb("VmHWM")
print(json.dumps({{"extra_mb": peak - base}}))
"""


def memory(path: Path, device: str, T: int, chunk: int) -> dict:
    res = {}
    for mode in ("all", "separate"):
        code = MEMORY_CHILD.format(bench=str(HERE), path=str(path), device=device, T=T,
                                   mode=mode, chunk=chunk)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True)
        res[mode] = json.loads(out.stdout.strip().splitlines()[-1])["extra_mb"]
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--tokens", type=int, default=16, help="answer tokens T (default 16)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--skip-memory", action="store_true")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device "
          f"{args.device}", flush=True)
    torch.manual_seed(0)
    T = args.tokens
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_llava(Path(tmp) / "m", geometry(args.layers))
        engine = flowtui.load_engine(str(path), device=args.device, dtype="float32")
        full, P, groups, feats = setup(engine, T)
        ref = separate(engine, full, P, T, groups, feats)
        res: dict = {"layers": args.layers, "answer_tokens": T, "image_tokens": len(feats),
                     "sequence": int(full["input_ids"].shape[1])}
        t_sep = timed(lambda: separate(engine, full, P, T, groups, feats), args.repeat)
        res["separate_s"] = t_sep
        for chunk in (8, 16):
            got = all_token(engine, full, P, T, groups, feats, chunk)
            np.testing.assert_allclose(got, ref, atol=1e-4)  # the same maps, or no timing
            t = timed(lambda c=chunk: all_token(engine, full, P, T, groups, feats, c),
                      args.repeat)
            res[f"all_token_chunk{chunk}_s"] = t
            res[f"ratio_chunk{chunk}"] = t / t_sep
        # What the all-token pass holds beyond one analysis, by design: the feature-token
        # gradients of every layer for one chunk of targets (float32), while the backward runs
        # with `chunk` cotangents at once (its activation gradients grow by the same factor).
        D, L, N = engine.adapter.text_config.hidden_size, args.layers, len(feats)
        for chunk in (8, 16):
            res[f"held_gradients_chunk{chunk}_mb_by_design"] = chunk * L * N * D * 4 / 2**20
        if not args.skip_memory:
            for chunk in (8, 16):
                m = memory(path, args.device, T, chunk)
                res[f"memory_chunk{chunk}_mb"] = m
        print(json.dumps(res, indent=1))
    print(f"\nall-token CAM (T = {T}, chunk 8) vs {T} separate analyses: "
          f"{res['all_token_chunk8_s']:.3f} s vs {t_sep:.3f} s = {res['ratio_chunk8']:.2f} "
          f"(chunk 16: {res['ratio_chunk16']:.2f}; target <= 0.6)")


if __name__ == "__main__":
    main()
