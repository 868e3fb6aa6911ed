"""Startup of the explorer, in fresh processes: time to the first frame, to the image on screen
(time-to-pixels) and to the answer (time-to-answer), against the bare `import torch,
transformers` that any run pays.

    python bench/bench_startup.py [--runs 3] [--image sample_images/toy_scene_1.png]

Each run is a new Python process that goes through the real command line (`flowtui IMAGE
QUESTION`, the built-in toy model): the CLI's checks, the explorer's start, the engine worker.
The explorer runs headless (Textual's own headless driver, 120x40, every frame composed as on a
terminal); the child notes the wall-clock time after the refresh that follows each event:
first frame (with its status line), the image preview drawn, the analysis shown. Times are
from just before the child is spawned, so interpreter start-up is included, as a user sees it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
T0 = float(sys.argv[1])
image, question = sys.argv[2], sys.argv[3]
events = {}

def mark(name, **extra):
    if name not in events:
        events[name] = time.time() - T0
        events.update(extra)

import flowtui.ui.app as ua

class BenchApp(ua.FlowtuiApp):
    def on_mount(self):
        super().on_mount()
        self.call_after_refresh(lambda: mark("frame", status=self.status.activity))

    # The explorer screen handles these first; they bubble up to the app after it.
    def on_explorer_screen_image_preview(self, message):
        self.call_after_refresh(mark, "pixels")

    def on_analysis_ready(self, message):
        answer = message.analysis.answer
        self.call_after_refresh(lambda: (mark("answer", answer_text=answer), self.exit(0)))

def run_explorer(**kwargs):
    app = BenchApp(**kwargs)
    app.run(headless=True, size=(120, 40))
    return 0

ua.run_explorer = run_explorer
from flowtui.cli import main
code = main([image, question])
print(json.dumps({"code": code, **events}))
"""

BARE = "import torch, transformers"
# `import transformers` is lazy: loading any model also runs its model code. This is the floor
# for any first answer (what transformers needs before it can build a model).
BARE_MODEL = "import torch, transformers; from transformers import PreTrainedModel"


def timed(code: str, *args: str) -> tuple[float, str]:
    t0 = time.time()
    done = subprocess.run([sys.executable, "-c", code, str(t0), *args], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    wall = time.time() - t0
    if done.returncode != 0:
        raise SystemExit(f"child failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return wall, done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--image", default="sample_images/toy_scene_1.png")
    ap.add_argument("--question", default="Is there a red circle?")
    args = ap.parse_args()

    empty, bare, bare_model, frame, pixels, answer = [], [], [], [], [], []
    last: dict = {}
    for _ in range(args.runs):  # interleaved, so the page cache treats both alike
        empty.append(timed("pass")[0])
        bare.append(timed(BARE)[0])
        bare_model.append(timed(BARE_MODEL)[0])
        _, out = timed(CHILD, args.image, args.question)
        last = json.loads(out.strip().splitlines()[-1])
        if last.get("code") != 0 or "answer" not in last:
            raise SystemExit(f"the explorer did not answer: {last}")
        frame.append(last["frame"])
        pixels.append(last["pixels"])
        answer.append(last["answer"])

    med = statistics.median
    b = med(bare)
    print(f"flowtui startup · {args.runs} fresh processes each · median (min..max) · "
          f"{args.image} · {args.question!r} · built-in toy model")
    print(f"{'what':<52}{'seconds':>22}{'÷ bare import':>16}")
    rows = [
        ("python -c pass (interpreter)", empty),
        (f"bare `{BARE}`", bare),
        ("... and `from transformers import PreTrainedModel`", bare_model),
        ("first frame (status line)", frame),
        ("time-to-pixels (image drawn)", pixels),
        ("time-to-answer (analysis shown)", answer),
    ]
    for name, xs in rows:
        print(f"{name:<52}{med(xs):>9.2f} ({min(xs):.2f}..{max(xs):.2f}){med(xs) / b:>15.2f}×")
    print(f"first frame's status line: {last['status']!r}")
    print(f"answer: {last['answer_text']!r}")
    print(f"time-to-answer beyond the bare import: {med(answer) - b:.2f} s; beyond the import "
          f"with the model code: {med(answer) - med(bare_model):.2f} s")


if __name__ == "__main__":
    main()
