"""What attention knockout shows on the built-in toy, over held-out scenes (the model card's
"Attention knockout" paragraph):

    python -m flowtui.toy.knockout_eval --n 100

Per scene: the toy's answer, then each flow knocked out in every window (default width) and the
image cut from the answer (`image->last+image->answer`). Prints the mean relative change of the
first answer token's probability per flow and layer window, and how often the knockout flips the
Yes/No answer, counted as p_ko < 0.5 (the first token is Yes or No, and the two take almost all
of the probability).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from flowtui.engine.knockout_flows import STANDARD_FLOWS
from flowtui.toy.evaluate import HELD_OUT_SEED
from flowtui.toy.scenes import render_scene, sample_question

FLOWS = (*STANDARD_FLOWS, "image->last+image->answer")


def run(n: int, seed: int = HELD_OUT_SEED) -> dict:
    import flowtui

    engine = flowtui.load_engine(device="cpu", dtype="float32")
    rel, flips, correct = [], [], 0
    for i in range(n):
        rng = np.random.default_rng([seed, i])  # scene i of the held-out family, as evaluate
        scene = render_scene(rng, size=int(rng.integers(64, 257)))
        q = sample_question(rng, scene, yes=i % 2 == 0)
        a = engine.analyze(scene.image, q.text, max_new_tokens=2, cam=False, self_check=False)
        correct += a.answer.lower().startswith(q.answer.lower())
        k = engine.knockout(a, ",".join(FLOWS))
        rel.append(k.rel_change)
        flips.append(k.first_prob < 0.5)
    r, f = np.asarray(rel, dtype=np.float64), np.asarray(flips)
    return {"scenes": n, "baseline_accuracy": correct / n, "window": k.window,
            "flows": {name: {"mean_rel_change": np.round(r[:, j].mean(0), 2).tolist(),
                             "flip_rate": np.round(f[:, j].mean(0), 3).tolist()}
                      for j, name in enumerate(FLOWS)}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flowtui.toy.knockout_eval",
                                description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100, help="held-out scenes (default 100)")
    args = p.parse_args(argv)
    print(json.dumps(run(args.n), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
