"""Answer panel: question, answer tokens coloured by log-prob, model facts, the cliff layer."""

from __future__ import annotations

import numpy as np
from rich.style import Style
from rich.text import Text
from textual.reactive import var
from textual.widgets import Static

from flowtui.engine.analysis import Analysis
from flowtui.render.colormaps import logprob_rgb
from flowtui.textsafe import visible
from flowtui.ui.state import ViewState, has_token_cursor

_SPACE_MARKS = {"▁": " ", "Ġ": " ", "Ċ": "⏎"}


def display_token(token: str) -> str:
    """Tokenizer pieces as readable text (sentencepiece/BPE space marks become spaces), with
    control characters and escape sequences shown as escapes."""
    for mark, repl in _SPACE_MARKS.items():
        token = token.replace(mark, repl)
    return visible(token)


def answer_tokens(a: Analysis) -> list[str]:
    """The answer's token strings (from the output group), one per answer log-prob."""
    pieces = [a.tokens[i] for s, e in a.groups.get("output", []) for i in range(s, e) if i < len(a.tokens)]
    T = len(a.answer_logprobs)
    if len(pieces) != T:  # fall back to one piece for the whole answer
        return [visible(a.answer)] + [""] * (T - 1)
    shown = [display_token(p) for p in pieces]
    if shown:
        shown[0] = shown[0].lstrip(" ") or shown[0]
    return shown


def answer_text(a: Analysis, token: int | None = None) -> Text:
    """The answer's tokens on their log-prob colours; the chosen `token` (the token cursor)
    underlined, in bold and framed by ▸ ◂."""
    text = Text()
    for i, (piece, lp) in enumerate(zip(answer_tokens(a), a.answer_logprobs.tolist(),
                                        strict=False)):
        r, g, b = logprob_rgb(lp)
        chosen = i == token
        if chosen:
            text.append("▸", "bold")
        text.append(piece or "∅", Style(color="black", bgcolor=f"rgb({r},{g},{b})",
                                        bold=chosen, underline=chosen))
        if chosen:
            text.append("◂", "bold")
    return text


def token_label(a: Analysis, token: int | None) -> str:
    """'token 2/6 “red”' for a chosen answer token, 'whole answer' for none."""
    if token is None:
        return "whole answer"
    pieces = answer_tokens(a)
    piece = pieces[token].strip() if token < len(pieces) else ""
    return f"token {token + 1}/{len(a.answer_token_ids)} “{piece or '∅'}”"


def cursor_line(a: Analysis, token: int | None, width: int) -> Text:
    """Which part of the answer the panels show, and the keys that move the token cursor."""
    what = token_label(a, token)
    keys = ", . token · a whole answer" if token is not None else ", . pick a token"
    return first_fit([Text.assemble(("panels: ", "dim"), (what, "bold"), (f" · {keys}", "dim")),
                      Text.assemble((what, "bold"), (" · , . a", "dim")),
                      Text(what, "bold")], width)


def first_fit(candidates: list[Text], width: int) -> Text:
    """The first of `candidates` (longest first) that fits in `width` cells, else the last."""
    return next((c for c in candidates if c.cell_len <= width), candidates[-1])


def model_line(a: Analysis, width: int) -> Text:
    """Model, device, dtype and size on one line: shorter forms where the panel is narrow."""
    m = a.model
    name = visible(m.name)
    facts = [
        f" · {visible(m.device)} · {visible(m.dtype)} · {m.num_layers} layers × {m.num_heads} heads",
        f" · {visible(m.device)} · {visible(m.dtype)} · {m.num_layers}L×{m.num_heads}H",
        f" · {m.num_layers}L×{m.num_heads}H",
        "",
    ]
    return first_fit([Text.assemble((name, "bold"), (f, "dim")) for f in facts], width)


def cliff_line(a: Analysis, width: int) -> Text:
    if a.cliff_layer is not None:
        k = str(a.cliff_layer)
        forms = [
            Text.assemble(("cliff layer ", "bold"), (k, "bold red"),
                          (f"  image irrelevant from layer {k} on", "dim")),
            Text.assemble(("cliff layer ", "bold"), (k, "bold red")),
            Text.assemble(("cliff ", "bold"), (k, "bold red")),
        ]
    elif a.sweep_same is not None:
        forms = [Text("no cliff: the full model (K = L) changes the answer", "dim"),
                 Text("no cliff: K = L changes the answer", "dim"), Text("no cliff", "dim")]
    else:
        forms = [Text("cliff layer unknown · s runs the sweep", "dim"),
                 Text("cliff unknown · s sweeps", "dim"), Text("cliff ?", "dim")]
    return first_fit(forms, width)


def notes_lines(notes: list[str], width: int, compact: bool, style: Style | str = "") -> list[Text]:
    """How the image was read and what the model could not take in: a line per note, or all
    on one line cut to `width` where the panel is short of rows."""
    if compact:
        line = Text.assemble(("⚠ ", style), (" · ".join(visible(n) for n in notes), style))
        line.truncate(max(1, width), overflow="ellipsis")
        return [line]
    return [Text.assemble(("⚠ ", style), (visible(n), style)) for n in notes]


class AnswerPanel(Static):
    """Question, answer, notes, model and cliff; every line from outside drawn with
    visible()."""

    COMPONENT_CLASSES = {"answer-panel--note"}
    DEFAULT_CSS = """
    AnswerPanel { height: auto; padding: 0 1; }
    AnswerPanel > .answer-panel--note { color: $warning; }
    """

    # Bound to the explorer's state (data_bind); a sweep's edit comes as the same object again.
    analysis: var[Analysis | None] = var(None, always_update=True, init=False)
    view: var[ViewState] = var(ViewState, init=False)

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.border_title = "Answer"

    def watch_analysis(self) -> None:
        self.refresh_content()

    def watch_view(self, old: ViewState, view: ViewState) -> None:
        if old.answer_token != view.answer_token:
            self.refresh_content()

    def set_pending(self, question: str | None, status: str) -> None:
        self.analysis = None
        text = Text()
        if question:
            text.append("Q ", "bold")
            text.append(visible(question) + "\n")
        text.append(visible(status), "dim")
        self.update(text)

    def _width(self) -> int:
        return self.content_region.width or max(20, self.size.width - 4)

    def refresh_content(self) -> None:
        a = self.analysis
        if a is None:
            return
        width = self._width()
        total = float(np.sum(a.answer_logprobs))
        question = Text.assemble(("Q ", "bold"), visible(a.question))
        cursor = has_token_cursor(a)
        token = self.view.answer_token if cursor else None
        answer = Text.assemble(("A ", "bold"), answer_text(a, token),
                               (f"   log p {total:+.2f}", "dim"))
        if not a.ended_with_eos:
            answer.append(" (cut at max tokens)", "dim")
        lines = [question, answer]
        if cursor:
            lines.append(cursor_line(a, token, width))
        for check in a.failed_checks:
            lines.append(Text.assemble(("✗ self-check failed: ", "bold red"),
                                       (visible(check.describe()), "red")))
        if a.notes:
            style = self.get_component_rich_style("answer-panel--note")
            lines += notes_lines(a.notes, width, self.app.size.height < 30, style)
        lines += [model_line(a, width), cliff_line(a, width)]
        # Fitted lines are one line each; the question, answer and notes wrap.
        self.update(Text("\n").join(lines))

    def on_resize(self) -> None:
        self.refresh_content()
