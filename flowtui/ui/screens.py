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
}


def format_keys(key: str) -> str:
    """'left,h' -> '← / h'."""
    return " / ".join(_KEY_NAMES.get(k.strip(), k.strip()) for k in key.split(","))


def keys_table(bindings: list[Binding]) -> Text:
    text = Text()
    for b in bindings:
        text.append(f"{format_keys(b.key):>9}  ", "bold")
        text.append(f"{b.tooltip or b.description:<62}")
        text.append(f"{b.id or ''}\n", "dim")
    return text


class HelpScreen(ModalScreen[None]):
    """`?`: every key with its description and id."""

    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close", id="help.close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 96; max-width: 95%; height: auto; max-height: 90%;
        border: round $primary; background: $surface; padding: 0 1; }
    HelpScreen .title { text-style: bold; color: $primary; }
    """

    def __init__(self, bindings: list[Binding], notes: str = "") -> None:
        super().__init__()
        self._keys = bindings
        self._notes = notes

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Label("flowtui keys", classes="title")
            yield Static(keys_table(self._keys))
            yield Static(Text(self._notes, style="dim"))

    def action_dismiss(self) -> None:
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
