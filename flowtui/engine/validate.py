"""Checking what a snapshot or a remote server hands us, field by field (untrusted input).

Each checker takes a value and the name it is known by, and returns it as the type flowtui
uses or raises SnapshotError naming the field and what it must be: no message ever says only
"bad file". codec.decode_analysis builds an Analysis from these.
"""

from __future__ import annotations

import math
from typing import Any, Literal, TypeGuard, overload

import numpy as np

from flowtui.engine.analysis import (
    GROUPS,
    CamSettings,
    Check,
    ModelInfo,
    TruncationRun,
    grid_regions,
)
from flowtui.engine.errors import SnapshotError

# --- every field checked ---------------------------------------------------------------
MISSING = object()
# Shares and attention are probabilities; float32 sums may pass 1 by rounding.
SLACK = 1e-3


def is_int(v: Any) -> TypeGuard[int | np.integer]:
    return isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)


def show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def field(m: dict, key: str, name: str | None = None, default: Any = MISSING) -> Any:
    if key not in m:
        if default is MISSING:
            raise SnapshotError(f"manifest field {name or key!r} is missing")
        return default
    return m[key]


def bad(name: str, want: str, value: Any) -> SnapshotError:
    return SnapshotError(f"manifest field {name!r} must be {want}, got {show(value)}")


def integer(v: Any, name: str, lo: int | None = None, hi: int | None = None) -> int:
    if not is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        bounds = (f" in {lo}..{hi}" if lo is not None and hi is not None
                  else f" >= {lo}" if lo is not None else "")
        raise bad(name, f"an integer{bounds}", v)
    return int(v)


def opt_integer(v: Any, name: str, lo: int | None = None, hi: int | None = None) -> int | None:
    return None if v is None else integer(v, name, lo, hi)


def string(v: Any, name: str) -> str:
    if not isinstance(v, str):
        raise bad(name, "a string", v)
    return v


def boolean(v: Any, name: str) -> bool:
    if not isinstance(v, bool):
        raise bad(name, "true or false", v)
    return v


