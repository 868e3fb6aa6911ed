"""Compare two analyses on one layer cursor (docs/definitions.md, "Compare"), with no UI.

Layers. Two analyses of models with the same depth L compare layer by layer. Where the depths
differ they compare by relative depth l/L: each layer l of the *shallower* analysis is paired
with the layer m of the deeper one whose m/L_deep is nearest to l/L_shallow (a tie goes to the
lower m). The pairing is one-to-one (the deeper model has more layers, so no layer is used
twice) and every layer of the shallower model is compared; the deeper model's other layers
are not. Cliffs compare the same way: K/L, the relative depth of the first truncated layer.

Per compared layer:
- `shares_diff[g]` = share_A[g] − share_B[g] for each token group g;
- `cam_correlation` = Pearson's r between the two CAMs over the feature tokens, where both
  analyses have the same feature tokens (the same count, the same views and the same region
  per token, NaN matching NaN); None where they do not, where either CAM was not computed, or
  where either map is constant at that layer (r is undefined there).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from flowtui.engine.analysis import GROUPS, Analysis
from flowtui.render.maps import sink_mask
from flowtui.textsafe import signed

COMPARE_FORMAT = "flowtui.compare"
# Written into every PNG this module makes: a later run replaces such a file and no other.
PNG_MARK = "flowtui compare"

MAPPING_SAME = "layer by layer (same depth)"
MAPPING_RELATIVE = ("by relative depth l/L: each layer l of the shallower model ({side}) is "
                    "paired with the layer m of the deeper one whose m/L is nearest to l/L (ties "
                    "to the lower m); the deeper model's other layers are not compared")


def nearest_layer(layer: int, layers_from: int, layers_to: int) -> int:
    """The layer m of a model with `layers_to` layers whose m/layers_to is nearest to
    layer/layers_from (exact arithmetic; a tie goes to the lower m)."""
    x = Fraction(layer * layers_to, layers_from)
    low = math.floor(x)
    m = low if x - low <= Fraction(1, 2) else low + 1
    return min(max(m, 0), layers_to - 1)


def layer_pairs(layers_a: int, layers_b: int) -> list[tuple[int, int]]:
    """The compared (layer of A, layer of B) pairs, in order of depth (see the module doc)."""
    if layers_a == layers_b:
        return [(layer, layer) for layer in range(layers_a)]
    if layers_a < layers_b:
        return [(la, nearest_layer(la, layers_a, layers_b)) for la in range(layers_a)]
    return [(nearest_layer(lb, layers_b, layers_a), lb) for lb in range(layers_b)]


def same_feature_tokens(a: Analysis, b: Analysis) -> tuple[bool, str]:
    """Whether A and B have the same feature tokens (count, views, regions), and why not."""
    if a.num_features != b.num_features:
        return False, f"different numbers of image tokens ({a.num_features} and {b.num_features})"
    views_a = [a.views[int(i)] for i in a.token_views]
    views_b = [b.views[int(i)] for i in b.token_views]
    if views_a != views_b:
        return False, "the image tokens belong to different views"
    ra = np.asarray(a.token_regions, dtype=np.float64)
    rb = np.asarray(b.token_regions, dtype=np.float64)
    # Regions are in original-image pixels: a 1e-3 pixel slack absorbs float32 rounding only.
    if ra.shape != rb.shape or not np.allclose(ra, rb, rtol=0, atol=1e-3, equal_nan=True):
        return False, "the image tokens cover different regions (another image size or layout)"
    return True, ""


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson's r of two equal-length vectors; None where either is constant or not finite."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size < 2 or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return None
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def relative(k: int | None, num_layers: int) -> float | None:
    return None if k is None else k / num_layers


@dataclass
class LayerCompare:
    """One compared layer: A's layer, B's layer (equal at the same depth), their differences."""

    layer_a: int
    layer_b: int
    shares_a: np.ndarray  # [4], GROUPS order
    shares_b: np.ndarray
    cam_correlation: float | None

    @property
    def shares_diff(self) -> np.ndarray:
        return self.shares_a - self.shares_b


@dataclass
class Comparison:
    """Two analyses compared (see the module doc). `files` name them for the JSON."""

    a: Analysis
    b: Analysis
    layers: list[LayerCompare]
    relative_depth: bool
    cam_comparable: bool
    cam_note: str = ""
    files: tuple[str, str] = ("A", "B")

    @property
    def mapping(self) -> str:
        if not self.relative_depth:
            return MAPPING_SAME
        return MAPPING_RELATIVE.format(side="a" if self.a.num_layers < self.b.num_layers else "b")

    def to_json(self) -> dict[str, Any]:
        """The JSON object `flowtui compare --json` prints (README, "Compare")."""

        def side(an: Analysis, file: str) -> dict[str, Any]:
            out: dict[str, Any] = {
                "file": file,
                "model": an.model.name,
                "question": an.question,
                "answer": an.answer,
                "num_layers": an.num_layers,
                "num_image_tokens": an.num_features,
                # No sweep: the cliff is unknown, not absent (cliff null either way).
                "swept": an.sweep_same is not None,
                "cliff": an.cliff_layer,
            }
            if self.relative_depth:
                out["cliff_relative"] = relative(an.cliff_layer, an.num_layers)
            return out

        layers = []
        for lc in self.layers:
            entry: dict[str, Any] = {"layer": lc.layer_a}
            if self.relative_depth:
                entry["layer_b"] = lc.layer_b
                entry["relative_depth_a"] = lc.layer_a / self.a.num_layers
                entry["relative_depth_b"] = lc.layer_b / self.b.num_layers
            entry["shares_diff"] = _by_group(lc.shares_diff)
            entry["shares_a"] = _by_group(lc.shares_a)
            entry["shares_b"] = _by_group(lc.shares_b)
            entry["cam_correlation"] = lc.cam_correlation
            layers.append(entry)
        return {
            "format": COMPARE_FORMAT,
            "version": 1,
            "a": side(self.a, self.files[0]),
            "b": side(self.b, self.files[1]),
            "relative_depth": self.relative_depth,
            "mapping": self.mapping,
            "groups": list(GROUPS),
            "cam_comparable": self.cam_comparable,
            "cam_note": self.cam_note,
            "layers": layers,
        }


def _by_group(values: np.ndarray) -> dict[str, float]:
    return {g: float(v) for g, v in zip(GROUPS, values, strict=True)}


def compare(a: Analysis, b: Analysis, files: tuple[str, str] = ("A", "B")) -> Comparison:
    """Compare analysis A with analysis B (differences are A − B)."""
    la, lb = a.num_layers, b.num_layers
    ok, note = same_feature_tokens(a, b)
    for name, an in (("A", a), ("B", b)):
        if ok and not an.cam_settings.computed:
            ok, note = False, f"{name}'s CAM was not computed (analysed without the backward pass)"
    cam_a = np.asarray(a.cam_tokens, dtype=np.float64)
    cam_b = np.asarray(b.cam_tokens, dtype=np.float64)
    sa = np.asarray(a.shares, dtype=np.float64)
    sb = np.asarray(b.shares, dtype=np.float64)
    layers = [
        LayerCompare(i, j, sa[i], sb[j], pearson(cam_a[i], cam_b[j]) if ok else None)
        for i, j in layer_pairs(la, lb)
    ]
    return Comparison(a, b, layers, relative_depth=la != lb, cam_comparable=ok, cam_note=note,
                      files=files)


class JointAttention(NamedTuple):
    """Both sides' attention maps on one colour scale per compared layer (`joint_attention`)."""

    values_a: np.ndarray  # float32 [L_A, N_A] in 0..1; layers not compared stay 0
    values_b: np.ndarray  # float32 [L_B, N_B]
    vmax: np.ndarray  # float32 [pairs]: the raw attention drawn as the top colour
    sinks: np.ndarray  # int [pairs]: sink tokens of both sides left out of the scale


