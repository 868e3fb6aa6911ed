"""The plain-data results that cross the engine interface: numpy arrays, strings, dataclasses.

Nothing here holds a tensor, so a remote engine can produce the same objects and the UI can
render them with no model loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flowtui.engine.knockout_flows import KnockoutResult

# The four token groups, in sequence order; array axes over groups follow this order.
GROUPS: tuple[str, ...] = ("system", "image", "user", "output")

Spans = list[tuple[int, int]]


@dataclass(frozen=True)
class Progress:
    """One progress report from a long engine call.

    `stage` is one of: importing, loading, generating, capturing, cam, checking (the
    self-checks), truncating, sweep, lens.
    `done`/`total` count steps within the stage (total 0 means "unknown").
    """

    stage: str
    done: int = 0
    total: int = 0
    message: str = ""


ProgressFn = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    """The ProgressFn of a caller that gave none."""


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

    site: str = "post_attention_layernorm"  # the module whose output is the MLP input
    target: str = "sum of answer-token logits"
    threshold: float = 0.5
    # False when the analysis skipped the backward pass (analyze(cam=False), e.g. a dataset
    # run without snapshots): cam_tokens are then zeros, not a map.
    computed: bool = True


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
    """Truncation at every K = 0..L (strategy `all` unless stated): the cliff layer is
    defined on the `all` sweep."""

    logprob: np.ndarray  # float32 [L+1]
    same: np.ndarray  # bool [L+1]
    answers: list[str]
    cliff_layer: int | None
    seconds: float = 0.0
    strategy: str = "all"
    keep: int | None = None
    seed: int | None = None


@dataclass
class Lens:
    """The logit lens on the feature tokens (docs/definitions.md, "Logit lens on image tokens"):
    per layer l and feature token i (in `cam_tokens` order), the decoder's own final norm and
    output head on the residual stream after layer l, softmaxed over the vocabulary.

    top_ids int32 [L, N, k] and top_probs float32 [L, N, k] (k = 5, most probable first);
    word_prob float32 [L, N]: the probability of `word` (token id `word_id`). `strings` names
    every id in top_ids and the word as the tokenizer decodes it, so no tokenizer is needed to
    show them.
    """

    word: str
    word_id: int
    top_ids: np.ndarray
    top_probs: np.ndarray
    word_prob: np.ndarray
    strings: dict[int, str] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return int(self.word_prob.shape[0])

    def top_words(self, layer: int) -> list[str]:
        """Each feature token's most probable token at `layer`, as text."""
        return [self.strings.get(int(t), f"#{int(t)}") for t in self.top_ids[layer, :, 0]]

    def first_top_layer(self, tokens: np.ndarray, token_id: int | None = None) -> int | None:
        """The first layer at which `token_id` (default: the word) is the top token of any
        of the feature tokens `tokens` (indices into N); None if never."""
        tid = self.word_id if token_id is None else int(token_id)
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.size == 0:
            return None
        hit = (self.top_ids[:, tokens, 0] == tid).any(axis=1)
        return int(np.argmax(hit)) if hit.any() else None


@dataclass
class Check:
    """One self-check of an analysis (docs/definitions.md, "Self-checks"): an invariant that a
    silent change in transformers, torch or the model would break, with the numbers compared."""

    name: str
    passed: bool
    numbers: dict[str, float] = field(default_factory=dict)
    detail: str = ""

    def describe(self) -> str:
        """One line: the check, what it found, and the numbers."""
        nums = ", ".join(f"{k} {v:.6g}" for k, v in self.numbers.items())
        text = self.name + (f": {self.detail}" if self.detail else "")
        return text + (f" ({nums})" if nums else "")


