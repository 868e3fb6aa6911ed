"""App-wide messages. Workers post these from their threads (post_message is thread-safe)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from textual.message import Message

from flowtui.engine.analysis import Analysis, Progress, Sweep, TruncationRun


@dataclass
class EngineProgress(Message):
    """A progress report from the engine call `task` (load / analyze / truncate / sweep)."""

    task: str
    progress: Progress


@dataclass
class ImagePreview(Message):
    """The input image, decoded before the model is ready, so the panel is not empty."""

    image: np.ndarray


@dataclass
class EngineReady(Message):
    """The engine finished loading (the object itself stays on the app, never in widgets)."""

    name: str


@dataclass
class AnalysisReady(Message):
    analysis: Analysis


@dataclass
class TruncationToken(Message):
    """The truncated answer so far, streamed while the run decodes."""

    text: str


@dataclass
class TruncationDone(Message):
    run: TruncationRun


@dataclass
class SweepDone(Message):
    sweep: Sweep


@dataclass
class ExportDone(Message):
    what: str
    path: str


@dataclass
class WorkFailed(Message):
    """A worker ended with an error (already reduced to one line) or was cancelled."""

    task: str
    reason: str
    cancelled: bool = False
    lost: bool = False  # a remote engine's connection dropped


@dataclass
class WorkFinished(Message):
    """A worker ended, however it ended: the app is free for the next engine call."""

    task: str


@dataclass
class TruncationRequested(Message):
    """The truncation panel asks the app to run a truncation (the app owns the engine)."""

    layer: int
    strategy: str
    keep: int | None
