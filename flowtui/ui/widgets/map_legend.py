"""The image panel's legend: the colormap as a bar (the CAM threshold marked) and which map and
scale is drawn, in the longest form that fits the width."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text

from flowtui.render.colormaps import colormap_lut
from flowtui.ui.state import ViewState


def _bar(view: ViewState, width: int, threshold: float | None) -> Text:
    """The colormap as a bar, with the threshold marked (None: no threshold is applied)."""
    lut = colormap_lut(view.colormap)
    bar = Text()
    mark = -1 if threshold is None else min(width - 1, int(round(threshold * (width - 1))))
    for i in range(width):
        r, g, b = (int(c) for c in lut[int(round(i / (width - 1) * 255))])
        if i == mark:
            fg = "black" if (r * 299 + g * 587 + b * 114) > 128_000 else "white"
            bar.append("┃", Style(color=fg, bgcolor=f"rgb({r},{g},{b})", bold=True))
        else:
            # Below the threshold the paper shows nothing: dim that part of the bar.
            if i < mark and view.mode != "image":
                r, g, b = r // 3, g // 3, b // 3
            bar.append(" ", Style(bgcolor=f"rgb({r},{g},{b})"))
    return bar


def _fit_line(left: str, middles: list[Text], rights: list[str], width: int) -> Text:
    """`left middle … right` with the longest middle that fits in `width` cells (a shorter
    right end is tried before a shorter middle)."""
    middle, right = middles[-1], rights[-1]
    fits = [
        (m, r) for m in middles for r in rights if len(left) + m.cell_len + len(r) + 2 <= width
    ]
    if fits:
        middle, right = fits[0]
    info = Text.assemble((left, "dim"), " ", middle)
    info.append(" " * max(1, width - info.cell_len - len(right)))
    info.append(right, "dim")
    info.truncate(width)
    return info


def first_fit(candidates: list[str], width: int) -> str:
    """The first of `candidates` (longest first) no wider than `width`, else the last."""
    return next((c for c in candidates if len(c) <= width), candidates[-1])


def legend_text(
    view: ViewState, width: int, vmax: float | None = None, sinks: int | None = None,
    style: str | None = None,
) -> Text:
    """A colormap bar and, beneath it, which map and scale is drawn: the CAM over 0..1 with the
    threshold marked, or (`vmax` given) the attention over 0..vmax, with the number of sink
    tokens left out of the scale (`sinks`, None when the toggle is off). `style` names the map
    style at real pixels ('regions' or 'smooth (bilinear)'; None in half-blocks)."""
    width = max(8, width)
    cmap, mode = (view.colormap, "bold"), (view.mode, "bold")
    if style is not None:  # the style travels with the mode, in every form that names it
        mode = (f"{view.mode} · {style}", "bold")
    if vmax is None:
        thr = view.threshold
        bar = _bar(view, width, thr)
        middles = [
            Text.assemble(("CAM", "bold"), " · ", (f"threshold {thr:.2f}", "bold"), " [ ]  ",
                          cmap, " c  ", mode, " o"),
            Text.assemble(("CAM", "bold"), " ", (f"thr {thr:.2f}", "bold"), " [ ]  ",
                          cmap, " c  ", mode, " o"),
            Text.assemble(("CAM", "bold"), " ", (f"thr {thr:.2f}", "bold"), " ", cmap, " ", mode),
            Text.assemble((f"thr {thr:.2f}", "bold"), " ", cmap, " ", mode),
            Text(f"thr {thr:.2f}", "bold"),
        ]
        return Text.assemble(bar, "\n", _fit_line("0", middles, ["1"], width))
    bar = _bar(view, width, None)
    if sinks is None:
        what = [Text("attention", "bold")]
    else:
        what = [
            Text.assemble(("attention", "bold"), " · ", (sinks_text(sinks, "sinks"), "bold"),
                          " k"),
            Text.assemble(("attention", "bold"), " ", (f"−{sinks} sink{'s' * (sinks != 1)}", "bold")),
            Text.assemble(("att.", "bold"), " ", (f"−{sinks}", "bold")),
        ]
    middles = [what[0] + Text.assemble("  ", cmap, " c  ", mode, " o")]
    middles += what + [Text("attention", "bold"), Text("att.", "bold")]
    rights = [f"max {vmax:.3g}", f"{vmax:.3g}", f"{vmax:.2g}"]
    return Text.assemble(bar, "\n", _fit_line("0", middles, rights, width))


def sinks_text(count: int, noun: str = "sink tokens") -> str:
    """'3 sink tokens excluded' (the singular for one)."""
    if count == 1:
        noun = noun.replace("tokens", "token").replace("sinks", "sink")
    return f"{count} {noun} excluded"
