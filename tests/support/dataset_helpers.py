"""Small datasets and run folders for the dataset tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

QUESTIONS = ("Is there a red circle?", "Is there a blue square?", "what colour is the shape?",
             "Is there a horse in the picture?", "how many dogs are there?")


def write_pope(folder: Path, n: int, seed: int = 0, extra: list[dict] | None = None) -> Path:
    """A POPE-format dataset of `n` random images (yes/no labels alternating) plus `extra`
    rows as given."""
    folder = Path(folder)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        w, h = int(rng.integers(40, 120)), int(rng.integers(40, 120))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            folder / "img" / f"{i}.png")
        lines.append({"question_id": 1000 + i, "image": f"img/{i}.png",
                      "text": QUESTIONS[i % len(QUESTIONS)], "label": "yes" if i % 2 else "no"})
    lines += extra or []
    path = folder / "pope.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def samples(run_dir: Path) -> list[dict]:
    """The merged records of a finished run, without timing and process fields."""
    from flowtui.dataset.results import read_records, sample_key

    return [sample_key(r) for r in read_records(Path(run_dir) / "samples.jsonl")]


def shard_indices(run_dir: Path) -> list[int]:
    """Every sample index in the process files, duplicates included."""
    from flowtui.dataset.results import read_records, shard_paths

    return [r["index"] for p in shard_paths(Path(run_dir)) for r in read_records(p)]


def fake_run(folder: Path, num_layers: int, n: int = 6, seed: int = 0) -> Path:
    """A finished run folder of the fake engine on a small POPE set (no model): the fake's cliff
    varies with the question, so the accuracy curve has a slope."""
    from flowtui.dataset.readers import open_dataset
    from flowtui.dataset.runner import build_config, run_dataset
    from support.fake_engine import FakeEngine

    class Varying(FakeEngine):
        def analyze(self, image, question, max_new_tokens=32, progress=None, cam=True,
                    self_check=True):
            self.cliff = len(question) % (self.num_layers // 2 + 1)
            return super().analyze(image, question, max_new_tokens, progress, cam)

    data = write_pope(folder / "data", n, seed=seed)
    # Every label yes: the fake's baseline "Yes." is right and its truncated "No." wrong, so
    # accuracy climbs from 0 to 1 as K passes each sample's cliff.
    rows = [{**json.loads(line), "label": "yes"} for line in data.read_text().splitlines()]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    src = open_dataset(data)
    out = folder / "run"
    # pope-first-word: the fake says "Yes." and "No.", which lmms-eval's rule counts wrong.
    config = build_config(src, None, scoring="pope-first-word", max_new_tokens=4)
    run_dataset(src, config, Varying(num_layers=num_layers), out)
    return out
