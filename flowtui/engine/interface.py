"""The one interface the UI and scripts use to talk to an engine: the in-process LocalEngine,
the RemoteEngine over ssh, and the tests' FakeEngine all implement all of it, so no caller
probes an engine for what it has.

Only numpy arrays, strings and dataclasses cross it: no tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from flowtui.engine.analysis import Analysis, Lens, ModelInfo, ProgressFn, Sweep, TruncationRun
from flowtui.engine.knockout_flows import KnockoutResult

ImageInput = str | Path | Image.Image | np.ndarray
# Called with the answer text so far, each time a truncated run decodes a token.
TokenFn = Callable[[str], None]
# Polled between steps of long calls; returning True cancels the call (raises Cancelled).
CancelFn = Callable[[], bool]
# Takes one log line from where the model runs (a remote server's stderr).
LogFn = Callable[[str], None]


@runtime_checkable
class Engine(Protocol):
    """The calls every engine has."""

    info: ModelInfo
    # Where the model runs when that is not this process (a host name), else None.
    location: str | None
    # Where log lines from where the model runs go (None: the engine's default).
    on_log: LogFn | None

    def close(self) -> None:
        """End the engine's session (a remote one closes its ssh connection); idempotent."""
        ...

    def count_image_tokens(self, image: ImageInput) -> int | None:
        """How many feature tokens the model makes of `image` (what keep=R counts), from the
        processor alone, so a bad R is refused before the model runs; None where unknown."""
        ...

    def analyze(
        self,
        image: ImageInput,
        question: str,
        max_new_tokens: int = 32,
        progress: ProgressFn | None = None,
        cam: bool = True,
        self_check: bool = True,
        per_token: bool = False,
    ) -> Analysis:
        """Answer, shares and (unless cam=False, which skips the backward pass) LLaVA-CAM;
        with the self-checks (analysis.checks) unless self_check=False. Per answer token, the
        shares and attention always, and with per_token=True its own CAM too (token_cam)."""
        ...

    def truncate(
        self,
        analysis: Analysis,
        layer: int,
        strategy: str = "all",
        keep: int | None = None,
        seed: int = 0,
        on_token: TokenFn | None = None,
        progress: ProgressFn | None = None,
    ) -> TruncationRun:
        """Rerun with the image cut off from `layer`; appends the run to analysis.truncations."""
        ...

    def sweep(
        self,
        analysis: Analysis,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
        strategy: str = "all",
        keep: int | None = None,
        seed: int = 0,
    ) -> Sweep:
        """Truncate at every K = 0..L with `strategy`; a sweep with strategy `all` also sets the
        analysis' sweep fields and cliff layer. Nothing is recorded in analysis.truncations."""
        ...

    def lens(
        self,
        analysis: Analysis,
        word: str | None = None,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> Lens:
        """The logit lens on the feature tokens, every layer (docs/definitions.md): top-5 tokens
        and `word`'s probability. word None: the answer's first token, kept as analysis.lens;
        another word: its own Lens, the analysis unchanged. Raises InputError for a word the
        tokenizer cannot read."""

    def knockout(
        self,
        analysis: Analysis,
        flows: str | Sequence[str],
        window: int | None = None,
        layers: tuple[int, int] | str | None = None,
        greedy: bool = False,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> KnockoutResult:
        """Attention knockout (docs/definitions.md): each comma-separated flow in every window
        of `window` layers (default max(1, round(9·L/32))) or in the layers `layers` = (A, B);
        sets analysis.knockout."""
        ...
