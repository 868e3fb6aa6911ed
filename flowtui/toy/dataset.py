"""A POPE-format dataset of toy scenes, for `flowtui dataset run` with the built-in toy model.

    python -m flowtui.toy.dataset OUT [--n 500] [--seed 12345]

    python -m flowtui.toy.dataset OUT --captions [--n 500]

Writes OUT/pope.jsonl (question_id, image, text, label, category, as POPE's files are, and
region: the asked object's box [x0, y0, x1, y1] where the answer is yes, else null) and
OUT/images/*.png. Scene i and its question are exactly the ones `python -m flowtui.toy.evaluate`
draws for the same seed (the model card's held-out family by default), so a dataset run on them
reproduces the card's truncation curve. With --captions: OUT/captions.jsonl (question_id,
image, text = the caption prompt, objects = the scene's objects as "red circle"...),
OUT/images/ and OUT/vocabulary.txt (every toy object, one a line), for `flowtui dataset run
--scoring chair --vocabulary OUT/vocabulary.txt`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from flowtui.toy.captions import DEFAULT_PROMPT
from flowtui.toy.evaluate import HELD_OUT_SEED
from flowtui.toy.scenes import COLOURS, SHAPES, render_scene, sample_question

DATA_FILE = "pope.jsonl"
CAPTIONS_FILE = "captions.jsonl"
VOCABULARY_FILE = "vocabulary.txt"
# The caption set's scenes are the POPE set's (the card's held-out family): scene i is the
# same image in both, asked to describe it instead of a yes/no question.
CAPTION_SEED = HELD_OUT_SEED


def write_toy_dataset(out: str | Path, n: int = 500, seed: int = HELD_OUT_SEED) -> Path:
    """Write `n` scenes with balanced yes/no questions; returns the JSON-lines file."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])  # as evaluate.evaluate draws scene i
        scene = render_scene(rng, size=int(rng.integers(64, 257)))
        q = sample_question(rng, scene, yes=i % 2 == 0)
        name = f"images/toy-{i:06d}.png"
        scene.image.save(out / name)
        # The asked object's box where the answer is Yes (`dataset run --lens` reads it).
        region = None if q.target is None else list(scene.objects[q.target].bbox)
        lines.append(json.dumps({"question_id": i, "image": name, "text": q.text,
                                 "label": q.answer.lower(), "category": "toy",
                                 "region": region}))
    path = out / DATA_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


def write_caption_dataset(out: str | Path, n: int = 500, seed: int = CAPTION_SEED) -> Path:
    """Write `n` scenes to caption (captions.jsonl, images/, vocabulary.txt); returns the
    JSON-lines file. Scene i is drawn from (seed, i)."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        scene = render_scene(rng, size=int(rng.integers(64, 257)))
        name = f"images/toy-caption-{i:06d}.png"
        scene.image.save(out / name)
        lines.append(json.dumps({"question_id": i, "image": name, "text": DEFAULT_PROMPT,
                                 "objects": sorted(o.name for o in scene.objects)}))
    (out / VOCABULARY_FILE).write_text(
        "# every object of the toy's scenes (the CHAIR vocabulary for its captions)\n"
        + "".join(f"{c} {s}\n" for c in COLOURS for s in SHAPES))
    path = out / CAPTIONS_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flowtui.toy.dataset",
                                description=__doc__.splitlines()[0])
    p.add_argument("out", help="folder to write (pope.jsonl and images/)")
    p.add_argument("--n", type=int, default=500, help="number of scenes (default 500)")
    p.add_argument("--seed", type=int, default=HELD_OUT_SEED,
                   help=f"scene seed family (default {HELD_OUT_SEED}, the card's held-out one)")
    p.add_argument("--captions", action="store_true", help="write a caption set (see above)")
    args = p.parse_args(argv)
    if args.captions:
        path = write_caption_dataset(args.out, args.n, args.seed)
        print(f"wrote {args.n} toy scenes to caption: {path}")
        return 0
    path = write_toy_dataset(args.out, args.n, args.seed)
    print(f"wrote {args.n} toy scenes: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
