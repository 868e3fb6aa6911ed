"""Asking the loaded model again from the explorer: `a` another question about the image on
screen, `i` the same question about another image. With a pin (P) the new analysis opens beside
the pinned one in the compare screen. Mixed into ExplorerScreen."""

from __future__ import annotations

from PIL import Image

from flowtui.ui.screens import PathPrompt


class AskActions:
    """Ask actions for the explorer (uses its analysis, jobs and analyze())."""

    def _can_ask(self, what: str) -> bool:
        if self.analysis is None:
            self.app.notify("no analysis yet: wait for the first answer", severity="warning")
            return False
        if not self.jobs.can_load:
            self.app.notify(f"{what} needs a model: reopen with `flowtui open FILE --model M`",
                            severity="warning")
            return False
        return True

    def _image_on_screen(self):
        """The image of the analysis on screen: its file where it came from one, else the
        pixels it holds (a snapshot's, a dataset sample's)."""
        if self.image_path is not None:
            return self.image_path
        return Image.fromarray(self.analysis.image)

    def action_ask(self) -> None:
        if not self._can_ask("asking another question"):
            return
        image = self._image_on_screen()

        def asked(question: str | None) -> None:
            if question:
                self.analyze(image, question)

        self.app.push_screen(PathPrompt("Ask another question about this image",
                                        self.analysis.question, "Enter asks · Esc cancels"),
                             asked)

    def action_ask_image(self) -> None:
        if not self._can_ask("another image"):
            return
        question = self.analysis.question

        def chosen(path: str | None) -> None:
            if path:
                self.analyze(path, question)

        self.app.push_screen(PathPrompt(f"Another image for {question!r} (a file path)",
                                        self.image_path or "", "Enter asks · Esc cancels"),
                             chosen)
