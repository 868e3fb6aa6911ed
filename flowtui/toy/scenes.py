"""Synthetic shape scenes for the built-in toy model.

The domain (other parts of flowtui and the tests rely on it, keep it exact):

- RGB images on a light, near-uniform background with 1 to 4 non-overlapping flat shapes;
- colours: red, green, blue, yellow; shapes: circle, square, triangle;
- object sizes between 1/7 and 1/4 of the image's shorter side, positions anywhere;
- no two objects share both colour and shape;
- questions ``Is there a {colour} {shape}?`` answered ``Yes`` or ``No`` (case and trailing
  punctuation do not matter). The toy also knows the single-attribute forms
  ``Is there a {colour} shape?`` and ``Is there a {shape}?``, used as a training curriculum.

Public API::

    rng = np.random.default_rng(0)
    scene = render_scene(rng, size=160)           # Scene: .image (PIL RGB), .objects
    q = sample_question(rng, scene)               # Question: .text, .answer, .target
    grid = mask_to_grid(scene.objects[0].mask, (12, 12))   # coverage per patch in [0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

# Nominal RGB of each colour; every object gets a small random jitter around it so the
# model cannot key on one exact value.
_RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 75, 215),
    "yellow": (235, 200, 30),
}

MIN_FRAC = 1 / 7  # object size as a fraction of the shorter image side
MAX_FRAC = 1 / 4


@dataclass
class SceneObject:
    """One flat shape in a scene.

    ``bbox`` is ``(x0, y0, x1, y1)`` in pixels (half-open), ``mask`` a boolean array of the
    image's ``(height, width)`` that is True where the shape was drawn.
    """

    colour: str
    shape: str
    bbox: tuple[int, int, int, int]
    mask: np.ndarray = field(repr=False)

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass
class Scene:
    """A rendered scene: the RGB image and the objects in it (in drawing order)."""

    image: Image.Image
    objects: list[SceneObject]

    def has(self, colour: str | None = None, shape: str | None = None) -> bool:
        """True if some object matches the given colour and/or shape (None = any)."""
        return any(
            (colour is None or o.colour == colour) and (shape is None or o.shape == shape)
            for o in self.objects
        )

    def find(self, colour: str, shape: str) -> SceneObject | None:
        """The object with this colour and shape, or None (there is at most one)."""
        for o in self.objects:
            if o.colour == colour and o.shape == shape:
                return o
        return None


@dataclass
class Question:
    """A question about a scene with its true answer.

    ``colour`` / ``shape`` are None for the single-attribute forms. ``target`` is the index
    in ``scene.objects`` of the asked object for a colour+shape question answered Yes, else None.
    """

    text: str
    answer: str
    colour: str | None
    shape: str | None
    target: int | None = None


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif shape == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif shape == "triangle":
        draw.polygon([((x0 + x1 - 1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _as_size(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    w, h = size
    return int(w), int(h)


def render_scene(
    rng: np.random.Generator,
    size: int | tuple[int, int] = 160,
    n_objects: int | None = None,
    objects: list[tuple[str, str]] | None = None,
) -> Scene:
    """Render a random scene.

    Args:
        rng: the random generator (the scene is a pure function of its state).
        size: image side in pixels, or ``(width, height)``.
        n_objects: number of shapes (1-4); random if None.
        objects: explicit ``(colour, shape)`` pairs to place (overrides ``n_objects``).
    """
    w, h = _as_size(size)
    side = min(w, h)
    if objects is None:
        n = int(rng.integers(1, 5)) if n_objects is None else int(n_objects)
        if not 1 <= n <= 4:
            raise ValueError("a scene has 1 to 4 objects")
        kinds = [(c, s) for c in COLOURS for s in SHAPES]
        picks = rng.choice(len(kinds), size=n, replace=False)
        objects = [kinds[int(i)] for i in picks]
    elif len({tuple(o) for o in objects}) != len(objects):
        raise ValueError("no two objects may share both colour and shape")

    # Light, near-uniform background: a random pale tint, a faint gradient and a little noise.
    base = rng.uniform(218, 250, size=3)
    grad = rng.uniform(-8, 8, size=(2, 3))
    yy = np.linspace(-0.5, 0.5, h)[:, None, None]
    xx = np.linspace(-0.5, 0.5, w)[None, :, None]
    bg = base + grad[0] * xx + grad[1] * yy + rng.normal(0, 2.0, size=(h, w, 3))
    image = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)

    placed: list[SceneObject] = []
    for colour, shape in objects:
        for _attempt in range(200):
            s = int(round(rng.uniform(MIN_FRAC, MAX_FRAC) * side))
            x0 = int(rng.integers(0, w - s + 1))
            y0 = int(rng.integers(0, h - s + 1))
            box = (x0, y0, x0 + s, y0 + s)
            gap = max(2, side // 40)  # keep shapes visibly apart
            if all(
                box[0] >= o.bbox[2] + gap
                or o.bbox[0] >= box[2] + gap
                or box[1] >= o.bbox[3] + gap
                or o.bbox[1] >= box[3] + gap
                for o in placed
            ):
                break
        else:
            # Crowded: start over with a fresh layout (same objects) rather than overlap.
            return render_scene(rng, size=(w, h), objects=objects)
        rgb = np.clip(np.array(_RGB[colour]) + rng.integers(-18, 19, size=3), 0, 255)
        mask_img = Image.new("L", (w, h), 0)
        _draw_shape(ImageDraw.Draw(mask_img), shape, box, 255)
        _draw_shape(draw, shape, box, tuple(int(v) for v in rgb))
        placed.append(SceneObject(colour, shape, box, np.asarray(mask_img) > 127))
    return Scene(image=image, objects=placed)


def question_text(colour: str | None, shape: str | None) -> str:
    """The canonical question text, e.g. ``Is there a red circle?``."""
    if colour and shape:
        return f"Is there a {colour} {shape}?"
    if colour:
        return f"Is there a {colour} shape?"
    if shape:
        return f"Is there a {shape}?"
    raise ValueError("need a colour or a shape")


def parse_question(text: str) -> tuple[str | None, str | None] | None:
    """(colour, shape) of a question the toy was trained on (``question_text``'s three forms,
    any case and punctuation), or None for anything outside its domain."""
    words = "".join(c if c.isalnum() else " " for c in text.lower()).split()
    if words[:3] != ["is", "there", "a"]:
        return None
    rest = words[3:]
    if len(rest) == 2 and rest[0] in COLOURS and rest[1] in (*SHAPES, "shape"):
        return rest[0], None if rest[1] == "shape" else rest[1]
    if len(rest) == 1 and rest[0] in SHAPES:
        return None, rest[0]
    return None


def answer_for(scene: Scene, colour: str | None, shape: str | None) -> str:
    """The true answer (``Yes`` / ``No``) to ``question_text(colour, shape)`` on ``scene``."""
    return "Yes" if scene.has(colour, shape) else "No"


def make_question(scene: Scene, colour: str | None, shape: str | None) -> Question:
    """A Question with its true answer and, for a Yes colour+shape question, its target."""
    target = None
    if colour and shape:
        for i, o in enumerate(scene.objects):
            if o.colour == colour and o.shape == shape:
                target = i
    return Question(question_text(colour, shape), answer_for(scene, colour, shape), colour, shape, target)


def sample_question(
    rng: np.random.Generator,
    scene: Scene,
    yes: bool | None = None,
    hard_negative: float = 0.5,
) -> Question:
    """A random ``Is there a {colour} {shape}?`` question about ``scene``.

    Args:
        yes: force the answer (True = Yes, False = No); None = fair coin.
        hard_negative: for No questions, the probability of asking about a colour and a
            shape that are both in the scene on different objects (when possible), so the
            answer needs binding colour to shape rather than spotting either alone.
    """
    if yes is None:
        yes = bool(rng.random() < 0.5)
    if yes:
        o = scene.objects[int(rng.integers(len(scene.objects)))]
        return make_question(scene, o.colour, o.shape)
    absent = [(c, s) for c in COLOURS for s in SHAPES if not scene.has(c, s)]
    hard = [
        (c, s) for c, s in absent if scene.has(colour=c) and scene.has(shape=s)
    ]
    pool = hard if hard and rng.random() < hard_negative else absent
    c, s = pool[int(rng.integers(len(pool)))]
    return make_question(scene, c, s)


def sample_attribute_question(rng: np.random.Generator, scene: Scene, yes: bool | None = None) -> Question:
    """A single-attribute question (``Is there a red shape?`` / ``Is there a circle?``)."""
    if yes is None:
        yes = bool(rng.random() < 0.5)
    by_colour = bool(rng.random() < 0.5)
    values = COLOURS if by_colour else SHAPES
    present = [v for v in values if (scene.has(colour=v) if by_colour else scene.has(shape=v))]
    pool = present if yes else [v for v in values if v not in present]
    if not pool:  # e.g. all three shapes present and a No was asked for: flip the answer
        pool = present if not yes else [v for v in values if v not in present]
    v = pool[int(rng.integers(len(pool)))]
    return make_question(scene, v if by_colour else None, None if by_colour else v)


def mask_to_grid(mask: np.ndarray, grid: tuple[int, int] = (12, 12)) -> np.ndarray:
    """Fraction of each patch covered by ``mask``, as float32 ``[rows, cols]`` in [0, 1].

    The image processor resizes the whole image to a square without cropping, so patch
    (r, c) covers the same fraction of the original image whatever its size or aspect.
    """
    rows, cols = grid
    m = Image.fromarray(mask.astype(np.uint8) * 255, "L")
    # BOX resampling averages exactly the pixels that fall in each cell.
    return np.asarray(m.resize((cols, rows), Image.Resampling.BOX), dtype=np.float32) / 255.0


def patch_labels(scene: Scene, grid: tuple[int, int] = (12, 12), min_cover: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch colour and shape labels (int64 ``[rows, cols]``; 0 = background).

    Colour labels are ``1 + COLOURS.index``, shape labels ``1 + SHAPES.index``, taken from
    the object covering the patch most, if it covers at least ``min_cover`` of it. Used as
    the toy's auxiliary training target.
    """
    col = np.zeros(grid, dtype=np.int64)
    shp = np.zeros(grid, dtype=np.int64)
    best = np.full(grid, min_cover, dtype=np.float32)
    for o in scene.objects:
        cov = mask_to_grid(o.mask, grid)
        better = cov >= best
        col[better] = 1 + COLOURS.index(o.colour)
        shp[better] = 1 + SHAPES.index(o.shape)
        best = np.maximum(best, cov)
    return col, shp