def joint_attention(c: Comparison, view: int = 0, exclude_sinks: bool = False) -> JointAttention:
    """The answer's attention on A's and B's image tokens on **one** colour scale per compared
    layer: at each pair (la, lb), both sides' raw attention divided by the larger of the two
    sides' maxima over their tokens of `view` (a side with fewer views: its last view). With
    `exclude_sinks`, each side's sink tokens at its layer (as the explorer's `k` finds them:
    `render.maps.sink_mask`) are left out of that maximum and drawn clipped to the top colour.
    Raises ValueError where either side has no attention map."""
    if c.a.attention_tokens is None or c.b.attention_tokens is None:
        raise ValueError("an analysis has no attention map")

    def tokens(an: Analysis) -> np.ndarray:
        return an.view_tokens(min(view, len(an.views) - 1))

    raw_a = np.asarray(c.a.attention_tokens, dtype=np.float64)
    raw_b = np.asarray(c.b.attention_tokens, dtype=np.float64)
    ta, tb = tokens(c.a), tokens(c.b)
    out_a, out_b = np.zeros(raw_a.shape, np.float32), np.zeros(raw_b.shape, np.float32)
    vmax = np.zeros(len(c.layers), np.float32)
    sinks = np.zeros(len(c.layers), np.int64)
    for i, lc in enumerate(c.layers):
        va, vb = raw_a[lc.layer_a, ta], raw_b[lc.layer_b, tb]
        if exclude_sinks:
            ma, mb = sink_mask(va), sink_mask(vb)
            sinks[i] = int(ma.sum() + mb.sum())
            va, vb = va[~ma], vb[~mb]
        both = np.concatenate([va[np.isfinite(va)], vb[np.isfinite(vb)]])
        top = float(both.max()) if both.size else 0.0
        vmax[i] = top
        if top > 0:
            out_a[lc.layer_a] = np.clip(np.nan_to_num(raw_a[lc.layer_a] / top, nan=0.0), 0, 1)
            out_b[lc.layer_b] = np.clip(np.nan_to_num(raw_b[lc.layer_b] / top, nan=0.0), 0, 1)
    return JointAttention(out_a, out_b, vmax, sinks)


