"""The one owner of engine work: the engine itself, which job is running, cancelling it, and
turning any failure into a notification.

Every engine call runs in a daemon thread worker and reports back with the app-wide messages of
`flowtui.ui.messages`, posted to the screen that asked for the job (they bubble up to the app,
which hands the end of a job back to `EngineJobs`). The model runs one job at a time.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from textual.message_pump import MessagePump
from textual.worker import Worker, WorkerState

from flowtui.engine.analysis import Analysis, Progress, ProgressFn
from flowtui.engine.errors import Cancelled, ConnectionLost, FlowtuiError
from flowtui.engine.interface import Engine
from flowtui.textsafe import visible
from flowtui.ui.messages import (
    AnalysisReady,
    EngineProgress,
    EngineReady,
    KnockoutDone,
    LensDone,
    SweepDone,
    TruncationDone,
    TruncationToken,
    WorkFailed,
    WorkFinished,
)

if TYPE_CHECKING:
    from textual.app import App

EngineFactory = Callable[[ProgressFn], Engine]


def one_line(exc: BaseException) -> str:
    """A one-line reason for any exception (FlowtuiErrors already are one line), with control
    characters made visible. Only a newline ends the line: a carriage return or other line
    separator quoted from outside is shown, not obeyed."""
    text = str(exc).strip()
    if isinstance(exc, FlowtuiError):
        return visible(text.split("\n")[0].rstrip()) if text else type(exc).__name__
    if isinstance(exc, MemoryError) or "out of memory" in text.lower():
        return "out of memory (try a smaller --dtype, a smaller model or --device cpu)"
    first = visible(text.split("\n")[0].rstrip()) if text else ""
    line = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "…"


class DaemonExecutor(ThreadPoolExecutor):
    """Runs each thread worker on a fresh daemon thread and never waits for them on shutdown.

    The default executor is joined when the event loop closes, so an engine call still running
    would hold up quitting; engine calls also poll a cancel flag, but a single forward pass
    cannot be interrupted.
    """

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the future
                future.set_exception(exc)
            else:
                future.set_result(result)

        threading.Thread(target=run, daemon=True, name="flowtui-worker").start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        return None


def report_worker_error(app: App, event: Worker.StateChanged) -> None:
    """Backstop for every worker: they catch their own errors, but nothing may ever crash the
    app or fail silently. (StateChanged goes only to the worker's own node: each node that runs
    workers passes it here.)"""
    if event.state == WorkerState.ERROR and event.worker.error is not None:
        app.notify(one_line(event.worker.error), severity="error")


def use_daemon_threads() -> None:
    """Make thread workers daemons on the running loop (once, before the first worker)."""
    asyncio.get_running_loop().set_default_executor(DaemonExecutor())


class EngineJobs:
    """Owns the engine and its jobs: load, analyze, truncate, sweep, reconnect.

    `busy` names the running job (None when idle); a job asked for while another runs is
    refused with one warning; `cancel` sets the running job's cancel flag, which the engine
    polls at every progress callback. Results, progress and failures are posted to the job's
    `to` node.
    """

    def __init__(
        self, app: App, engine_factory: EngineFactory | None, self_check: bool = True,
        per_token: bool = True,
    ) -> None:
        self._app = app
        self.engine_factory = engine_factory
        self.self_check = self_check
        # Every answer token's own CAM for the token cursor (batched backwards; the explorer's
        # default, off with --no-per-token).
        self.per_token = per_token
        self.engine: Engine | None = None
        self.busy: str | None = None
        self.disconnected = False  # a remote engine's connection dropped
        self._cancel = threading.Event()

    # --- what the screens ask -------------------------------------------------------------
    @property
    def can_load(self) -> bool:
        """Whether engine calls can run at all (an engine, or a factory to load one)."""
        return self.engine is not None or self.engine_factory is not None

    @property
    def remote(self) -> bool:
        """Whether the model runs elsewhere (--remote): only then is there a connection."""
        return getattr(self.engine_factory, "location", None) is not None

    @property
    def location(self) -> str | None:
        """Where the model runs when that is not this process."""
        # Before the engine exists, a --remote factory already knows its host.
        if self.engine is not None:
            return self.engine.location
        return getattr(self.engine_factory, "location", None)

    def refuse_if_busy(self) -> bool:
        """True (and one warning) when a job is running."""
        if self.busy is None:
            return False
        self._app.notify(f"busy with {self.busy}; x cancels it", severity="warning")
        return True

    # --- the jobs ---------------------------------------------------------------------------
    def analyze(self, image: Any, question: str, max_new_tokens: int, *, to: MessagePump) -> bool:
        def job(engine: Engine, cancel: threading.Event) -> None:
            analysis = engine.analyze(
                image,
                question,
                max_new_tokens=max_new_tokens,
                progress=self._progress_fn("analysis", cancel, to),
                self_check=self.self_check,
                per_token=self.per_token,
            )
            to.post_message(AnalysisReady(analysis))

        return self._start("analysis", job, to)

    def truncate(
        self, analysis: Analysis, layer: int, strategy: str, keep: int | None, *, to: MessagePump
    ) -> bool:
        def job(engine: Engine, cancel: threading.Event) -> None:
            def on_token(text: str) -> None:
                if cancel.is_set():
                    raise Cancelled("truncation cancelled")
                to.post_message(TruncationToken(text))

            run = engine.truncate(
                analysis,
                layer,
                strategy=strategy,
                keep=keep,
                seed=0,
                on_token=on_token,
                progress=self._progress_fn("truncation", cancel, to),
            )
            to.post_message(TruncationDone(run))

        return self._start("truncation", job, to)

    def sweep(self, analysis: Analysis, *, to: MessagePump) -> bool:
        def job(engine: Engine, cancel: threading.Event) -> None:
            sweep = engine.sweep(
                analysis, progress=self._progress_fn("sweep", cancel, to), cancel=cancel.is_set
            )
            to.post_message(SweepDone(sweep))

        return self._start("sweep", job, to)

    def lens(self, analysis: Analysis, word: str | None, *, to: MessagePump) -> bool:
        def job(engine: Engine, cancel: threading.Event) -> None:
            lens = engine.lens(analysis, word, progress=self._progress_fn("lens", cancel, to),
                               cancel=cancel.is_set)
            to.post_message(LensDone(lens))

        return self._start("lens", job, to)

    def knockout(self, analysis: Analysis, flows: str, window: int | None = None, *,
                 to: MessagePump) -> bool:
        def job(engine: Engine, cancel: threading.Event) -> None:
            result = engine.knockout(analysis, flows, window=window,
                                     progress=self._progress_fn("knockout", cancel, to),
                                     cancel=cancel.is_set)
            to.post_message(KnockoutDone(result))

        return self._start("knockout", job, to)

    def reconnect(self, *, to: MessagePump) -> bool:
        """Drop the engine (a remote one ends its session) and load it again."""
        if self.refuse_if_busy():
            return False
        self.close()
        self.engine = None
        return self._start("connect", lambda engine, cancel: None, to)

    def cancel(self) -> bool:
        """Ask the running job to stop; False (and a note) when nothing runs."""
        if self.busy is None:
            self._app.notify("nothing is running")
            return False
        self._cancel.set()
        return True

    def stop(self) -> None:
        """On quit: running engine calls stop at their next callback; a remote engine ends."""
        self._cancel.set()
        self.close()

    def close(self) -> None:
        # A remote engine ends its ssh session (the server stops its work); local: nothing.
        if self.engine is not None:
            self.engine.close()

    # --- the end of a job (main thread, from the app's message handlers) ---------------------
    def failed(self, message: WorkFailed) -> None:
        if message.cancelled:
            self._app.notify(message.reason, timeout=3)
        else:
            self._app.notify(
                message.reason, title=f"{message.task} failed", severity="error", timeout=10
            )

    def finished(self, message: WorkFinished) -> None:
        self.busy = None

    # --- inside -------------------------------------------------------------------------------
    def _start(
        self, task: str, job: Callable[[Engine, threading.Event], None], to: MessagePump
    ) -> bool:
        if self.refuse_if_busy():
            return False
        self.busy = task
        cancel = self._cancel = threading.Event()
        self._app.run_worker(
            lambda: self._run(task, job, cancel, to),
            name=task,
            group="engine",
            thread=True,
            exit_on_error=False,
        )
        return True

    def _run(
        self,
        task: str,
        job: Callable[[Engine, threading.Event], None],
        cancel: threading.Event,
        to: MessagePump,
    ) -> None:
        with self._guard(task, to):
            job(self._ensure_engine(cancel, to), cancel)

    def _progress_fn(self, task: str, cancel: threading.Event, to: MessagePump) -> ProgressFn:
        def progress(p: Progress) -> None:
            if cancel.is_set():
                raise Cancelled(f"{task} cancelled")
            to.post_message(EngineProgress(task, p))

        return progress

    @contextmanager
    def _guard(self, task: str, to: MessagePump) -> Iterator[None]:
        """Any failure in a worker becomes a one-line WorkFailed message, never a crash."""
        try:
            yield
        except Cancelled:
            to.post_message(WorkFailed(task, f"{task} cancelled", cancelled=True))
        except ConnectionLost as exc:
            # Still this job's thread (busy is set): the analysis on screen stays, and the next
            # rerun or `r` connects again.
            self.close()
            self.engine = None
            self.disconnected = True
            to.post_message(WorkFailed(task, f"{one_line(exc)} · r reconnects", lost=True))
        except BaseException as exc:  # noqa: BLE001 - the app must survive anything
            to.post_message(WorkFailed(task, one_line(exc)))
        finally:
            to.post_message(WorkFinished(task))

    def _ensure_engine(self, cancel: threading.Event, to: MessagePump) -> Engine:
        if self.engine is None:
            assert self.engine_factory is not None
            self.engine = self.engine_factory(self._progress_fn("load", cancel, to))
            if self.engine.location is not None:  # a remote server's log lines
                self.engine.on_log = self._remote_log
            self.disconnected = False
            to.post_message(
                EngineReady(self.engine.info.name)
            )
        return self.engine

    def _remote_log(self, line: str) -> None:
        host = (self.engine.location if self.engine is not None else None) or "remote"
        self._app.notify(line, title=host, timeout=5, markup=False)  # thread-safe: a message
