"""Modal screens: the key help and the path prompt used by the exports."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

_KEY_NAMES = {
    "left": "←", "right": "→", "up": "↑", "down": "↓", "home": "Home", "end": "End",
    "left_square_bracket": "[", "right_square_bracket": "]", "question_mark": "?",
    "comma": ",", "full_stop": ".", "slash": "/", "escape": "Esc", "enter": "⏎",
}


def format_keys(key: str) -> str:
    """'left,h' -> '← / h'."""
    return " / ".join(_KEY_NAMES.get(k.strip(), k.strip()) for k in key.split(","))


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def keys_table(bindings: list[Binding], width: int = 96, rows: int | None = None) -> Text:
    """Every key with what it does, laid out for `width` columns and `rows` lines: with ids
    where there is room, else one key per line, else two columns, so no key is ever hidden."""
    keys = [format_keys(b.key) for b in bindings]
    kw = max(len(k) for k in keys) + 2
    iw = max(len(b.id or "") for b in bindings) + 2
    text = Text(no_wrap=True, overflow="ellipsis")
    two_columns = rows is not None and len(bindings) > rows and width < 2 * (kw + 40)
    if not two_columns:
        with_ids = width >= kw + 40 + iw
        room = width - kw - (iw if with_ids else 0)
        for i, (b, key) in enumerate(zip(bindings, keys, strict=True)):
            text.append("\n" if i else "")
            text.append(f"{key:<{kw - 2}}  ", "bold")
            text.append(f"{_cut(b.tooltip or b.description, room - 1):<{room}}")
            if with_ids:
                text.append(f"{b.id or ''}", "dim")
        return text
    col = (width - 1) // 2
    half = (len(bindings) + 1) // 2
    for r in range(half):
        text.append("\n" if r else "")
        for c, i in enumerate((r, r + half)):
            if i >= len(bindings):
                continue
            b = bindings[i]
            text.append(" " if c else "")
            text.append(f"{keys[i]:<{kw - 2}}  ", "bold")
            text.append(f"{_cut(b.tooltip or b.description, col - kw):<{col - kw}}")
    return text


class HelpScreen(ModalScreen[None]):
    """`?`: every key with its description and id (ids where the terminal is wide enough)."""

    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close", id="help.close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 100; max-width: 95%; height: auto; max-height: 95%;
        border: round $primary; background: $surface; padding: 0 1; }
    HelpScreen .title { text-style: bold; color: $primary; }
    HelpScreen #help-keys { margin-bottom: 1; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self, bindings: list[Binding], notes: str = "") -> None:
        super().__init__()
        self._keys = bindings
        self._notes = notes

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Label("flowtui keys · Esc closes", classes="title")
            yield Static(id="help-keys")
            yield Static(Text(self._notes, style="dim"))

    def on_resize(self) -> None:
        w, h = self.size
        # The box's content: its width (100, at most 95%) less border, padding and a
        # scrollbar; its height (at most 95%) less border and title.
        width = min(100, w * 95 // 100) - 6
        rows = h * 95 // 100 - 3
        self.query_one("#help-keys", Static).update(keys_table(self._keys, width, rows))

    async def action_dismiss(self, result: None = None) -> None:  # as Screen's, always None
        self.dismiss(None)


class PathPrompt(ModalScreen[str | None]):
    """Asks for a path with a default filled in: Enter accepts, Escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="prompt.cancel")]
    DEFAULT_CSS = """
    PathPrompt { align: center middle; }
    PathPrompt > Vertical { width: 76; max-width: 95%; height: auto; border: round $primary;
        background: $surface; padding: 0 1; }
    PathPrompt Label { color: $text-muted; }
    """

    def __init__(self, title: str, default: str, hint: str = "Enter saves · Esc cancels") -> None:
        super().__init__()
        self._title, self._default, self._hint = title, default, hint

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text(self._title, style="bold"))
            yield Input(value=self._default, id="prompt-path", select_on_focus=False)
            yield Label(self._hint)

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