def correlation_text(c: Comparison, index: int) -> str:
    """The CAM correlation at compared layer `index`, or why there is none."""
    r = c.layers[index].cam_correlation
    if r is not None:
        return f"CAM r {signed(r)}"
    if not c.cam_comparable:
        return f"CAM r n/a: {c.cam_note}"
    return "CAM r n/a: a map is constant at this layer"


def paired_layer(c: Comparison, side: str, k: int | None) -> int | None:
    """A cliff K of side `side` ("a" or "b") on the other side's K axis: K itself at the same
    depth, else the K' of the other model whose K'/L is nearest to K/L (None stays None)."""
    if k is None:
        return None
    la, lb = c.a.num_layers, c.b.num_layers
    frm, to = (la, lb) if side == "a" else (lb, la)
    if frm == to:
        return k
    x = Fraction(k * to, frm)  # K/L kept: the nearest K' (a tie to the lower), as for layers
    low = math.floor(x)
    return min(low if x - low <= Fraction(1, 2) else low + 1, to)


# --- text ----------------------------------------------------------------------------------------

def format_table(c: Comparison) -> str:
    """The comparison as a plain text table (`compare --table`, or output that is not a tty)."""
    lines = []
    for tag, an, file in (("A", c.a, c.files[0]), ("B", c.b, c.files[1])):
        cliff = ("not swept" if an.sweep_same is None else
                 "none" if an.cliff_layer is None else str(an.cliff_layer))
        if c.relative_depth and an.cliff_layer is not None:
            cliff += f" (K/L {an.cliff_layer / an.num_layers:.3f})"
        lines.append(f"{tag}: {file}")
        lines.append(f"   model {an.model.name}, {an.num_layers} layers; cliff {cliff}")
        lines.append(f"   question: {an.question}")
        lines.append(f"   answer:   {an.answer}")
    lines.append(f"layers compared {c.mapping}; differences are A - B")
    if not c.cam_comparable:
        lines.append(f"CAM correlation: none ({c.cam_note})")
    head = "layer A  B   l/L A  l/L B" if c.relative_depth else "layer"
    cols = "".join(f"{'d ' + g:>10}" for g in GROUPS) + f"{'CAM r':>8}"
    lines.append(head + cols)
    for lc in c.layers:
        if c.relative_depth:
            row = (f"{lc.layer_a:>7} {lc.layer_b:>2}  {lc.layer_a / c.a.num_layers:5.3f}  "
                   f"{lc.layer_b / c.b.num_layers:5.3f}")
        else:
            row = f"{lc.layer_a:>5}"
        row += "".join(f"{signed(v):>10}" for v in lc.shares_diff)
        row += f"{'-' if lc.cam_correlation is None else signed(lc.cam_correlation):>8}"
        lines.append(row)
    return "\n".join(lines)


# --- figure --------------------------------------------------------------------------------------

