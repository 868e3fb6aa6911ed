"""Attention knockout between token groups, the plain-data half (docs/definitions.md,
"Knockout positions and flows"): positions, flows, layer windows and the result. No torch here,
so the UI, the snapshot codec and dataset summaries read it with no model loaded.

After Geva et al. (2023) and Zhang, Yadav, Han & Shutova, "Cross-modal Information Flow in
Multimodal Large Language Models" (CVPR 2025).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowtui.engine.errors import InputError

# Knockout positions in sequence order: a flow may only run forward along it (or last->last).
POSITIONS: tuple[str, ...] = ("system", "image", "question", "last", "answer")
# The four flows the paper plots, in its order.
STANDARD_FLOWS: tuple[str, ...] = ("image->question", "image->last", "question->last",
                                   "last->last")
# Knocking these out on layers K..L-1 is truncation from K with strategy `all`.
TRUNCATION_FLOW = "image->question+image->last+image->answer"


@dataclass(frozen=True)
class Flow:
    """One curve: the edges (SRC, DST) knocked out together, named as the user wrote them."""

    name: str
    edges: tuple[tuple[str, str], ...]

    def matrix(self) -> np.ndarray:
        """bool [5, 5]: [src, dst] knocked out, indices into POSITIONS."""
        m = np.zeros((len(POSITIONS), len(POSITIONS)), dtype=bool)
        for src, dst in self.edges:
            m[POSITIONS.index(src), POSITIONS.index(dst)] = True
        return m


def parse_flow(item: str) -> Flow:
    """`image->question+image->last` -> Flow; a clear one-line InputError otherwise."""
    text = item.strip()
    if not text:
        raise InputError("an empty knockout flow; write SRC->DST, e.g. image->last")
    edges: list[tuple[str, str]] = []
    for part in text.split("+"):
        bits = [b.strip() for b in part.split("->")]
        if len(bits) != 2 or not all(bits):
            raise InputError(f"knockout flow {part.strip()!r} is not SRC->DST (e.g. image->last)")
        src, dst = bits
        for p in (src, dst):
            if p not in POSITIONS:
                raise InputError(f"unknown knockout position {p!r}; choose from "
                                 f"{', '.join(POSITIONS)}")
        if not (POSITIONS.index(src) < POSITIONS.index(dst) or src == dst == "last"):
            raise InputError(f"knockout flow {src}->{dst} runs against the causal order: the "
                             f"source must come before the destination ({' < '.join(POSITIONS)})"
                             ", or last->last")
        if (src, dst) not in edges:
            edges.append((src, dst))
    return Flow("+".join(f"{s}->{d}" for s, d in edges), tuple(edges))


def parse_flows(spec: str | list[str] | tuple[str, ...]) -> list[Flow]:
    """Comma-separated items (or a list of them), each one curve; duplicates refused."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    flows = [parse_flow(i) for i in items]
    if not flows:
        raise InputError("no knockout flow given")
    names = [f.name for f in flows]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise InputError(f"knockout flow {sorted(dup)[0]} is given twice")
    return flows


def default_window(num_layers: int) -> int:
    """The papers' 9 of 32 layers, scaled: max(1, round(9·L/32))."""
    return max(1, int(round(9 * num_layers / 32)))


def window_layers(center: int, width: int, num_layers: int) -> tuple[int, int]:
    """Layers [lo, hi) of the window of `width` layers centred on `center`:
    max(0, l-⌊(w-1)/2⌋) .. min(L-1, l+⌊w/2⌋), both included."""
    lo = max(0, center - (width - 1) // 2)
    hi = min(num_layers - 1, center + width // 2)
    return lo, hi + 1


def parse_layers(text: str, num_layers: int | None = None) -> tuple[int, int]:
    """`A:B` -> (A, B), layers A..B-1; checked against L when known."""
    try:
        a, b = (int(x) for x in str(text).split(":"))
    except ValueError:
        raise InputError(f"--layers wants A:B (layers A..B-1), got {text!r}") from None
    if a < 0 or b <= a or (num_layers is not None and b > num_layers):
        top = f" and B <= {num_layers}" if num_layers is not None else ""
        raise InputError(f"--layers {text}: need 0 <= A < B{top}")
    return a, b


def position_kinds(groups: dict[str, list[tuple[int, int]]], prompt_len: int,
                   length: int) -> np.ndarray:
    """int8 [length]: each position's knockout position, index into POSITIONS. `question` is the
    user group without the last prompt position; `last` is position P-1; `answer` is P on."""
    kinds = np.full(length, POSITIONS.index("question"), dtype=np.int8)
    for s, e in groups.get("system", []):
        kinds[s:e] = POSITIONS.index("system")
    for s, e in groups.get("image", []):
        kinds[s:e] = POSITIONS.index("image")
    kinds[prompt_len:] = POSITIONS.index("answer")
    kinds[prompt_len - 1] = POSITIONS.index("last")
    return kinds


@dataclass
class KnockoutResult:
    """Knockout measures, teacher-forced on the baseline answer (docs/definitions.md).

    Arrays are [F, W]: F flows in the order given, W = L windows (one centred on each layer)
    for a sweep, or W = 1 for an explicit range `layers`.
    """

    flows: list[str]
    first_prob: np.ndarray  # float32 [F, W]: p of the answer's first token at `last`
    rel_change: np.ndarray  # float32 [F, W]: 100·(p_ko − p)/p
    logprob: np.ndarray  # float32 [F, W]: log-prob of the whole baseline answer
    baseline_first_prob: float
    window: int | None = None  # a sweep of windows of this many layers
    layers: tuple[int, int] | None = None  # or one explicit range [A, B)
    # Greedy answers under each knockout [F][W], where asked for.
    answers: list[list[str]] | None = None
    seconds: float = 0.0

    @property
    def is_sweep(self) -> bool:
        return self.layers is None

    def describe_layers(self) -> str:
        if self.layers is not None:
            return f"layers {self.layers[0]}..{self.layers[1] - 1}"
        return f"windows of {self.window} layers"
