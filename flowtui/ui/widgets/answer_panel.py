"""Answer panel: question, answer tokens coloured by log-prob, model facts, the cliff layer."""

from __future__ import annotations

import numpy as np
from rich.style import Style
from rich.text import Text
from textual.widgets import Static

from flowtui.engine.analysis import Analysis
from flowtui.render.colormaps import logprob_rgb

_SPACE_MARKS = {"▁": " ", "Ġ": " ", "Ċ": "⏎"}


def display_token(token: str) -> str:
    """Tokenizer pieces as readable text (sentencepiece/BPE space marks become spaces)."""
    for mark, repl in _SPACE_MARKS.items():
        token = token.replace(mark, repl)
    return token


def answer_tokens(a: Analysis) -> list[str]:
    """The answer's token strings (from the output group), one per answer log-prob."""
    pieces = [a.tokens[i] for s, e in a.groups.get("output", []) for i in range(s, e) if i < len(a.tokens)]
    T = len(a.answer_logprobs)
    if len(pieces) != T:  # fall back to one piece for the whole answer
        return [a.answer] if T <= 1 else [a.answer] + [""] * (T - 1)
    shown = [display_token(p) for p in pieces]
    if shown:
        shown[0] = shown[0].lstrip(" ") or shown[0]
    return shown


def answer_text(a: Analysis) -> Text:
    text = Text()
    for piece, lp in zip(answer_tokens(a), a.answer_logprobs.tolist(), strict=False):
        r, g, b = logprob_rgb(lp)
        text.append(piece or "∅", Style(color="black", bgcolor=f"rgb({r},{g},{b})"))
    return text


class AnswerPanel(Static):
    DEFAULT_CSS = """
    AnswerPanel { height: auto; padding: 0 1; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.analysis: Analysis | None = None
        self.border_title = "Answer"

    def set_analysis(self, analysis: Analysis) -> None:
        self.analysis = analysis
        self.refresh_content()

    def set_pending(self, question: str | None, status: str) -> None:
        text = Text()
        if question:
            text.append("Q ", "bold")
            text.append(question + "\n")
        text.append(status, "dim")
        self.update(text)

    def refresh_content(self) -> None:
        a = self.analysis
        if a is None:
            return
        m = a.model
        total = float(np.sum(a.answer_logprobs))
        text = Text()
        text.append("Q ", "bold")
        text.append(a.question + "\n")
        text.append("A ", "bold")
        text.append_text(answer_text(a))
        text.append(f"   log p {total:+.2f}", "dim")
        if not a.ended_with_eos:
            text.append(" (cut at max tokens)", "dim")
        text.append("\n")
        text.append(f"{m.name}", "bold")
        text.append(f" · {m.device} · {m.dtype} · {m.num_layers} layers × {m.num_heads} heads", "dim")
        text.append("\n")
        if a.cliff_layer is not None:
            text.append("cliff layer ", "bold")
            text.append(f"{a.cliff_layer}", "bold red")
            text.append(f"  image irrelevant from layer {a.cliff_layer} on", "dim")
        elif a.sweep_same is not None:
            text.append("no cliff: the full model (K = L) changes the answer", "dim")
        else:
            text.append("cliff layer unknown · s runs the sweep", "dim")
        self.update(text)
