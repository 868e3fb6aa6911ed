"""Asking the loaded model again from the explorer: `a` another question about the image on
screen, `i` the same question about another image. With a pin (P) the new analysis opens beside
the pinned one in the compare screen. Mixed into ExplorerScreen."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PIL import Image
from textual.screen import Screen

from flowtui.engine.analysis import Analysis
from flowtui.ui.screens import PathPrompt

if TYPE_CHECKING:
    from flowtui.ui.jobs import EngineJobs


class AskActions(Screen):
    """Ask actions for the explorer (uses its analysis, jobs and analyze())."""

    analysis: Analysis | None
    image_path: str | None
    if TYPE_CHECKING:
        @property
        def jobs(self) -> EngineJobs: ...
        def analyze(self, image: Any, question: str) -> bool: ...

    def _can_ask(self, what: str) -> bool:
        if self.analysis is None:
            self.app.notify("no analysis yet: wait for the first answer", severity="warning")
            return False
        if not self.jobs.can_load:
            self.app.notify(f"{what} needs a model: reopen with `flowtui open FILE --model M`",
                            severity="warning")
            return False
        return True

    def _image_on_screen(self, analysis: Analysis) -> str | Image.Image:
        """The image of the analysis on screen: its file where it came from one, else the
        pixels it holds (a snapshot's, a dataset sample's)."""
        if self.image_path is not None:
            return self.image_path
        return Image.fromarray(analysis.image)

    def action_ask(self) -> None:
        if self.analysis is None or not self._can_ask("asking another question"):
            return
        analysis = self.analysis
        image = self._image_on_screen(analysis)

        def asked(question: str | None) -> None:
            if question:
                self.analyze(image, question)

        self.app.push_screen(PathPrompt("Ask another question about this image",
                                        analysis.question, "Enter asks · Esc cancels"),
                             asked)

    def action_ask_image(self) -> None:
        if self.analysis is None or not self._can_ask("another image"):
            return
        question = self.analysis.question

        def chosen(path: str | None) -> None:
            if path:
                self.analyze(path, question)

        self.app.push_screen(PathPrompt(f"Another image for {question!r} (a file path)",
                                        self.image_path or "", "Enter asks · Esc cancels"),
                             chosen)