def figure_png(c: Comparison, title: str = "") -> bytes:
    """The comparison as PNG bytes (matplotlib Agg, no pyplot state): both analyses' shares per
    group on one scale (A solid, B dashed), A − B per group below, CAM r per layer where
    defined; both cliffs marked. The x axis is the layer, or l/L where the depths differ."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from flowtui.dataset.plots import COLOURS

    rows = 3 if c.cam_comparable else 2
    fig = Figure(figsize=(7.2, 2.4 * rows + 0.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True)
    rel = c.relative_depth

    def xs(n: int) -> np.ndarray:
        return np.arange(n) / n if rel else np.arange(n, dtype=float)

    xa, xb = xs(c.a.num_layers), xs(c.b.num_layers)
    for g, name in enumerate(GROUPS):
        colour = COLOURS[g % len(COLOURS)]
        axes[0].plot(xa, c.a.shares[:, g], color=colour, marker="o", markersize=2.5,
                     label=f"{name} A")
        axes[0].plot(xb, c.b.shares[:, g], color=colour, linestyle="--", marker="s",
                     markersize=2.5, label=f"{name} B")
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("attention share")
    # Above the panel: shares fill the whole [0, 1] range, so any corner hides data.
    axes[0].legend(fontsize=7, ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.0),
                   frameon=False)
    # The differences sit at the compared layers: A's depth (its l/L where the depths differ).
    xd = np.array([lc.layer_a / c.a.num_layers if rel else lc.layer_a for lc in c.layers],
                  dtype=float)
    diff = np.array([lc.shares_diff for lc in c.layers])
    for g, name in enumerate(GROUPS):
        axes[1].plot(xd, diff[:, g], color=COLOURS[g % len(COLOURS)], marker="o",
                     markersize=2.5, label=name)
    axes[1].axhline(0, color="0.5", linewidth=0.8)
    top = max(0.05, float(np.abs(diff).max()) * 1.1) if diff.size else 0.05
    axes[1].set_ylim(-top, top)
    axes[1].set_ylabel("share A − B")
    axes[1].legend(fontsize=7, ncol=4, loc="best")
    if rows == 3:
        r = np.array([np.nan if lc.cam_correlation is None else lc.cam_correlation
                      for lc in c.layers])
        axes[2].plot(xd, r, color=COLOURS[3], marker="o", markersize=3)
        axes[2].axhline(0, color="0.5", linewidth=0.8)
        axes[2].set_ylim(-1.05, 1.05)
        axes[2].set_ylabel("CAM Pearson r")
    for tag, an, style in (("A", c.a, "-"), ("B", c.b, "--")):
        if an.cliff_layer is None:
            continue
        x = an.cliff_layer / an.num_layers if rel else an.cliff_layer
        for i, ax in enumerate(axes):
            ax.axvline(x, color="#c92a2a", linestyle=style, linewidth=1.1, alpha=0.8,
                       label=f"cliff {tag} K={an.cliff_layer}" if i == len(axes) - 1 else None)
    if c.a.cliff_layer is not None or c.b.cliff_layer is not None:
        axes[-1].legend(fontsize=7, loc="best")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("relative depth l/L (cliffs at K/L)" if rel else "layer (cliffs at K)")
    fig.suptitle(title or f"A: {c.a.question}   B: {c.b.question}", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": PNG_MARK})
    return buf.getvalue()


def is_own_png(path: Path, mark: str = PNG_MARK) -> bool:
    """Whether `path` is a PNG this module (or `mark`'s writer) wrote: only such a file is
    replaced."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return head.startswith(b"\x89PNG") and mark.encode() in head


def save_png(c: Comparison, path: str | Path, inputs: tuple[str | Path, ...] = (),
             title: str = "") -> Path:
    """Write the figure to `path` atomically. InputError (nothing written) for a path that is
    not a .png name, one of `inputs`, in a missing folder, or a file this never wrote."""
    from flowtui.dataset.results import write_atomic
    from flowtui.engine.errors import InputError

    path = Path(path)
    check_png_target(path, inputs)
    data = figure_png(c, title)
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def check_png_target(path: Path, inputs: tuple[str | Path, ...] = (), mark: str = PNG_MARK,
                     option: str = "--png") -> None:
    """Refuse (InputError) a target that would lose something: see `save_png`."""
    from flowtui.engine.errors import InputError

    if path.suffix.lower() != ".png":
        raise InputError(f"{option} {path}: give a file name ending in .png")
    if path.is_dir():
        raise InputError(f"{option} {path} is a directory; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{option} {path}: folder {parent} does not exist")
    for i in inputs:
        if Path(i).exists() and path.exists() and path.resolve() == Path(i).resolve():
            raise InputError(f"{option} {path} is one of the inputs")
    if path.exists() and not is_own_png(path, mark):
        raise InputError(f"{option} {path} exists and was not written by `{mark}`; choose "
                         "another name")
