"""What the self-checks cost: an analysis with them against the same analysis without, side by
side in one run (alternating, median of --repeat), and the checks' own time.

    python bench/bench_selfcheck.py                 # CPU: the toy and a deep tiny LLaVA
    python bench/bench_selfcheck.py --device cuda   # the same on a GPU

Target: <= 5% of an analysis. See bench/README.md for recorded results.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_engine import DEEP, image  # noqa: E402

import flowtui  # noqa: E402
from flowtui.engine import selfcheck  # noqa: E402
from flowtui.selftest.tiny_llava import build_tiny_llava  # noqa: E402

SAMPLE = HERE.parent / "sample_images" / "toy_scene_1.png"


def measure(engine, img, question: str, repeat: int, max_new_tokens: int) -> dict:
    """Alternate with/without so drift (thermal, other load) hits both alike."""
    engine.analyze(img, question, max_new_tokens=max_new_tokens)  # warm-up
    on, off, checks = [], [], []
    for _ in range(repeat):
        for flag, into in ((True, on), (False, off)):
            t = time.perf_counter()
            a = engine.analyze(img, question, max_new_tokens=max_new_tokens, self_check=flag)
            into.append(time.perf_counter() - t)
        st = engine._state(a, lambda _p: None)
        t = time.perf_counter()
        result = selfcheck.run(engine, a, st)
        checks.append(time.perf_counter() - t)
        assert not [c for c in result if not c.passed], [c.describe() for c in result]
    with_checks, without = statistics.median(on), statistics.median(off)
    return {"with": with_checks, "without": without, "checks": statistics.median(checks),
            "ratio": with_checks / without, "n_checks": len(result), "answer_tokens":
            len(a.answer_token_ids), "sequence": len(a.tokens)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = []
    toy = flowtui.load_engine(None, device=args.device)
    rows.append(("toy (8 layers)", measure(toy, str(SAMPLE), "Is there a red circle?",
                                           args.repeat, 32)))
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_llava(Path(tmp) / "deep", DEEP)
        deep = flowtui.load_engine(str(path), device=args.device, dtype="float32")
        rows.append(("deep LLaVA (24 layers, 576 image tokens, 8 answer tokens)",
                     measure(deep, image(), "Is there a red circle?", args.repeat, 8)))
    print(f"{'model':<58} {'with':>8} {'without':>8} {'checks':>8} {'ratio':>7}")
    for name, r in rows:
        print(f"{name:<58} {r['with']:8.3f} {r['without']:8.3f} {r['checks']:8.3f} "
              f"{r['ratio']:7.3f}   ({r['n_checks']} checks, {r['sequence']} positions)")
    worst = max(r["checks"] / r["without"] for _, r in rows)
    print(f"checks' own time / analysis without them: at most {100 * worst:.1f}% "
          f"(target <= 5%) {'met' if worst <= 0.05 else 'NOT met'}")
    assert np.isfinite(worst)


if __name__ == "__main__":
    main()
