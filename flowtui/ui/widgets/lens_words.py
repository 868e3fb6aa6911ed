"""The logit lens under the image (docs/definitions.md, "Logit lens on image tokens"): the lens
map's colour bar (the chosen word's probability, 0..1) with the layer at which that word first
tops an image token; in the **words** display, the current layer's top words of the view's
tokens, most frequent first, each with the first layer at which it tops any of them; and the
labels the half-block image writes each word into its area with (render/word_labels.py)."""

from __future__ import annotations

from collections import Counter

import numpy as np
from rich.cells import cell_len
from rich.text import Text

from flowtui.engine.analysis import Analysis
from flowtui.render.word_labels import fit_label, word_areas
from flowtui.textsafe import visible
from flowtui.ui.state import ViewState
from flowtui.ui.widgets.map_legend import _bar, _fit_line


def top_words(a: Analysis, layer: int, tokens: np.ndarray) -> list[tuple[str, int, int | None]]:
    """(word, how many of `tokens` it tops at `layer`, the first layer it tops any of them),
    most frequent first."""
    lens = a.lens
    assert lens is not None
    ids = lens.top_ids[layer, tokens, 0]
    out = []
    for tid, count in Counter(int(t) for t in ids).most_common():
        word = visible(lens.strings.get(tid, f"#{tid}"))
        out.append((word, count, lens.first_top_layer(tokens, tid)))
    return out


def image_labels(a: Analysis, layer: int, cell_owner: np.ndarray) -> list[tuple[int, int, str]]:
    """(row, col, text) for each word area of the drawn image at `layer` (`cell_owner`: the
    token under each cell) whose run has room: the word with the first layer at which it tops
    any of the area's tokens ("circle L5"), or the word alone, or the word cut to fit. Words
    come from the tokenizer (or a snapshot): made control-character safe before measuring."""
    lens = a.lens
    assert lens is not None
    layer = min(layer, lens.num_layers - 1)
    out = []
    for area in word_areas(cell_owner, lens.top_ids[layer, :, 0]):
        word = visible(lens.strings.get(area.word_id, f"#{area.word_id}"))
        first = lens.first_top_layer(area.tokens, area.word_id)
        texts = ([f"{word} L{first}"] if first is not None else []) + [word]
        text = fit_label(texts, area.width, cell_len)
        if text is not None:
            # Centred in its run (fit_label keeps it within the run's width).
            out.append((area.row, area.col + (area.width - cell_len(text)) // 2, text))
    return out


def lens_legend(a: Analysis, view: ViewState, width: int, words: bool) -> Text:
    """Two lines: the colour bar (lens map) or the top words (words display), then what is drawn."""
    lens = a.lens
    assert lens is not None
    width = max(8, width)
    tokens = a.view_tokens(view.view)
    layer = min(view.layer, lens.num_layers - 1)
    word = visible(lens.word)
    first = lens.first_top_layer(tokens)
    since = f"top from L{first}" if first is not None else "never top"
    what = [Text.assemble((f"P({word!r})", "bold"), f" · {since} · / word"),
            Text.assemble((f"P({word!r})", "bold"), f" {since}"), Text(f"P({word!r})", "bold")]
    if not words:
        return Text.assemble(_bar(view, width, None), "\n", _fit_line("0", what, ["1"], width))
    line = Text()
    for w, count, since_layer in top_words(a, layer, tokens):
        part = f"{w}×{count}" + (f" (L{since_layer})" if since_layer is not None else "")
        if line.cell_len + len(part) + 2 > width:
            break
        if line.plain:
            line.append(" · ")
        line.append(part, "bold" if w == word else "")
    return Text.assemble(line, "\n", _fit_line("", what, [""], width))
