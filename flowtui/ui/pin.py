"""The explorer's pin (P): the analysis on screen is kept as A, and the next analysis the
explorer shows (another sample, another question) opens the compare screen against it as B.

A mixin of the explorer screen: it reads the screen's `analysis` and `stem`.
"""

from __future__ import annotations

from textual.screen import Screen

from flowtui.engine.analysis import Analysis
from flowtui.textsafe import visible


class PinActions(Screen):
    """The `P` action and what a pinned analysis does to the next one shown."""

    analysis: Analysis | None
    stem: str
    pinned: tuple[Analysis, str] | None = None  # (the analysis, its label)

    def action_pin(self) -> None:
        a = self.analysis
        if a is None:
            self.app.notify("nothing to pin yet", severity="warning")
            return
        if self.pinned is not None and self.pinned[0] is a:
            self.pinned = None
            self.app.notify("unpinned", timeout=3)
            return
        self.pinned = (a, f"pinned {self.stem}")
        self.app.notify(f"pinned {visible(a.question)!r} as A: the next analysis shown opens "
                        "the compare screen (P again unpins)", timeout=6)

    def compare_with_pinned(self, analysis: Analysis) -> None:
        """Called with each analysis the explorer shows: a new one meets the pinned one (once)."""
        if self.pinned is None or self.pinned[0] is analysis:
            return
        pinned, label = self.pinned
        self.pinned = None
        from flowtui.compare import compare

        comparison = compare(pinned, analysis, files=(label, self.stem))
        # After this refresh: the explorer finishes showing B first (d/Escape come back to it).
        open_compare = getattr(self.app, "open_compare", None)
        if open_compare is not None:
            self.call_after_refresh(open_compare, comparison)
