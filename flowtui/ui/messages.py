"""App-wide messages: what the engine job owner (ui/jobs.py) reports from its worker threads
(post_message is thread-safe) to the screen that asked. Messages of one widget or screen live
on it (TruncationPanel.Requested, ExplorerScreen.ImagePreview, exports.ExportDone)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from flowtui.engine.analysis import Analysis, Lens, Progress, Sweep, TruncationRun
from flowtui.engine.knockout_flows import KnockoutResult


@dataclass
class EngineProgress(Message):
    """A progress report from the engine call `task` (load / analyze / truncate / sweep)."""

    task: str
    progress: Progress


@dataclass
class EngineReady(Message):
    """The engine finished loading (the object itself stays with the job owner, never in widgets)."""

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
class LensDone(Message):
    """The logit lens of the analysis on screen, for the default or a typed word."""

    lens: Lens


@dataclass
class KnockoutDone(Message):
    """An attention knockout of the analysis on screen."""

    result: KnockoutResult


@dataclass
class WorkFailed(Message):
    """A worker ended with an error (already reduced to one line) or was cancelled."""

    task: str
    reason: str
    cancelled: bool = False
    lost: bool = False  # a remote engine's connection dropped


@dataclass
class WorkFinished(Message):
    """A job ended, however it ended: the engine is free for the next call."""

    task: str
