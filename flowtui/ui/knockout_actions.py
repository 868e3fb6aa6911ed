"""The explorer's knockout view (K): shown in place of the flow panel, run on first show with
the four standard flows in the default window, through the engine-jobs object (progress,
x cancels). docs/definitions.md, "Knockout positions and flows"."""

from __future__ import annotations

from dataclasses import replace

from textual.screen import Screen

from flowtui.engine.knockout_flows import STANDARD_FLOWS
from flowtui.ui.messages import KnockoutDone
from flowtui.ui.state import Rerun


class KnockoutActions(Screen):
    """Mixed into the explorer screen (which has analysis, view, rerun, jobs, _can_rerun)."""

    def action_knockout(self) -> None:
        a = self.analysis  # type: ignore[attr-defined]
        if a is None:
            self.app.notify("no analysis yet", severity="warning")
            return
        show = not self.view.knockout  # type: ignore[attr-defined]
        self._set_view(knockout=show)  # type: ignore[attr-defined]
        if show and a.knockout is None and self._can_rerun():  # type: ignore[attr-defined]
            if self.jobs.knockout(a, ",".join(STANDARD_FLOWS), to=self):  # type: ignore[attr-defined]
                self.rerun = Rerun("knockout", total=a.num_layers)  # type: ignore[attr-defined]

    def show_knockout_panel(self, shown: bool) -> None:
        from flowtui.ui.widgets.flow_panel import FlowPanel
        from flowtui.ui.widgets.knockout_panel import KnockoutPanel

        for panel in self.query(KnockoutPanel):
            panel.display = shown
        for panel in self.query(FlowPanel):
            panel.display = not shown

    def knockout_progress(self, done: int, total: int) -> None:
        r = self.rerun  # type: ignore[attr-defined]
        if r is not None and r.task == "knockout":
            self.rerun = replace(r, done=done, total=total)  # type: ignore[attr-defined]

    def on_knockout_done(self, message: KnockoutDone) -> None:
        a = self.analysis  # type: ignore[attr-defined]
        if a is None:
            return
        a.knockout = message.result
        self.mutate_reactive(type(self).analysis)  # type: ignore[attr-defined]
        k = message.result
        worst = divmod(int(k.rel_change.argmin()), k.rel_change.shape[1])
        self.app.notify(f"knockout done: largest drop {k.rel_change[worst]:+.1f}% "
                        f"({k.flows[worst[0]]}, layer {worst[1]})", timeout=4)
