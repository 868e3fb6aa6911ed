"""The questions the built-in toy answers, as the `flowtui.json` its weights folder ships
(flowtui.engine.notes): the engine notes any other question without knowing the toy."""

from __future__ import annotations

import json
from pathlib import Path

from flowtui.toy import captions
from flowtui.toy.scenes import COLOURS, SHAPES

NOTE = ("the built-in toy model only answers \"Is there a {colour} {shape}?\" (colours "
        f"{', '.join(COLOURS)}; shapes {', '.join(SHAPES)}) and describes the image when asked "
        f"(\"{captions.DEFAULT_PROMPT}\" and {len(captions.CAPTION_PROMPTS) - 1} other phrasings): "
        "its answer to anything else means nothing")


def words_pattern() -> str:
    """parse_question's three forms and the caption prompts as a regex over the question's words."""
    colours, shapes = "|".join(COLOURS), "|".join(SHAPES)
    return f"is there a (?:(?:{colours}) (?:{shapes}|shape)|(?:{shapes}))|{captions.words_pattern()}"


def write(folder: str | Path) -> Path:
    """Write the toy's flowtui.json into its weights folder (train.py does, after saving)."""
    path = Path(folder) / "flowtui.json"
    spec = {"questions": {"words": words_pattern(), "note": NOTE}}
    path.write_text(json.dumps(spec, indent=1) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":
    from flowtui.toy import WEIGHTS_DIR

    print(write(WEIGHTS_DIR))
