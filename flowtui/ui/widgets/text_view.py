"""A widget showing one Rich Text that repaints without a relayout when its height is unchanged.

Static.update always asks for a full layout, which repaints the whole screen; the status line,
the legend and the sweep curve change on every layer step, so they use this instead.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget


class TextView(Widget):
    DEFAULT_CSS = """
    TextView { height: auto; }
    """

    def __init__(self, text: Text | str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self._text = Text(text) if isinstance(text, str) else text

    @property
    def text(self) -> Text:
        return self._text

    def set_text(self, text: Text | str) -> None:
        text = Text(text) if isinstance(text, str) else text
        same_height = text.plain.count("\n") == self._text.plain.count("\n")
        self._text = text
        self.refresh(layout=not same_height)

    def render(self) -> Text:
        return self._text
