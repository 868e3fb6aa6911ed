"""The toy's captions: what it says to "Describe the image." and how to read a caption back.

A caption names every object of the scene with its colour, in a fixed order: by colour as
COLOURS lists them (red, green, blue, yellow), then by shape as SHAPES lists them, e.g.
``a red circle, a red triangle, a blue square.``. The order is a function of the object set
alone, so a caption is right exactly when it names the right set (objects never repeat).

    caption_text(scene)          # "a red circle, a blue square."
    caption_prompt(rng)          # one of CAPTION_PROMPTS
    mentioned("a red circle, a blue square.")   # [("red", "circle"), ("blue", "square")]
"""

from __future__ import annotations

import re

import numpy as np

from flowtui.toy.scenes import COLOURS, SHAPES, Scene, SceneObject

# The phrasings the toy is trained to caption (case and punctuation do not matter).
CAPTION_PROMPTS: tuple[str, ...] = (
    "Describe the image.",
    "Describe the picture.",
    "Describe this image.",
    "Describe the scene.",
    "What is in the image?",
    "Caption the image.",
)
# What `flowtui dataset toy --captions` asks (the CHAIR set's text column).
DEFAULT_PROMPT = CAPTION_PROMPTS[0]


def words_pattern() -> str:
    """The caption prompts as a regex over the words of a question (flowtui.json)."""
    return "|".join(" ".join(re.findall(r"[a-z0-9]+", p.lower())) for p in CAPTION_PROMPTS)


def is_caption_prompt(text: str) -> bool:
    return re.fullmatch(words_pattern(), " ".join(re.findall(r"[a-z0-9]+", text.lower()))) is not None


def caption_order(objects: list[SceneObject]) -> list[SceneObject]:
    """The objects in the order a caption names them."""
    return sorted(objects, key=lambda o: (COLOURS.index(o.colour), SHAPES.index(o.shape)))


def caption_tokens(scene: Scene) -> list[str]:
    """The caption as the toy's tokens: ``a red circle , a blue square .``."""
    out: list[str] = []
    for i, o in enumerate(caption_order(scene.objects)):
        out += (["a", o.colour, o.shape] + ([","] if i < len(scene.objects) - 1 else ["."]))
    return out


def caption_text(scene: Scene) -> str:
    """The true caption, as the toy's tokenizer decodes it."""
    return " ".join(caption_tokens(scene)).replace(" ,", ",").replace(" .", ".")


def caption_prompt(rng: np.random.Generator) -> str:
    return CAPTION_PROMPTS[int(rng.integers(len(CAPTION_PROMPTS)))]


def mentioned(caption: str) -> list[tuple[str, str]]:
    """The (colour, shape) pairs a caption names, in order, repeats kept."""
    words = re.findall(r"[a-z]+", caption.lower())
    return [(a, b) for a, b in zip(words, words[1:], strict=False) if a in COLOURS and b in SHAPES]
