"""Measure the toy's captions through flowtui's own engine, as MODEL_CARD.md reports them.

    python -m flowtui.toy.evaluate_captions [--n 300] [--seed 54321] [--model DIR] [--write-card]

On held-out scenes (a seed family training never draws): exact object-set accuracy (the caption
names exactly the scene's objects), the rate of captions word for word right, precision and
recall of the objects named (overall and per object), accuracy per prompt phrasing, and, with
the image truncated from layer K for every K, the same numbers per K (hallucination rate =
CHAIR_i, captions with a hallucination = CHAIR_s; docs/definitions.md).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np

from flowtui.toy.build import MAX_CAPTION_TOKENS
from flowtui.toy.captions import CAPTION_PROMPTS, DEFAULT_PROMPT, caption_text, mentioned
from flowtui.toy.evaluate import eval_args, update_card
from flowtui.toy.scenes import COLOURS, SHAPES, render_scene

CAPTION_EVAL_SEED = 54321


def score_caption(caption: str, truth: set[tuple[str, str]]) -> dict[str, Any]:
    """Counts for one caption against the scene's objects."""
    said = mentioned(caption)
    return {"exact_set": set(said) == truth and len(said) == len(truth),
            "mentions": len(said), "right": sum(o in truth for o in said),
            "objects": len(truth), "covered": len(truth & set(said)),
            "hallucinated": sum(o not in truth for o in said)}


def _rates(rows: list[dict[str, Any]]) -> dict[str, float]:
    m = sum(r["mentions"] for r in rows)
    g = sum(r["objects"] for r in rows)
    return {"exact_set": float(np.mean([r["exact_set"] for r in rows])),
            "precision": sum(r["right"] for r in rows) / m if m else 0.0,
            "recall": sum(r["covered"] for r in rows) / g if g else 0.0,
            "chair_i": sum(r["hallucinated"] for r in rows) / m if m else 0.0,
            "chair_s": float(np.mean([r["hallucinated"] > 0 for r in rows]))}


def evaluate_captions(engine, n: int = 300, seed: int = CAPTION_EVAL_SEED, sweep: bool = True,
                      phrasings: int = 5, progress: bool = True) -> dict[str, Any]:
    """The card's caption numbers on `n` held-out scenes (and `phrasings` scenes per phrasing)."""
    start = time.perf_counter()
    base: list[dict[str, Any]] = []
    exact_text = 0
    per_k: list[list[dict[str, Any]]] | None = None
    per_object: dict[str, Counter] = {f"{c} {s}": Counter() for c in COLOURS for s in SHAPES}
    examples: list[dict[str, Any]] = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        scene = render_scene(rng, size=int(rng.integers(64, 257)))
        truth = {(o.colour, o.shape) for o in scene.objects}
        a = engine.analyze(scene.image, DEFAULT_PROMPT, max_new_tokens=MAX_CAPTION_TOKENS, cam=False)
        row = score_caption(a.answer, truth)
        base.append(row)
        exact_text += a.answer == caption_text(scene)
        said = set(mentioned(a.answer))
        for c, s in {*truth, *said}:
            counts = per_object[f"{c} {s}"]
            counts["tp"] += (c, s) in truth and (c, s) in said
            counts["fp"] += (c, s) not in truth
            counts["fn"] += (c, s) not in said
        if len(examples) < 3:
            examples.append({"objects": sorted(f"{c} {s}" for c, s in truth), "caption": a.answer})
        if sweep:
            sw = engine.sweep(a)
            if per_k is None:
                per_k = [[] for _ in sw.answers]
            for k, ans in enumerate(sw.answers):
                per_k[k].append(score_caption(ans, truth))
        if progress and (i + 1) % 50 == 0:
            print(f"  {i + 1}/{n} scenes, exact set so far {_rates(base)['exact_set']:.3f}", flush=True)
    by_phrasing = {}
    for j, prompt in enumerate(CAPTION_PROMPTS):
        rows = []
        for i in range(phrasings):
            rng = np.random.default_rng([seed + 1, j, i])
            scene = render_scene(rng, size=int(rng.integers(64, 257)))
            a = engine.analyze(scene.image, prompt, max_new_tokens=MAX_CAPTION_TOKENS, cam=False)
            rows.append(score_caption(a.answer, {(o.colour, o.shape) for o in scene.objects}))
        by_phrasing[prompt] = round(_rates(rows)["exact_set"], 4)
    out: dict[str, Any] = {
        "held_out_scenes": n,
        **{k: round(v, 4) for k, v in _rates(base).items()},
        "exact_caption": round(exact_text / max(1, n), 4),
        "per_object": {name: {"precision": round(c["tp"] / max(1, c["tp"] + c["fp"]), 4),
                              "recall": round(c["tp"] / max(1, c["tp"] + c["fn"]), 4),
                              "n": c["tp"] + c["fn"]} for name, c in per_object.items()},
        "by_phrasing": by_phrasing,
        "examples": examples,
        "seconds": round(time.perf_counter() - start, 1),
    }
    if per_k is not None:
        rates = [_rates(rows) for rows in per_k]
        out["truncation"] = {key: [round(r[key], 4) for r in rates] for key in rates[0]}
    return out


def format_report(rep: dict[str, Any]) -> str:
    lines = [f"captions on {rep['held_out_scenes']} held-out scenes: exact object set "
             f"{rep['exact_set']:.3f}, word for word {rep['exact_caption']:.3f}, precision "
             f"{rep['precision']:.3f}, recall {rep['recall']:.3f}, CHAIR_i {rep['chair_i']:.3f}, "
             f"CHAIR_s {rep['chair_s']:.3f}",
             "per phrasing (exact set): " + ", ".join(f"{p!r} {v:.2f}" for p, v in rep["by_phrasing"].items()),
             "per object (precision/recall): " + ", ".join(
                 f"{k} {v['precision']:.2f}/{v['recall']:.2f}" for k, v in rep["per_object"].items())]
    if "truncation" in rep:
        lines.append("with the image truncated from layer K:")
        for key, vals in rep["truncation"].items():
            lines.append(f"  {key:<9}" + " ".join(f"{v:5.2f}" for v in vals))
    lines.append("examples: " + "; ".join(f"{e['objects']} -> {e['caption']!r}" for e in rep["examples"]))
    lines.append(f"took {rep['seconds']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args, engine = eval_args(argv, __doc__.splitlines()[0], 300, CAPTION_EVAL_SEED,
                             "under 'captions'")
    rep = evaluate_captions(engine, n=args.n, seed=args.seed, sweep=not args.no_sweep)
    print(format_report(rep))
    if args.write_card and not args.no_sweep:
        update_card({"captions": {k: v for k, v in rep.items() if k != "seconds"}},
                    under=args.card_key)


if __name__ == "__main__":
    main()
