"""What the logit lens shows on the toy's image tokens, measured on held-out scenes (the model
card's lens paragraph comes from this).

    python -m flowtui.toy.lens_probe [--n 60] [--seed 12345] [--write-card]

For Yes colour+shape questions on held-out scenes (the card's seed family), the lens of every
layer on the asked object's tokens (feature tokens whose region's centre lies in its box) and on
the background (tokens over no object): how often the object's colour word and shape word are
the top-1 token, and their mean lens probability; and which word is most often the top-1 token
on each (pooled over the scenes' tokens of that kind). Prints a table per layer.
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from flowtui.toy.evaluate import HELD_OUT_SEED, update_card
from flowtui.toy.scenes import render_scene, sample_question


def probe(n: int = 60, seed: int = HELD_OUT_SEED) -> dict:
    import flowtui
    from flowtui.dataset.lens import region_tokens

    engine = flowtui.load_engine(None, device="cpu", dtype="float32")
    rows: dict[str, list[np.ndarray]] = {k: [] for k in (
        "colour_top_obj", "shape_top_obj", "colour_top_bg", "shape_top_bg",
        "colour_p_obj", "shape_p_obj", "colour_p_bg", "shape_p_bg")}
    # Per layer, how often each word tops the object's / the background's tokens (pooled).
    tops: dict[str, list[Counter[str]]] = {"obj": [], "bg": []}
    correct = 0
    used, i = 0, 0
    while used < n:
        rng = np.random.default_rng([seed, i])
        i += 1
        scene = render_scene(rng, size=int(rng.integers(64, 257)))
        q = sample_question(rng, scene, yes=True)
        if q.target is None:
            continue
        obj = scene.objects[q.target]
        a = engine.analyze(scene.image, q.text, max_new_tokens=2, cam=False, self_check=False)
        on = region_tokens(a, obj.bbox)
        anywhere = np.zeros(a.num_features, dtype=bool)
        for o in scene.objects:
            anywhere[region_tokens(a, o.bbox)] = True
        # Tokens with no region (none in the toy) are neither object nor background.
        anywhere |= ~np.isfinite(np.asarray(a.token_regions, dtype=np.float64)).all(axis=1)
        bg = np.flatnonzero(~anywhere)
        if on.size == 0 or bg.size == 0:
            continue
        used += 1
        correct += a.answer.strip().rstrip(".").lower() == q.answer.lower()
        lens = engine.lens(a)  # the top-5 do not depend on the word; this keeps it on `a`
        for name, toks in (("obj", on), ("bg", bg)):
            if not tops[name]:
                tops[name] = [Counter() for _ in range(lens.num_layers)]
            for layer in range(lens.num_layers):
                tops[name][layer].update(lens.strings.get(int(t), f"#{int(t)}")
                                         for t in lens.top_ids[layer, toks, 0])
        for kind, word in (("colour", obj.colour), ("shape", obj.shape)):
            lens = engine.lens(a, word)
            top = lens.top_ids[:, :, 0] == lens.word_id  # [L, N]
            rows[f"{kind}_top_obj"].append(top[:, on].mean(1))
            rows[f"{kind}_top_bg"].append(top[:, bg].mean(1))
            rows[f"{kind}_p_obj"].append(lens.word_prob[:, on].mean(1))
            rows[f"{kind}_p_bg"].append(lens.word_prob[:, bg].mean(1))
    return {"scenes": used, "correct": correct, "tops": tops,
            **{k: np.mean(v, axis=0) for k, v in rows.items()}}


def _most(counts: Counter[str]) -> str:
    word, k = counts.most_common(1)[0]
    return f"{word} {k / max(1, sum(counts.values())):.0%}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flowtui.toy.lens_probe",
                                description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=60, help="scenes (Yes colour+shape questions)")
    p.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="scene seed family")
    p.add_argument("--write-card", action="store_true",
                   help="write the numbers to card.json's `lens` entry")
    args = p.parse_args(argv)
    r = probe(args.n, args.seed)
    print(f"{r['scenes']} held-out scenes; per layer, over the asked object's tokens (obj) and "
          "the background (bg):")
    print(f"(the toy answered Yes, correctly, on {r['correct']}/{r['scenes']})")
    print("layer  colour top-1 obj/bg   shape top-1 obj/bg   p(colour) obj/bg    p(shape) obj/bg"
          "   most frequent top-1 obj / bg")
    for layer in range(len(r["colour_top_obj"])):
        print(f"{layer:5d}  {r['colour_top_obj'][layer]:6.1%} {r['colour_top_bg'][layer]:6.1%}"
              f"       {r['shape_top_obj'][layer]:6.1%} {r['shape_top_bg'][layer]:6.1%}"
              f"      {r['colour_p_obj'][layer]:.3f} {r['colour_p_bg'][layer]:.3f}"
              f"       {r['shape_p_obj'][layer]:.3f} {r['shape_p_bg'][layer]:.3f}"
              f"     {_most(r['tops']['obj'][layer])} / {_most(r['tops']['bg'][layer])}")
    if args.write_card:
        keys = [k for k in r if k.endswith(("_obj", "_bg"))]
        update_card({"lens": {"held_out_scenes": r["scenes"], "seed": args.seed,
                              "answered_yes": r["correct"],
                              **{k: [round(float(v), 4) for v in r[k]] for k in keys}}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
