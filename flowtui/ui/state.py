"""What the user is looking at (ViewState, which every panel follows) and the rerun the engine
is running for it (Rerun, which the truncation panel shows live)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TypeGuard

from flowtui.engine.analysis import Analysis
from flowtui.render.cells import DISPLAY_MODES
from flowtui.render.colormaps import COLORMAPS
from flowtui.render.maps import MAP_MODES

THRESHOLD_STEP = 0.05


@dataclass(frozen=True)
class ViewState:
    layer: int = 0
    threshold: float = 0.5
    colormap: str = COLORMAPS[0]
    mode: str = DISPLAY_MODES[0]
    show_heads: bool = False
    # Shares divided by group size: how much each token of a group draws (a display option).
    per_token: bool = False
    # Which of the analysis' views (tiles, global, ...) the image panel shows.
    view: int = 0
    # Which per-token map the image panel draws: "cam" or "attention" (render/maps.py).
    map_mode: str = MAP_MODES[0]
    # Leave sink tokens out of the attention map's colour scale (render/maps.py).
    exclude_sinks: bool = False
    # The knockout view in place of the flow panel (ui/knockout_actions.py).
    knockout: bool = False
    # The answer token every panel follows (index into the answer), None for the whole answer.
    answer_token: int | None = None


def has_token_cursor(a: Analysis | None) -> TypeGuard[Analysis]:
    """Whether the answer's tokens can be chosen one by one: per-token arrays and T > 1."""
    return (a is not None and a.token_head_shares is not None
            and a.token_attention is not None and len(a.answer_token_ids) > 1)


def focused(a: Analysis, token: int | None) -> Analysis:
    """The analysis as answer token `token` sees it (docs/definitions.md, "Per-token
    quantities"): its shares, head shares, attention map and (where computed) CAM in the
    whole-answer slots; `a` itself for the whole answer. Arrays are shared, never copied."""
    if token is None or not has_token_cursor(a) or not 0 <= token < len(a.answer_token_ids):
        return a
    assert a.token_head_shares is not None and a.token_attention is not None  # has_token_cursor
    head = a.token_head_shares[token]
    return replace(
        a, shares=head.mean(axis=1), head_shares=head,
        attention_tokens=a.token_attention[token],
        cam_tokens=a.token_cam[token] if a.token_cam is not None else a.cam_tokens,
    )


def token_cam_missing(a: Analysis | None, token: int | None) -> bool:
    """A token is chosen but the analysis has no per-token CAM: the map shows the whole
    answer's CAM and says so."""
    return token is not None and has_token_cursor(a) and a.token_cam is None


@dataclass(frozen=True)
class Rerun:
    """A truncation or sweep running for the explorer, as far as it got."""

    task: str  # "truncation", "sweep" or "knockout"
    layer: int = 0
    strategy: str = "all"
    keep: int | None = None
    text: str = ""  # the truncated answer so far
    done: int = 0  # sweep steps done of `total`
    total: int = 0
    failed: str = ""  # why it failed, once it has
