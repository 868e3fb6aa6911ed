"""`flowtui web`: a browser tab's time to its first answer, cold and warm, side by side with
what a tab would cost if it loaded the model itself.

    python bench/bench_web.py [--tabs 3] [--model M] [--screenshot docs/web.png]
                                                   # needs Debian's chromium

Starts `flowtui web SAMPLE QUESTION --port 0` (the built-in toy unless --model), opens tabs in
headless Chromium (tests/support/web_browser.py) one after another, each kept open, and times each from
opening the page to the answer on screen. Then, in this process: the model's load time and a
warm analysis's time (the engine call a tab makes, with self-checks, as the explorer runs it),
medians of 3. Target (issue 19): a second tab answers in about an analysis's time plus the
tab's own start, not a load's. See bench/README.md for recorded results.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.web_browser import Browser  # noqa: E402

QUESTION = "Is there a red circle?"
SAMPLE = ROOT / "sample_images" / "toy_scene_1.png"
ANSWERED = rf"Q {QUESTION}[\s\S]*\bA \S[\s\S]*ready"


async def time_tabs(url: str, n: int, folder: Path,
                    screenshot: Path | None = None) -> list[tuple[float, float]]:
    """(seconds to the explorer's first screen, seconds to the answer) for n tabs in turn;
    `screenshot`: the first tab's page after → → (layer 2), as docs/web.png shows it."""
    browser = await Browser(folder, 1200, 720).start()
    tabs, times = [], []
    try:
        for _ in range(n):
            start = time.perf_counter()
            tab = await browser.tab(url)
            await tab.wait_for(rf"Q {QUESTION}", timeout=600)
            first = time.perf_counter() - start
            await tab.wait_for(ANSWERED, timeout=600, gone=r"generating|loading")
            times.append((first, time.perf_counter() - start))
            tabs.append(tab)  # kept open: the next tab shares the engine with it
            if screenshot is not None and len(tabs) == 1:
                for _ in range(2):
                    await tab.press("ArrowRight")
                await tab.wait_for(r"CAM · layer 2/")
                await asyncio.sleep(0.5)  # the map's last frame
                await tab.screenshot(screenshot)
    finally:
        await browser.close()
    return times


def in_process(model: str | None, threads: int, repeats: int = 3) -> tuple[float, float]:
    """(load seconds, median warm analysis seconds) in this process."""
    import torch

    import flowtui

    torch.set_num_threads(threads)
    start = time.perf_counter()
    engine = flowtui.load_engine(model, device="cpu")
    load = time.perf_counter() - start
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        engine.analyze(str(SAMPLE), QUESTION)
        runs.append(time.perf_counter() - start)
    return load, statistics.median(runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tabs", type=int, default=3)
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads in the daemon and here (default 1: on shared cores, "
                         "OpenMP oversubscription drowns the comparison; see bench_remote.py)")
    ap.add_argument("--screenshot", type=Path, default=None,
                    help="also save the first tab's page as a PNG (docs/web.png)")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-web-"))
    log = folder / "server.log"
    argv = [sys.executable, "-m", "flowtui", "web", str(SAMPLE), QUESTION, "--port", "0",
            "--device", "cpu"] + (["--model", args.model] if args.model else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    with open(log, "wb") as out:
        server = subprocess.Popen(argv, cwd=folder, stdout=out, stderr=subprocess.STDOUT,
                                  env=env)
    try:
        deadline = time.monotonic() + 60
        while not (m := re.search(r"open (http://\S+/)", log.read_text())):
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start:\n" + log.read_text())
            time.sleep(0.05)
        times = asyncio.run(time_tabs(m.group(1), args.tabs, folder, args.screenshot))
        text = log.read_text()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        shutil.rmtree(folder, ignore_errors=True)
    loaded = re.search(r"loaded (\S+) in ([\d.]+) s", text)
    load, analysis = in_process(args.model, args.threads)
    print(f"model: {loaded.group(1) if loaded else args.model or 'flowtui-toy'}, CPU; "
          f"{args.tabs} tabs opened one after another, each kept open")
    print(f"{'tab':>4} {'first screen s':>15} {'answer on screen s':>19}")
    for i, (first, answer) in enumerate(times, 1):
        print(f"{i:>4} {first:>15.2f} {answer:>19.2f}")
    warm = statistics.median(a for _, a in times[1:]) if len(times) > 1 else float("nan")
    print(f"model load in the server's daemon (its log): {loaded.group(2) if loaded else '?'} s")
    print(f"in this process: load {load:.2f} s, warm analysis {analysis:.2f} s (median of 3)")
    print(f"tabs 2..{args.tabs}, median to answer: {warm:.2f} s = tab start "
          f"{statistics.median(f for f, _ in times[1:]):.2f} s + the rest; a tab that loaded the "
          f"model itself would need about {load + analysis:.2f} s plus its start")
    print(f"daemon loads counted in its log: {text.count('loaded ')} (target: 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