def number(v: Any, name: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    if not (is_int(v) or isinstance(v, float)) or not math.isfinite(v) or not lo <= v <= hi:
        bounds = f" in [{lo}, {hi}]" if math.isfinite(lo) and math.isfinite(hi) else ""
        raise bad(name, f"a finite number{bounds}", v)
    return float(v)


def list_of(v: Any, name: str) -> list:
    if not isinstance(v, list):
        raise bad(name, "a list", v)
    return v


def strings(v: Any, name: str) -> list[str]:
    return [string(s, f"{name}[{i}]") for i, s in enumerate(list_of(v, name))]


@overload
def array(arrays: dict[str, np.ndarray], name: str, shape: list[tuple[str, int]], kinds: str,
          required: Literal[True] = ...) -> np.ndarray: ...
@overload
def array(arrays: dict[str, np.ndarray], name: str, shape: list[tuple[str, int]], kinds: str,
          required: bool) -> np.ndarray | None: ...
def array(arrays: dict[str, np.ndarray], name: str, shape: list[tuple[str, int]], kinds: str,
           required: bool = True) -> np.ndarray | None:
    """arrays[name] with the expected shape (named sizes, e.g. [("L", 4), ("4", 4)]) and a dtype
    of one of `kinds` (numpy kind letters), as an owned copy; None if absent and optional."""
    a = arrays.get(name)
    if a is None:
        if required:
            raise SnapshotError(f"array {name!r} is missing")
        return None
    if not isinstance(a, np.ndarray) or a.dtype.kind not in kinds:
        dtype = getattr(a, "dtype", type(a).__name__)
        want = {"b": "booleans", "iu": "integers"}.get(kinds, "numbers")
        raise SnapshotError(f"array {name!r} has dtype {dtype}, expected {want}")
    if a.shape != tuple(n for _, n in shape):
        want = ", ".join(label if label == str(n) else f"{label}={n}" for label, n in shape)
        raise SnapshotError(f"array {name!r} has shape {list(a.shape)}, expected [{want}]")
    return np.array(a)


@overload
def floats(arrays: dict[str, np.ndarray], name: str, shape: list[tuple[str, int]],
           lo: float = ..., hi: float = ..., required: Literal[True] = ...) -> np.ndarray: ...
@overload
def floats(arrays: dict[str, np.ndarray], name: str, shape: list[tuple[str, int]],
           lo: float = ..., hi: float = ..., *, required: bool) -> np.ndarray | None: ...
def floats(arrays: dict[str, np.ndarray], name: str, shape: list[tuple[str, int]],
            lo: float = -math.inf, hi: float = math.inf, required: bool = True
            ) -> np.ndarray | None:
    """A float32 array whose every value is finite and within [lo, hi] (with SLACK)."""
    a = array(arrays, name, shape, "fiu", required)
    if a is None:
        return None
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise SnapshotError(f"array {name!r} holds NaN or infinite values")
    if a.size and (a.min() < lo - SLACK or a.max() > hi + SLACK):
        raise SnapshotError(f"array {name!r} has values outside [{lo:g}, {hi:g}]")
    return a


def image_array(image: Any) -> np.ndarray:
    if (not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3
            or image.shape[2] != 3 or 0 in image.shape):
        shape = list(getattr(image, "shape", []))
        raise SnapshotError(f"the image must be uint8 [H, W, 3], got {shape}")
    return image


def groups(v: Any, S: int, T: int) -> dict[str, list[tuple[int, int]]]:
    """The four groups' spans: inside the sequence, not overlapping, covering every position
    once, the image group not empty and the output group the last T positions."""
    if not isinstance(v, dict):
        raise bad("groups", "an object of the four groups", v)
    unknown = set(v) - set(GROUPS)
    if unknown:
        raise bad("groups", f"the groups {', '.join(GROUPS)}", sorted(unknown)[0])
    groups: dict[str, list[tuple[int, int]]] = {}
    covered = np.zeros(S, dtype=np.int32)
    for g in GROUPS:
        spans = []
        for i, span in enumerate(list_of(field(v, g, f"groups.{g}"), f"groups.{g}")):
            name = f"groups.{g}[{i}]"
            if not isinstance(span, list) or len(span) != 2:
                raise bad(name, "a [start, end] pair", span)
            s, e = integer(span[0], name, 0, S), integer(span[1], name, 0, S)
            if s >= e:
                raise bad(name, f"a span start < end within the {S} tokens", span)
            covered[s:e] += 1
            spans.append((s, e))
        groups[g] = spans
    if not groups["image"]:
        raise SnapshotError("manifest field 'groups.image' is empty")
    if (covered != 1).any():
        where = int(np.flatnonzero(covered != 1)[0])
        how = "is in no group" if covered[where] == 0 else "is in more than one group"
        raise SnapshotError(f"manifest field 'groups': token {where} {how}")
    if groups["output"] != [(S - T, S)]:
        raise bad("groups.output", f"the last {T} tokens [[{S - T}, {S}]] (the answer)",
                   v["output"])
    return groups


def checks(v: Any) -> list[Check]:
    if not isinstance(v, list):
        raise bad("checks", "a list", v)
    out = []
    for i, c in enumerate(v):
        name = f"checks[{i}]"
        if not isinstance(c, dict):
            raise bad(name, "an object", c)
        numbers = c.get("numbers", {})
        if not isinstance(numbers, dict) or not all(isinstance(k, str) for k in numbers):
            raise bad(f"{name}.numbers", "an object of numbers", numbers)
        out.append(Check(
            name=string(field(c, "name", f"{name}.name"), f"{name}.name"),
            passed=boolean(field(c, "passed", f"{name}.passed"), f"{name}.passed"),
            numbers={k: number(x, f"{name}.numbers.{k}") for k, x in numbers.items()},
            detail=string(c.get("detail", ""), f"{name}.detail"),
        ))
    return out


def truncations(v: Any, L: int, N: int) -> list[TruncationRun]:
    runs = []
    for i, t in enumerate(list_of(v, "truncations")):
        name = f"truncations[{i}]"
        if not isinstance(t, dict):
            raise bad(name, "an object", t)
        strategy = string(field(t, "strategy", f"{name}.strategy"), f"{name}.strategy")
        if strategy not in ("all", "top", "random"):
            raise bad(f"{name}.strategy", "all, top or random", strategy)
        keep = opt_integer(t.get("keep"), f"{name}.keep", 0, N)
        if strategy != "all" and keep is None:
            raise bad(f"{name}.keep", f"the image tokens kept by {strategy}", None)
        ids = list_of(field(t, "answer_token_ids", f"{name}.answer_token_ids"),
                    f"{name}.answer_token_ids")
        runs.append(TruncationRun(
            layer=integer(field(t, "layer", f"{name}.layer"), f"{name}.layer", 0, L),
            strategy=strategy,
            keep=keep,
            seed=opt_integer(t.get("seed"), f"{name}.seed"),
            answer=string(field(t, "answer", f"{name}.answer"), f"{name}.answer"),
            answer_token_ids=[integer(x, f"{name}.answer_token_ids[{j}]", 0)
                              for j, x in enumerate(ids)],
            baseline_logprob=number(field(t, "baseline_logprob", f"{name}.baseline_logprob"),
                                    f"{name}.baseline_logprob"),
            same=boolean(field(t, "same", f"{name}.same"), f"{name}.same"),
            seconds=number(t.get("seconds", 0.0), f"{name}.seconds", 0.0),
        ))
    return runs


def cam_settings(v: Any) -> CamSettings:
    if not isinstance(v, dict):
        raise bad("cam", "an object", v)
    c = CamSettings()
    return CamSettings(
        site=string(v.get("site", c.site), "cam.site"),
        target=string(v.get("target", c.target), "cam.target"),
        threshold=number(v.get("threshold", c.threshold), "cam.threshold", 0.0, 1.0),
        computed=boolean(v.get("computed", c.computed), "cam.computed"),
    )


def model_info(v: Any) -> ModelInfo:
    if not isinstance(v, dict):
        raise bad("model", "an object", v)
    return ModelInfo(
        name=string(field(v, "name", "model.name"), "model.name"),
        family=string(field(v, "family", "model.family"), "model.family"),
        num_layers=integer(field(v, "num_layers", "model.num_layers"), "model.num_layers", 1),
        num_heads=integer(field(v, "num_heads", "model.num_heads"), "model.num_heads", 1),
        dtype=string(field(v, "dtype", "model.dtype"), "model.dtype"),
        device=string(field(v, "device", "model.device"), "model.device"),
    )


def tokens_v1(m: dict, arrays: dict[str, np.ndarray], image: np.ndarray, L: int) -> dict:
    """Version 1 stored one grid `cam` [L, rows, cols] over `image_box`: make it per token."""
    cam = arrays.get("cam")
    if cam is None:
        raise SnapshotError("array 'cam' is missing")
    if cam.ndim != 3 or cam.shape[0] != L or 0 in cam.shape:
        raise SnapshotError(f"array 'cam' has shape {list(cam.shape)}, expected "
                            f"[L={L}, rows, cols]")
    _, rows, cols = cam.shape
    cam = floats(arrays, "cam", [("L", L), ("rows", rows), ("cols", cols)], 0.0, 1.0)
    h, w = image.shape[:2]
    box = m.get("image_box")
    if box is None:
        box = [0, 0, w, h]
    elif (not isinstance(box, list) or len(box) != 4 or not all(is_int(x) for x in box)
          or not (0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h)):
        raise bad("image_box", f"[x0, y0, x1, y1] inside the {w}x{h} image", box)
    return {
        "cam_tokens": cam.reshape(L, rows * cols),
        "token_regions": grid_regions(rows, cols, tuple(box)),
        "token_views": np.zeros(rows * cols, dtype=np.int16),
        "views": ["image"],
        "image_grid": (rows, cols),
        "image_box": tuple(int(x) for x in box) if m.get("image_box") is not None else None,
    }


def tokens_v2(m: dict, arrays: dict[str, np.ndarray], L: int) -> dict:
    raw = arrays["cam_tokens"]
    if not isinstance(raw, np.ndarray) or raw.ndim != 2 or raw.shape[0] != L or raw.shape[1] < 1:
        shape = list(getattr(raw, "shape", []))
        raise SnapshotError(f"array 'cam_tokens' has shape {shape}, expected [L={L}, N >= 1]")
    N = raw.shape[1]
    cam = floats(arrays, "cam_tokens", [("L", L), ("N", N)], 0.0, 1.0)
    regions = array(arrays, "token_regions", [("N", N), ("4", 4)], "fiu").astype(np.float32)
    finite = np.isfinite(regions)
    none = np.isnan(regions).all(axis=1)
    if not (finite.all(axis=1) | none).all():
        raise SnapshotError("array 'token_regions' has rows that are neither four finite "
                            "numbers nor all NaN (no region)")
    r = regions[~none]
    if ((r[:, 2] < r[:, 0]) | (r[:, 3] < r[:, 1])).any():
        raise SnapshotError("array 'token_regions' has regions with x1 < x0 or y1 < y0")
    views = m.get("views") or ["image"]
    views = strings(views, "views")
    token_views = array(arrays, "token_views", [("N", N)], "iu")
    if N and (token_views.min() < 0 or token_views.max() >= len(views)):
        raise SnapshotError(f"array 'token_views' must index the {len(views)} views "
                            f"(0..{len(views) - 1})")
    grid = m.get("image_grid")
    if grid is not None:
        if (not isinstance(grid, list) or len(grid) != 2
                or not all(is_int(x) and x >= 1 for x in grid)):
            raise bad("image_grid", "[rows, cols] or null", grid)
        if grid[0] * grid[1] != N or len(views) != 1:
            raise bad("image_grid", f"rows x cols = the {N} image tokens of one view", grid)
    return {
        "cam_tokens": cam,
        "token_regions": regions,
        "token_views": token_views.astype(np.int16),
        "views": views,
        "image_grid": None if grid is None else (int(grid[0]), int(grid[1])),
        "image_box": None,
    }
