"""Measure the built-in toy model through flowtui's own engine, as MODEL_CARD.md reports it.

    python -m flowtui.toy.evaluate [--n 1000] [--seed 12345] [--model DIR]

Prints: accuracy on held-out scenes (fresh seeds, never seen in training); per-layer CAM
pointing accuracy (ground-truth Yes questions on scenes with >= 2 objects: the fraction where
the CAM's maximum falls on the asked object); accuracy when the image is truncated from layer K,
for every K (the paper's Figure 5 curve); and the cliff layer of that curve.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flowtui.toy.scenes import mask_to_grid, render_scene, sample_question

# Held-out scenes come from this seed family; training draws from (1|2, step).
HELD_OUT_SEED = 12345
# The measured numbers, machine-readable: MODEL_CARD.md quotes them, the tests read best_layer.
CARD_JSON = Path(__file__).with_name("card.json")


def normalise(answer: str) -> str:
    return answer.strip().rstrip(".!?").lower()


@dataclass
class Report:
    n: int = 0
    correct: int = 0
    pointing_hits: np.ndarray | None = None
    pointing_n: int = 0
    truncated_correct: np.ndarray | None = None
    seconds: float = 0.0
    answers: dict[str, int] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.correct / max(1, self.n)

    @property
    def pointing(self) -> np.ndarray:
        assert self.pointing_hits is not None, "no scene evaluated yet"
        return self.pointing_hits / max(1, self.pointing_n)

    @property
    def truncation_accuracy(self) -> np.ndarray:
        assert self.truncated_correct is not None, "no scene evaluated yet"
        return self.truncated_correct / max(1, self.n)

    def cliff_layer(self, tolerance: float = 0.01) -> int:
        """Smallest K from which accuracy stays within `tolerance` of the untouched model's."""
        acc = self.truncation_accuracy
        k = len(acc) - 1
        while k > 0 and acc[k - 1] >= acc[-1] - tolerance:
            k -= 1
        return k


def points_at(cam: np.ndarray, object_grid: np.ndarray) -> bool:
    """The CAM's maximum patch is covered by the object (any coverage)."""
    if cam.max() <= 0:
        return False
    r, c = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return bool(object_grid[r, c] > 0)


def evaluate(engine, n: int = 1000, seed: int = HELD_OUT_SEED, sweep: bool = True,
             progress: bool = True) -> Report:
    """Run `n` balanced Yes/No colour+shape questions on fresh scenes through `engine`."""
    rep = Report()
    start = time.perf_counter()
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        size = int(rng.integers(64, 257))
        scene = render_scene(rng, size=size)
        q = sample_question(rng, scene, yes=i % 2 == 0)
        a = engine.analyze(scene.image, q.text, max_new_tokens=3)
        L = a.num_layers
        if rep.pointing_hits is None:
            rep.pointing_hits = np.zeros(L, dtype=np.int64)
            rep.truncated_correct = np.zeros(L + 1, dtype=np.int64)
        rep.n += 1
        got = normalise(a.answer)
        rep.answers[got] = rep.answers.get(got, 0) + 1
        rep.correct += got == q.answer.lower()
        if q.target is not None and len(scene.objects) >= 2:
            grid = mask_to_grid(scene.objects[q.target].mask, a.image_grid)
            rep.pointing_n += 1
            rep.pointing_hits += [points_at(a.cam[k], grid) for k in range(L)]
        if sweep:
            assert rep.truncated_correct is not None  # set with pointing_hits, just above
            s = engine.sweep(a)
            rep.truncated_correct += [normalise(ans) == q.answer.lower() for ans in s.answers]
        if progress and (i + 1) % 100 == 0:
            print(f"  {i + 1}/{n} scenes, accuracy so far {rep.accuracy:.3f}", flush=True)
    rep.seconds = time.perf_counter() - start
    return rep


def format_report(rep: Report, sweep: bool = True) -> str:
    lines = [
        f"held-out accuracy: {rep.accuracy:.3f} ({rep.correct}/{rep.n} scenes, balanced Yes/No, "
        f"answers {rep.answers})",
        f"CAM pointing (Yes questions, >= 2 objects, n={rep.pointing_n}), per layer:",
        "  " + "  ".join(f"L{k}:{v:.2f}" for k, v in enumerate(rep.pointing)),
        f"  best layer {int(np.argmax(rep.pointing))} ({rep.pointing.max():.3f})",
    ]
    if sweep:
        lines += [
            "accuracy with the image truncated from layer K (K = L is the untouched model):",
            "  " + "  ".join(f"K{k}:{v:.2f}" for k, v in enumerate(rep.truncation_accuracy)),
            f"  cliff layer (accuracy within 1 point of K = L from here on): {rep.cliff_layer()}",
        ]
    lines.append(f"took {rep.seconds:.0f} s")
    return "\n".join(lines)


def eval_args(argv: list[str] | None, description: str, n: int, seed: int, card: str
              ) -> tuple[argparse.Namespace, Any]:
    """The evaluation scripts' shared command line (--n, --seed, --model, --no-sweep,
    --write-card) and the engine of the model it names."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--n", type=int, default=n, help=f"held-out scenes (default {n})")
    ap.add_argument("--seed", type=int, default=seed)
    ap.add_argument("--model", default=None, help="model folder (default: the shipped toy)")
    ap.add_argument("--no-sweep", action="store_true", help="skip the truncation curve")
    ap.add_argument("--write-card", action="store_true",
                    help=f"write the numbers to {CARD_JSON.name} {card}")
    ap.add_argument("--card-key", default=None, metavar="KEY",
                    help="with --write-card: under this key instead (another model's numbers, "
                         "e.g. retrained_from_seed for a retrain's)")
    args = ap.parse_args(argv)

    import flowtui

    return args, flowtui.load_engine(args.model, device="cpu", dtype="float32")


def main(argv: list[str] | None = None) -> None:
    args, engine = eval_args(argv, __doc__.splitlines()[0], 1000, HELD_OUT_SEED,
                             "(what the tests read)")
    rep = evaluate(engine, n=args.n, seed=args.seed, sweep=not args.no_sweep)
    print(format_report(rep, sweep=not args.no_sweep))
    if args.write_card and not args.no_sweep:
        update_card(under=args.card_key, entries={
            "held_out_scenes": rep.n,
            "accuracy": round(rep.accuracy, 4),
            "pointing_per_layer": [round(float(v), 4) for v in rep.pointing],
            "best_layer": int(np.argmax(rep.pointing)),
            "truncation_accuracy": [round(float(v), 4) for v in rep.truncation_accuracy],
            "cliff_layer": rep.cliff_layer(),
        })


def update_card(entries: dict, under: str | None = None) -> None:
    """Set `entries` in card.json (in its object `under`, when given), keeping the keys other
    measurements wrote (the lens probe's `lens`), atomically."""
    from flowtui.engine.filesafe import write_atomic

    card = json.loads(CARD_JSON.read_text()) if CARD_JSON.exists() else {}
    (card.setdefault(under, {}) if under else card).update(entries)
    text = (json.dumps(card, indent=1) + "\n").encode()
    write_atomic(CARD_JSON, lambda f: f.write(text))


if __name__ == "__main__":
    main()
