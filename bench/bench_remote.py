"""Remote-engine benchmarks over a real ssh to localhost, measured side by side in one run.

    python bench/bench_remote.py            # starts its own sshd (tests/support/sshd_local.py)

1. remote analysis time vs local on the built-in toy model (interleaved; target: at most
   10% + 50 ms more);
2. the time to move a LLaVA-7B-sized analysis (32 layers, 32 heads, 576 image tokens, 336x336
   image) between server and client, from a server whose engine answers at once (target
   <= 0.2 s);
3. a second session's time to first answer (connect + open + analyze) with the daemon warm vs a
   cold `serve --stdio`.

See bench/README.md for recorded results.
"""

from __future__ import annotations

import argparse
import copy
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import flowtui  # noqa: E402

QUESTION = "Is there a red circle?"
SAMPLE = ROOT / "sample_images" / "toy_scene_1.png"


def serve_synthetic() -> int:
    """The far side of (2): `serve --stdio` whose engine returns a LLaVA-7B-sized analysis."""
    from support.fake_engine import FakeEngine, make_analysis

    from flowtui.remote.server import serve_stdio

    big = make_analysis(num_layers=32, num_heads=32, grid=(24, 24), image_size=336)

    class Synthetic(FakeEngine):
        def __init__(self) -> None:
            super().__init__(num_layers=32)
            self.info = big.model

        def analyze(self, image, question, max_new_tokens=32, progress=None, cam=True):
            return big

    return serve_stdio(load=lambda **_: Synthetic(), relay=False)


def median_time(fn, n: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=7, help="timed calls per measurement")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads on both sides (default 1: on shared, loaded cores, "
                        "more threads than free cores make every timing noise)")
    p.add_argument("--serve-synthetic", action="store_true", help=argparse.SUPPRESS)
    args, _rest = p.parse_known_args()
    if args.serve_synthetic:
        return serve_synthetic()

    from PIL import Image
    from support import sshd_local

    reason = sshd_local.missing()
    if reason:
        sys.exit(reason)
    tmp = Path(tempfile.mkdtemp(prefix="flowtui-bench-remote-"))
    sshd = sshd_local.start_sshd(tmp)
    os.environ["FLOWTUI_SSH_COMMAND"] = sshd.ssh_command
    host = sshd_local.HOST
    py = shlex.quote(sys.executable)
    import torch

    torch.set_num_threads(args.threads)
    env = (f"env PYTHONPATH={shlex.quote(str(ROOT))} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "
           f"OMP_NUM_THREADS={args.threads} MKL_NUM_THREADS={args.threads}")
    no_daemon = f"{env} FLOWTUI_SOCKET={tmp}/none.sock {py} -m flowtui"
    with_daemon = f"{env} FLOWTUI_SOCKET={tmp}/daemon.sock {py} -m flowtui"
    synthetic = f"{env} {py} {shlex.quote(str(HERE / 'bench_remote.py'))} --serve-synthetic"
    quiet = {"on_log": lambda line: None}
    n = args.repeat
    print(f"flowtui {flowtui.__version__}, ssh to localhost ({sshd.ssh_command}), "
          f"{os.cpu_count()} CPU cores, torch threads {args.threads} on both sides, "
          f"load average {os.getloadavg()[0]:.1f}, {n} timed calls per figure (median)\n")
    try:
        # --- 1. toy analysis, local vs remote ------------------------------------------------
        image = np.asarray(Image.open(SAMPLE).convert("RGB"))
        local = flowtui.load_engine(device="cpu", dtype="float32")
        remote = flowtui.connect(host, remote_cmd=no_daemon, device="cpu", dtype="float32",
                                 **quiet)
        for e in (local, remote):  # warm-up
            e.analyze(image, QUESTION)
        lt, rt = [], []
        for _ in range(n):  # interleaved, so load on the machine hits both alike
            lt.append(median_time(lambda: local.analyze(image, QUESTION), 1)[0])
            rt.append(median_time(lambda: remote.analyze(image, QUESTION), 1)[0])
        remote.close()
        lm, rm = statistics.median(lt), statistics.median(rt)
        budget = lm * 1.10 + 0.050
        print("1. toy analysis (analyze with CAM, image "
              f"{image.shape[1]}x{image.shape[0]}):")
        print(f"   local {lm * 1000:.1f} ms, remote over ssh {rm * 1000:.1f} ms: "
              f"+{(rm - lm) * 1000:.1f} ms ({(rm / lm - 1) * 100:+.1f}%); "
              f"target <= {budget * 1000:.1f} ms (local + 10% + 50 ms): "
              f"{'OK' if rm <= budget else 'MISSED'}")

        # --- 2. moving a LLaVA-7B-sized analysis ---------------------------------------------
        from flowtui.remote.protocol import analysis_to, encode_array

        big_remote = flowtui.connect(host, remote_cmd=synthetic, **quiet)
        img336 = np.zeros((336, 336, 3), np.uint8)
        a = big_remote.analyze(img336, QUESTION)  # warm-up
        t_move, _ = median_time(lambda: big_remote.analyze(img336, QUESTION), n)
        manifest, arrays = analysis_to(a, with_image=False)
        down = sum(len(encode_array(v)) for v in arrays.values()) + len(str(manifest))
        up = len(encode_array(img336))

        def rerun_unknown() -> None:  # a fresh object: the server does not hold it
            big_remote.truncate(copy.copy(a), 3)

        t_full, _ = median_time(rerun_unknown, n)
        big_remote.close()
        print(f"2. LLaVA-7B-sized analysis ({a.num_layers} layers, {a.num_heads} heads, "
              f"{a.num_features} image tokens, {len(a.tokens)} tokens):")
        print(f"   analyze round trip with an engine that answers at once: "
              f"{t_move * 1000:.1f} ms (server -> client {down / 1e6:.2f} MB, "
              f"client -> server image {up / 1e6:.2f} MB); target <= 200 ms: "
              f"{'OK' if t_move <= 0.2 else 'MISSED'}")
        print(f"   the whole analysis with its image, client -> server (the first rerun of a "
              f"reopened snapshot): {t_full * 1000:.1f} ms ({(down + up) / 1e6:.2f} MB)")

        # --- 3. time to first answer: daemon warm vs cold ------------------------------------
        def first_answer(cmd: str) -> None:
            with flowtui.connect(host, remote_cmd=cmd, device="cpu", dtype="float32",
                                 **quiet) as e:
                e.analyze(image, QUESTION)

        cold, cold_all = median_time(lambda: first_answer(no_daemon), max(3, n // 2))
        daemon = subprocess.Popen(
            shlex.split(with_daemon.replace("-m flowtui", "-m flowtui serve --daemon")),
            stderr=subprocess.DEVNULL,
        )
        try:
            while not (tmp / "daemon.sock").exists():
                time.sleep(0.05)
            first_answer(with_daemon)  # the first session loads the model
            warm, warm_all = median_time(lambda: first_answer(with_daemon), max(3, n // 2))
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
        print("3. a new session's time to first answer (ssh + open + analyze), toy model:")
        print(f"   cold `serve --stdio` (imports torch, loads the model) {cold:.2f} s; "
              f"daemon warm {warm:.2f} s ({cold / warm:.1f}x faster)")
        print(f"   (each: cold {', '.join(f'{t:.2f}' for t in cold_all)}; "
              f"warm {', '.join(f'{t:.2f}' for t in warm_all)})")
    finally:
        sshd.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