@dataclass
class Analysis:
    """Everything the explorer shows for one image + question.

    Arrays follow docs/definitions.md: shares [L,4], head_shares [L,H,4], answer_logprobs [T], and per
    feature token (the image-group positions that carry a vision feature, in sequence order):
    `cam_tokens` [L,N] in [0,1], `token_regions` [N,4] (x0, y0, x1, y1 in pixels of the
    original `image`, NaN where a token has no region), `token_views` [N] (index into `views`).
    `image` is the RGB input as uint8 [H,W,3]. `groups` holds half-open position ranges over
    the teacher-forced sequence prompt + answer.
    """

    model: ModelInfo
    question: str
    prompt: str
    answer: str
    answer_token_ids: list[int]
    tokens: list[str]
    groups: dict[str, Spans]
    image: np.ndarray
    shares: np.ndarray
    head_shares: np.ndarray
    answer_logprobs: np.ndarray
    cam_tokens: np.ndarray
    token_regions: np.ndarray
    token_views: np.ndarray
    views: list[str] = field(default_factory=lambda: ["image"])
    # Sequence positions of the feature tokens [N] (a subset of the image group).
    feature_positions: np.ndarray | None = None
    # (rows, cols) when the feature tokens are one raster grid over one view; None otherwise.
    image_grid: tuple[int, int] | None = None
    # Head-mean attention from the last prompt position to each feature token, per layer [L, N]:
    # what the `top` truncation strategy ranks by (FastV-style).
    image_attention: np.ndarray | None = None
    # The answer's attention on each feature token, per layer [L, N]: mean over heads and
    # answer queries (the second map mode beside the CAM).
    attention_tokens: np.ndarray | None = None
    # Every answer token on its own (docs/definitions.md, "Per-token quantities"), answer token
    # first: `token_head_shares` [T, L, H, 4] (its query row of the head shares; `token_shares`
    # is their head mean), `token_attention` [T, L, N] (head-mean attention of its query on each
    # feature token) and `token_cam` [T, L, N] (the LLaVA-CAM of its own logit; None unless
    # asked for: analyze(per_token=True)). None in snapshots older than version 3.
    token_head_shares: np.ndarray | None = None
    token_attention: np.ndarray | None = None
    token_cam: np.ndarray | None = None
    cam_settings: CamSettings = field(default_factory=CamSettings)
    truncations: list[TruncationRun] = field(default_factory=list)
    sweep_logprob: np.ndarray | None = None
    sweep_same: np.ndarray | None = None
    sweep_answers: list[str] | None = None
    cliff_layer: int | None = None
    created: str = ""
    flowtui_version: str = ""
    # Version-1 snapshots: the part of `image` the patch grid covered (center-crop processors).
    # Version 2 keeps this in `token_regions` instead.
    image_box: tuple[int, int, int, int] | None = None
    # Whether the answer ended with the model's end-of-sequence token (dropped from the answer):
    # a truncated run only "equals" the baseline if it also stops there.
    ended_with_eos: bool = True
    # The generation budget of the baseline; truncated reruns get the same one.
    max_new_tokens: int = 32
    # What the reader should know about how this came about (an EXIF rotation, the first of
    # several frames, transparency composited on white, ...), one sentence each.
    notes: list[str] = field(default_factory=list)
    # The self-checks run with the analysis (empty where they were skipped or the snapshot
    # predates them).
    checks: list[Check] = field(default_factory=list)
    # The logit lens for the default word (the answer's first token), once computed (`lens`
    # on an engine, `--lens` headless); None until then.
    lens: Lens | None = None
    # Attention knockout between token groups, where one was run (knockout_flows.py).
    knockout: KnockoutResult | None = None

    def __post_init__(self) -> None:
        if self.feature_positions is None:
            self.feature_positions = self.image_positions
        self.feature_positions = np.asarray(self.feature_positions, dtype=np.int64)

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def num_layers(self) -> int:
        return int(self.shares.shape[0])

    @property
    def num_heads(self) -> int:
        return int(self.head_shares.shape[1])

    @property
    def token_shares(self) -> np.ndarray | None:
        """[T, L, 4]: each answer token's shares (its head shares, mean over heads)."""
        if self.token_head_shares is None:
            return None
        return self.token_head_shares.mean(axis=2)

    @property
    def num_answer_tokens(self) -> int:
        return len(self.answer_token_ids)

    @property
    def num_features(self) -> int:
        return int(self.cam_tokens.shape[1])

    @property
    def cam(self) -> np.ndarray | None:
        """The CAM as [L, rows, cols] where the layout is one grid (as version 1 stored it)."""
        if self.image_grid is None or len(self.views) != 1:
            return None
        rows, cols = self.image_grid
        if rows * cols != self.num_features:
            return None
        return self.cam_tokens.reshape(self.num_layers, rows, cols)

    @property
    def prompt_length(self) -> int:
        return self.groups["output"][0][0] if self.groups["output"] else len(self.tokens)

    @property
    def image_positions(self) -> np.ndarray:
        return np.concatenate(
            [np.arange(s, e) for s, e in self.groups["image"]] or [np.zeros(0, dtype=np.int64)]
        ).astype(np.int64)

    def view_tokens(self, view: int) -> np.ndarray:
        """Indices of the feature tokens that belong to view number `view`."""
        return np.flatnonzero(np.asarray(self.token_views) == view)

    def group_sizes(self) -> np.ndarray:
        """Number of positions in each group, in GROUPS order (for the per-token view)."""
        return np.array([sum(e - s for s, e in self.groups[g]) for g in GROUPS], dtype=np.int64)

    def set_sweep(self, sweep: Sweep) -> None:
        self.sweep_logprob = sweep.logprob
        self.sweep_same = sweep.same
        self.sweep_answers = sweep.answers
        self.cliff_layer = sweep.cliff_layer

    def save(self, path: str | Path, screen_svg: str | None = None,
             inputs: Iterable[str | Path | None] = ()) -> Path:
        """Write a `.flowtui` snapshot atomically; returns the path written. Refuses to replace
        a file that is not a snapshot, or the input image (`inputs`)."""
        if _writer is None:  # only if flowtui.engine never ran its __init__: cannot happen
            raise RuntimeError("no snapshot writer: import flowtui.engine")
        return _writer(self, path, screen_svg=screen_svg, inputs=inputs)


# The snapshot writer (flowtui.engine.snapshot.save_snapshot), set by the flowtui.engine
# package as it loads: this data module imports nothing above it, so no import cycle runs
# through the Analysis every module uses.
_writer: Callable[..., Path] | None = None


def set_writer(writer: Callable[..., Path]) -> None:
    global _writer
    _writer = writer


def grid_regions(
    rows: int, cols: int, box: tuple[float, float, float, float]
) -> np.ndarray:
    """Regions [rows*cols, 4] of a raster grid laid over `box` = (x0, y0, x1, y1), row-major."""
    x0, y0, x1, y1 = (float(v) for v in box)
    xs = np.linspace(x0, x1, cols + 1, dtype=np.float64)
    ys = np.linspace(y0, y1, rows + 1, dtype=np.float64)
    rr, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    r, c = rr.reshape(-1), cc.reshape(-1)
    return np.stack([xs[c], ys[r], xs[c + 1], ys[r + 1]], axis=1).astype(np.float32)


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
