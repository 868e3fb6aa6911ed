"""The plain-data results that cross the engine interface: numpy arrays, strings, dataclasses.

Nothing here holds a tensor, so a remote engine can produce the same objects and the UI can
render them with no model loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# The four token groups, in sequence order; array axes over groups follow this order.
GROUPS: tuple[str, ...] = ("system", "image", "user", "output")

Spans = list[tuple[int, int]]


@dataclass(frozen=True)
class Progress:
    """One progress report from a long engine call.

    `stage` is one of: loading, generating, capturing, cam, truncating, sweep.
    `done`/`total` count steps within the stage (total 0 means "unknown").
    """

    stage: str
    done: int = 0
    total: int = 0
    message: str = ""


ProgressFn = Callable[[Progress], None]


@dataclass
class ModelInfo:
    name: str
    family: str
    num_layers: int
    num_heads: int
    dtype: str
    device: str


@dataclass
class CamSettings:
    """How the CAM was computed and how it is shown (the paper's defaults)."""

    site: str = "post_attention_layernorm"
    target: str = "sum of answer-token logits"
    threshold: float = 0.5


@dataclass
class TruncationRun:
    """One rerun with the image cut off from `layer` onward.

    `baseline_logprob` is the teacher-forced log-probability of the *baseline* answer under the
    truncated model (sum over answer tokens), which moves smoothly where the greedy answer jumps.
    """

    layer: int
    strategy: str  # "all" | "top" | "random"
    keep: int | None
    seed: int | None
    answer: str
    answer_token_ids: list[int]
    baseline_logprob: float
    same: bool  # greedy answer equals the baseline answer
    seconds: float = 0.0


@dataclass
class Sweep:
    """Truncation with strategy `all` at every K = 0..L."""

    logprob: np.ndarray  # float32 [L+1]
    same: np.ndarray  # bool [L+1]
    answers: list[str]
    cliff_layer: int | None
    seconds: float = 0.0


@dataclass
class Analysis:
    """Everything the explorer shows for one image + question.

    Arrays follow DESIGN.md: shares [L,4], head_shares [L,H,4], cam [L,rows,cols] in [0,1],
    answer_logprobs [T]. `image` is the RGB input as uint8 [H,W,3]; `image_box` is the part of
    it the patch grid covers (processors that center-crop drop the sides): draw the CAM over
    `visible_image`. `groups` holds half-open
    position ranges over the teacher-forced sequence prompt + answer.
    """

    model: ModelInfo
    question: str
    prompt: str
    answer: str
    answer_token_ids: list[int]
    tokens: list[str]
    groups: dict[str, Spans]
    image_grid: tuple[int, int]
    image: np.ndarray
    shares: np.ndarray
    head_shares: np.ndarray
    cam: np.ndarray
    answer_logprobs: np.ndarray
    # Head-mean attention from the last prompt position to each image token, per layer [L, N_img]:
    # what the `top` truncation strategy ranks by (FastV-style).
    image_attention: np.ndarray | None = None
    cam_settings: CamSettings = field(default_factory=CamSettings)
    truncations: list[TruncationRun] = field(default_factory=list)
    sweep_logprob: np.ndarray | None = None
    sweep_same: np.ndarray | None = None
    sweep_answers: list[str] | None = None
    cliff_layer: int | None = None
    created: str = ""
    flowtui_version: str = ""
    # (left, top, right, bottom) of `image` that the model's patch grid covers; None = all of it.
    image_box: tuple[int, int, int, int] | None = None
    # Whether the answer ended with the model's end-of-sequence token (dropped from the answer):
    # a truncated run only "equals" the baseline if it also stops there.
    ended_with_eos: bool = True
    # The generation budget of the baseline; truncated reruns get the same one.
    max_new_tokens: int = 32

    @property
    def num_layers(self) -> int:
        return int(self.shares.shape[0])

    @property
    def num_heads(self) -> int:
        return int(self.head_shares.shape[1])

    @property
    def visible_image(self) -> np.ndarray:
        """The part of the image the model saw, which the CAM grid covers exactly."""
        if self.image_box is None:
            return self.image
        left, top, right, bottom = self.image_box
        return self.image[top:bottom, left:right]

    @property
    def prompt_length(self) -> int:
        return self.groups["output"][0][0] if self.groups["output"] else len(self.tokens)

    @property
    def image_positions(self) -> np.ndarray:
        return np.concatenate(
            [np.arange(s, e) for s, e in self.groups["image"]] or [np.zeros(0, dtype=np.int64)]
        )

    def group_sizes(self) -> np.ndarray:
        """Number of positions in each group, in GROUPS order (for the per-token view)."""
        return np.array([sum(e - s for s, e in self.groups[g]) for g in GROUPS], dtype=np.int64)

    def set_sweep(self, sweep: Sweep) -> None:
        self.sweep_logprob = sweep.logprob
        self.sweep_same = sweep.same
        self.sweep_answers = sweep.answers
        self.cliff_layer = sweep.cliff_layer

    def save(self, path: str | Path, screen_svg: str | None = None) -> Path:
        """Write a `.flowtui` snapshot atomically; returns the path written."""
        from flowtui.engine.snapshot import save_snapshot

        return save_snapshot(self, path, screen_svg=screen_svg)


def cliff_layer(same: np.ndarray) -> int | None:
    """Smallest K such that the truncated answer equals the baseline for every K' >= K.

    `same` is indexed by K = 0..L. None when even K = L differs (a non-deterministic model).
    """
    same = np.asarray(same, dtype=bool)
    if same.size == 0 or not same[-1]:
        return None
    k = same.size - 1
    while k > 0 and same[k - 1]:
        k -= 1
    return int(k)
