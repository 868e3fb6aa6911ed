"""What the user is looking at (ViewState, which every panel follows) and the rerun the engine
is running for it (Rerun, which the truncation panel shows live)."""

from __future__ import annotations

from dataclasses import dataclass

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
