"""The explorer's logit-lens map (docs/definitions.md, "Logit lens on image tokens"): `m` reaches
it after CAM and attention, computing the lens the first time through the engine jobs (progress
in the status line, x cancels); `/` asks for another word. Mixed into ExplorerScreen."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.screen import Screen

from flowtui.engine.analysis import Analysis
from flowtui.render.maps import LENS_MODES, MAP_MODES
from flowtui.ui.messages import LensDone
from flowtui.ui.screens import PathPrompt
from flowtui.ui.state import ViewState

if TYPE_CHECKING:
    from flowtui.ui.jobs import EngineJobs
    from flowtui.ui.widgets.image_panel import ImagePanel


class LensActions(Screen):
    """Lens map actions for the explorer (uses its analysis, view, jobs and image panel)."""

    analysis: Analysis | None
    view: ViewState
    if TYPE_CHECKING:
        @property
        def jobs(self) -> EngineJobs: ...
        @property
        def image_panel(self) -> ImagePanel: ...
        def set_activity(self, text: str, kind: str = "busy") -> None: ...
        def _set_view(self, **changes: Any) -> None: ...

    def next_map(self) -> str:
        """The map after the current one; the lens maps start the lens where it is missing."""
        i = MAP_MODES.index(self.view.map_mode)
        nxt = MAP_MODES[(i + 1) % len(MAP_MODES)]
        if nxt in LENS_MODES and self.analysis is not None and self.analysis.lens is None:
            if not self.jobs.can_load:
                self.app.notify("the logit lens needs a model: reopen with `flowtui open FILE "
                                "--model M` (or a snapshot made with --lens)", severity="warning")
                return MAP_MODES[0]
            if self.jobs.lens(self.analysis, None, to=self):
                self.set_activity("computing the logit lens… (x cancels)")
            return self.view.map_mode  # switched when the lens arrives
        return nxt

    def action_lens_word(self) -> None:
        if self.analysis is None:
            self.app.notify("no analysis yet", severity="warning")
            return
        if not self.jobs.can_load:
            self.app.notify("another lens word needs a model: reopen with `flowtui open FILE "
                            "--model M`", severity="warning")
            return
        analysis = self.analysis
        current = analysis.lens.word if analysis.lens is not None else ""

        def chosen(word: str | None) -> None:
            if word is None:
                return
            word = word.strip() or None  # empty: the answer's first token again
            if self.jobs.lens(analysis, word, to=self):
                self.set_activity(f"logit lens for {word or 'the answer'}… (x cancels)")

        self.app.push_screen(PathPrompt("Lens word (empty: the answer's first token)", current,
                                        "Enter maps it · Esc cancels"), chosen)

    def on_lens_done(self, message: LensDone) -> None:
        if self.analysis is None:
            return
        # The lens drawn (and exported) is the one last asked for; its word is in the snapshot.
        self.analysis.lens = message.lens
        self.image_panel.forget_lens()
        if self.view.map_mode not in LENS_MODES:
            self._set_view(map_mode="lens")
        else:
            self.image_panel.refresh_map()
        self.set_activity(f"logit lens: {message.lens.word!r}", "ready")
