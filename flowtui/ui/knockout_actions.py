"""The explorer's knockout view (K): shown in place of the flow panel, run on first show with
the four standard flows in the default window, through the engine-jobs object (progress,
x cancels). docs/definitions.md, "Knockout positions and flows"."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from textual.screen import Screen

from flowtui.engine.analysis import Analysis
from flowtui.engine.knockout_flows import STANDARD_FLOWS
from flowtui.ui.messages import KnockoutDone
from flowtui.ui.state import Rerun, ViewState

if TYPE_CHECKING:
    from flowtui.ui.jobs import EngineJobs


class KnockoutActions(Screen):
    """Mixed into the explorer screen (which has analysis, view, rerun, jobs, _can_rerun)."""

    analysis: Analysis | None
    view: ViewState
    rerun: Rerun | None
    if TYPE_CHECKING:
        @property
        def jobs(self) -> EngineJobs: ...
        def _set_view(self, **changes: Any) -> None: ...
        def _can_rerun(self) -> bool: ...

    def action_knockout(self) -> None:
        a = self.analysis
        if a is None:
            self.app.notify("no analysis yet", severity="warning")
            return
        show = not self.view.knockout
        self._set_view(knockout=show)
        if show and a.knockout is None and self._can_rerun():
            if self.jobs.knockout(a, ",".join(STANDARD_FLOWS), to=self):
                self.rerun = Rerun("knockout", total=a.num_layers)

    def show_knockout_panel(self, shown: bool) -> None:
        from flowtui.ui.widgets.flow_panel import FlowPanel
        from flowtui.ui.widgets.knockout_panel import KnockoutPanel

        for knockout in self.query(KnockoutPanel):
            knockout.display = shown
        for flow in self.query(FlowPanel):
            flow.display = not shown

    def knockout_progress(self, done: int, total: int) -> None:
        r = self.rerun
        if r is not None and r.task == "knockout":
            self.rerun = replace(r, done=done, total=total)

    def on_knockout_done(self, message: KnockoutDone) -> None:
        a = self.analysis
        if a is None:
            return
        a.knockout = message.result
        self.mutate_reactive(type(self).analysis)  # type: ignore[arg-type]  # a var on the explorer
        k = message.result
        worst = divmod(int(k.rel_change.argmin()), k.rel_change.shape[1])
        self.app.notify(f"knockout done: largest drop {k.rel_change[worst]:+.1f}% "
                        f"({k.flows[worst[0]]}, layer {worst[1]})", timeout=4)
