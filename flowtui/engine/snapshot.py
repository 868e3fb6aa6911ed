"""The `.flowtui` snapshot format (README, "Snapshot format"): a zip of manifest.json, arrays.npz, image.png.

Written atomically (temporary file in the same folder, then rename), never over a file that is
not a snapshot, and read as untrusted input: no pickle, every member's expanded size checked
before it is expanded, and every manifest field and array checked by `decode_analysis`.
`encode_analysis` / `decode_analysis` are the one encoding of an Analysis as a JSON manifest plus
named arrays: snapshots and the remote protocol (flowtui.remote) both use them.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import stat
import zipfile
from collections.abc import Iterable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from flowtui.engine.analysis import (
    GROUPS,
    Analysis,
    CamSettings,
    Check,
    ModelInfo,
    TruncationRun,
    cliff_layer,
    grid_regions,
)
from flowtui.engine.errors import SnapshotError, first_line
from flowtui.engine.filesafe import TMP_SUFFIX, WriteError, write_atomic
from flowtui.engine.images import open_bounded, regular_file, special_kind
from flowtui.engine.npy import NpyError, read_npy
from flowtui.version import __version__

__all__ = ["FORMAT", "TMP_SUFFIX", "VERSION", "check_target", "decode_analysis",
           "encode_analysis", "is_snapshot", "load_snapshot", "save_snapshot"]

FORMAT = "flowtui.snapshot"
VERSION = 2


def encode_analysis(a: Analysis) -> tuple[dict, dict[str, np.ndarray]]:
    """The manifest (JSON-ready) and the named arrays of `a`; the image is not included."""
    return _manifest(a), _arrays(a)


def _manifest(a: Analysis) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "flowtui_version": __version__,
        "created": a.created or datetime.now(UTC).isoformat(timespec="seconds"),
        "model": asdict(a.model),
        "question": a.question,
        "prompt": a.prompt,
        "answer": a.answer,
        "answer_token_ids": [int(t) for t in a.answer_token_ids],
        "ended_with_eos": bool(a.ended_with_eos),
        "max_new_tokens": int(a.max_new_tokens),
        "tokens": list(a.tokens),
        "groups": {g: [[int(s), int(e)] for s, e in spans] for g, spans in a.groups.items()},
        "image_grid": None if a.image_grid is None else [int(v) for v in a.image_grid],
        "views": list(a.views),
        "image_box": None if a.image_box is None else [int(v) for v in a.image_box],
        "cam": asdict(a.cam_settings),
        "truncations": [asdict(t) for t in a.truncations],
        "sweep_answers": a.sweep_answers,
        "cliff_layer": a.cliff_layer,
        "notes": list(a.notes),
        "checks": [asdict(c) for c in a.checks],
    }


def _arrays(a: Analysis) -> dict[str, np.ndarray]:
    arrays = {
        "shares": np.asarray(a.shares, dtype=np.float32),
        "head_shares": np.asarray(a.head_shares, dtype=np.float32),
        "answer_logprobs": np.asarray(a.answer_logprobs, dtype=np.float32),
        "cam_tokens": np.asarray(a.cam_tokens, dtype=np.float32),
        "token_regions": np.asarray(a.token_regions, dtype=np.float32),
        "token_views": np.asarray(a.token_views, dtype=np.int16),
        "feature_positions": np.asarray(a.feature_positions, dtype=np.int32),
    }
    if a.cam is not None:  # one grid: also as version 1 stored it
        arrays["cam"] = np.asarray(a.cam, dtype=np.float32)
    if a.image_attention is not None:
        arrays["image_attention"] = np.asarray(a.image_attention, dtype=np.float32)
    if a.attention_tokens is not None:
        arrays["attention_tokens"] = np.asarray(a.attention_tokens, dtype=np.float32)
    if a.sweep_logprob is not None:
        arrays["sweep_logprob"] = np.asarray(a.sweep_logprob, dtype=np.float32)
    if a.sweep_same is not None:
        arrays["sweep_same"] = np.asarray(a.sweep_same, dtype=bool)
    return arrays


# --- writing ------------------------------------------------------------------------------------
def check_target(path: str | Path, inputs: Iterable[str | Path | None] = ()) -> None:
    """Refuse to write a snapshot at `path` where that would lose something the user made: the
    input image itself (`inputs`), a folder, a special file, or any file that is not a flowtui
    snapshot (an empty file holds nothing and may be replaced). Raises SnapshotError."""
    path = Path(path)
    for image in inputs:
        if image is None or isinstance(image, Image.Image | np.ndarray):
            continue
        with contextlib.suppress(OSError, ValueError):
            if os.path.samefile(image, path):
                raise SnapshotError(f"{path} is the input image; refusing to replace it with a "
                                    "snapshot (give --out a .flowtui name)")
    try:
        st = path.stat()  # a link is followed: its target is what would be replaced
    except FileNotFoundError:
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir():
            raise SnapshotError(f"cannot write snapshot: folder {folder} does not exist") from None
        return
    except OSError as exc:
        raise SnapshotError(f"cannot write snapshot {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise SnapshotError(f"cannot write snapshot: {path} is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise SnapshotError(f"{path} is a {special_kind(st.st_mode)}; refusing to write a "
                            "snapshot over it")
    if st.st_size and not is_snapshot(path):
        raise SnapshotError(f"{path} exists and is not a flowtui snapshot; refusing to replace "
                            "it (choose another name, or move it away first)")


def is_snapshot(path: str | Path) -> bool:
    """Whether `path` is a regular file holding a flowtui snapshot's manifest (the manifest is
    read, capped; nothing else is)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as fh:
            if not fh.read(4).startswith(_ZIP_MAGIC):
                return False
            fh.seek(0)
            with zipfile.ZipFile(fh) as zf:
                m = _manifest_of(zf, _Budget(os.fstat(fh.fileno()).st_size))
        return m.get("format") == FORMAT
    except (OSError, ValueError, EOFError, RecursionError, zipfile.BadZipFile,
            zipfile.LargeZipFile, NotImplementedError, SnapshotError):
        return False


def save_snapshot(a: Analysis, path: str | Path, screen_svg: str | None = None,
                  inputs: Iterable[str | Path | None] = ()) -> Path:
    """Write `a` to `path` atomically. Refuses to replace what is not a snapshot, or the input
    image (`inputs`): see check_target. A new file gets the mode the umask gives; a replaced
    one keeps its mode. Raises SnapshotError with a one-line reason."""
    path = Path(path)
    check_target(path, inputs)
    manifest, arrays = encode_analysis(a)
    image = Image.fromarray(np.asarray(a.image, dtype=np.uint8)).convert("RGB")
    # What is written must read back: the same checks as on read, before any byte is written.
    decode_analysis(manifest, arrays, np.asarray(image))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    png = io.BytesIO()
    image.save(png, format="PNG")

    def write(fh: BinaryIO) -> None:
        with zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("manifest.json", json.dumps(manifest, indent=1))
            zf.writestr("arrays.npz", buf.getvalue())
            zf.writestr("image.png", png.getvalue())
            if screen_svg is not None:
                zf.writestr("screen.svg", screen_svg)

    try:
        return write_atomic(path, write)
    except WriteError as exc:
        raise SnapshotError(str(exc).replace("cannot write", "cannot write snapshot", 1)) \
            from None


# --- reading ------------------------------------------------------------------------------------
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# Everything one snapshot expands to when read (manifest, arrays, decoded image) stays within
# MIN_EXPANSION bytes, or EXPANSION times the file's size where that is more: a few MB of zip
# that claims gigabytes is refused before anything is expanded.
MIN_EXPANSION = 256 << 20
EXPANSION = 32
MAX_MANIFEST = 16 << 20
# The arrays the format defines; anything else in arrays.npz (a future version's) is skipped
# unread.
ARRAY_NAMES = ("shares", "head_shares", "answer_logprobs", "cam_tokens", "token_regions",
               "token_views", "feature_positions", "cam", "image_attention", "attention_tokens",
               "sweep_logprob", "sweep_same")


class _Budget:
    """The bytes a snapshot may still expand to; each member's declared size is taken from it
    before the member is read."""

    def __init__(self, file_size: int) -> None:
        self.file_size = file_size
        self.left = max(MIN_EXPANSION, EXPANSION * file_size)

    def take(self, what: str, n: int) -> None:
        if n > self.left:
            raise SnapshotError(
                f"{what} would expand to {n:,} bytes, out of proportion to the file's "
                f"{self.file_size:,} bytes; refusing it (a zip bomb?)"
            )
        self.left -= n


def _read_member(zf: zipfile.ZipFile, name: str, budget: _Budget, cap: int | None = None
                 ) -> bytes:
    """A member's bytes, its declared size checked first and the read capped at it."""
    info = zf.getinfo(name)
    if info.flag_bits & 0x1:
        raise SnapshotError(f"{name} is encrypted")
    size = info.file_size
    if cap is not None and size > cap:
        raise SnapshotError(f"{name} declares {size:,} bytes, more than a snapshot's {name} "
                            f"holds ({cap:,}); refusing it")
    budget.take(name, size)
    with zf.open(info) as fh:
        data = fh.read(size + 1)
    if len(data) != size:
        raise SnapshotError(f"{name} is corrupt: it does not expand to its declared size")
    return data


def _manifest_of(zf: zipfile.ZipFile, budget: _Budget) -> dict:
    try:
        m = json.loads(_read_member(zf, "manifest.json", budget, MAX_MANIFEST))
    except RecursionError:  # JSON nested deeper than Python's stack: hostile
        raise SnapshotError("manifest.json is nested too deeply") from None
    if not isinstance(m, dict):
        raise SnapshotError("manifest.json is not a JSON object")
    return m


def _read_npz(data: bytes, budget: _Budget) -> dict[str, np.ndarray]:
    """arrays.npz (a zip of .npy files, itself inside the snapshot's zip): the known arrays, each
    through the same size checks and the safe .npy parser; never np.load."""
    if not data.startswith(_ZIP_MAGIC):
        raise SnapshotError("arrays.npz is not an .npz archive")
    arrays = {}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for name in zf.namelist():
            key = name.removesuffix(".npy")
            if key in ARRAY_NAMES and key not in arrays:
                raw = _read_member(zf, name, budget)
                try:
                    arrays[key] = read_npy(raw, f"array {key!r}")
                except NpyError as exc:  # its message names the array
                    raise SnapshotError(str(exc)) from None
    return arrays


def _read_image(data: bytes, budget: _Budget) -> np.ndarray:
    try:
        with open_bounded(io.BytesIO(data), "its image.png", SnapshotError, ["PNG"]) as im:
            w, h = im.size
            budget.take("image.png", 4 * w * h)
            return np.asarray(im.convert("RGB"))
    except UnidentifiedImageError:
        if data.startswith(b"\x89PNG"):
            raise SnapshotError("image.png is corrupt or truncated") from None
        raise SnapshotError("image.png is not a PNG image") from None


class _Whole(SnapshotError):
    """A message that already names the file."""


def _what_is(head: bytes) -> str:
    """What a file that is not a zip looks like, from its first bytes, for the message."""
    images = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"II*\x00": "TIFF",
              b"MM\x00*": "TIFF", b"BM": "BMP"}
    for magic, kind in images.items():
        if head.startswith(magic):
            return f"it is a {kind} image; to analyse an image: flowtui IMAGE QUESTION"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "it is a WebP image; to analyse an image: flowtui IMAGE QUESTION"
    if not head:
        return "it is empty"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A cut multi-byte character at the end of the sample is still text.
        text = head[:-4].decode("utf-8", "replace") if len(head) > 8 else "\ufffd"
    if "\x00" not in text and "\ufffd" not in text:
        return "it is a text file"
    return "it is not a zip file"


def load_snapshot(path: str | Path) -> Analysis:
    """Read a `.flowtui` snapshot. Raises SnapshotError with a one-line reason on any problem."""
    path = Path(path)
    regular_file(path, "snapshot", SnapshotError)
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
            if not head.startswith(_ZIP_MAGIC):
                raise _Whole(f"{path} is not a flowtui snapshot ({_what_is(head)})")
            fh.seek(0)
            budget = _Budget(os.fstat(fh.fileno()).st_size)
            with zipfile.ZipFile(fh) as zf:
                names = set(zf.namelist())
                missing = {"manifest.json", "arrays.npz", "image.png"} - names
                if missing:
                    raise _Whole(f"{path} is not a flowtui snapshot (missing "
                                 f"{sorted(missing)[0]})")
                m = _manifest_of(zf, budget)
                if m.get("format") != FORMAT:
                    raise _Whole(f"{path} is not a flowtui snapshot")
                version = m.get("version")
                if not _is_int(version) or version < 1:
                    raise _Whole(f"{path}: snapshot version is missing")
                if version > VERSION:
                    raise _Whole(
                        f"{path} was written by a newer flowtui (snapshot version {version}, "
                        f"this flowtui reads up to {VERSION}); upgrade flowtui to open it"
                    )
                arrays = _read_npz(_read_member(zf, "arrays.npz", budget), budget)
                image = _read_image(_read_member(zf, "image.png", budget), budget)
        return decode_analysis(m, arrays, image)
    except _Whole:
        raise
    except SnapshotError as exc:
        raise SnapshotError(f"{path}: {exc}") from None
    except zipfile.BadZipFile:
        raise SnapshotError(f"{path} is corrupt or truncated (not a valid zip file)") from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.LargeZipFile,
            NotImplementedError) as exc:
        # ValueError: JSON that is not UTF-8 or not JSON; NotImplementedError: an unknown
        # compression method.
        reason = first_line(exc, 200, "")
        raise SnapshotError(f"{path} is corrupt: {type(exc).__name__}: {reason}") from None


# --- decoding: every field checked ---------------------------------------------------------------
_MISSING = object()
# Shares and attention are probabilities; float32 sums may pass 1 by rounding.
_SLACK = 1e-3


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _field(m: dict, key: str, name: str | None = None, default: Any = _MISSING) -> Any:
    if key not in m:
        if default is _MISSING:
            raise SnapshotError(f"manifest field {name or key!r} is missing")
        return default
    return m[key]


def _bad(name: str, want: str, value: Any) -> SnapshotError:
    return SnapshotError(f"manifest field {name!r} must be {want}, got {_show(value)}")


def _int(v: Any, name: str, lo: int | None = None, hi: int | None = None) -> int:
    if not _is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        bounds = (f" in {lo}..{hi}" if lo is not None and hi is not None
                  else f" >= {lo}" if lo is not None else "")
        raise _bad(name, f"an integer{bounds}", v)
    return int(v)


def _opt_int(v: Any, name: str, lo: int | None = None, hi: int | None = None) -> int | None:
    return None if v is None else _int(v, name, lo, hi)


def _str(v: Any, name: str) -> str:
    if not isinstance(v, str):
        raise _bad(name, "a string", v)
    return v


def _bool(v: Any, name: str) -> bool:
    if not isinstance(v, bool):
        raise _bad(name, "true or false", v)
    return v


def _float(v: Any, name: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    if not (_is_int(v) or isinstance(v, float)) or not math.isfinite(v) or not lo <= v <= hi:
        bounds = f" in [{lo}, {hi}]" if math.isfinite(lo) and math.isfinite(hi) else ""
        raise _bad(name, f"a finite number{bounds}", v)
    return float(v)


def _list(v: Any, name: str) -> list:
    if not isinstance(v, list):
        raise _bad(name, "a list", v)
    return v


def _strings(v: Any, name: str) -> list[str]:
    return [_str(s, f"{name}[{i}]") for i, s in enumerate(_list(v, name))]


def _array(arrays: dict[str, np.ndarray], name: str, shape: list[tuple[str, int]], kinds: str,
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


def _floats(arrays: dict[str, np.ndarray], name: str, shape: list[tuple[str, int]],
            lo: float = -math.inf, hi: float = math.inf, required: bool = True
            ) -> np.ndarray | None:
    """A float32 array whose every value is finite and within [lo, hi] (with _SLACK)."""
    a = _array(arrays, name, shape, "fiu", required)
    if a is None:
        return None
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise SnapshotError(f"array {name!r} holds NaN or infinite values")
    if a.size and (a.min() < lo - _SLACK or a.max() > hi + _SLACK):
        raise SnapshotError(f"array {name!r} has values outside [{lo:g}, {hi:g}]")
    return a


def _image(image: Any) -> np.ndarray:
    if (not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3
            or image.shape[2] != 3 or 0 in image.shape):
        shape = list(getattr(image, "shape", []))
        raise SnapshotError(f"the image must be uint8 [H, W, 3], got {shape}")
    return image


def _groups(v: Any, S: int, T: int) -> dict[str, list[tuple[int, int]]]:
    """The four groups' spans: inside the sequence, not overlapping, covering every position
    once, the image group not empty and the output group the last T positions."""
    if not isinstance(v, dict):
        raise _bad("groups", "an object of the four groups", v)
    unknown = set(v) - set(GROUPS)
    if unknown:
        raise _bad("groups", f"the groups {', '.join(GROUPS)}", sorted(unknown)[0])
    groups: dict[str, list[tuple[int, int]]] = {}
    covered = np.zeros(S, dtype=np.int32)
    for g in GROUPS:
        spans = []
        for i, span in enumerate(_list(_field(v, g, f"groups.{g}"), f"groups.{g}")):
            name = f"groups.{g}[{i}]"
            if not isinstance(span, list) or len(span) != 2:
                raise _bad(name, "a [start, end] pair", span)
            s, e = _int(span[0], name, 0, S), _int(span[1], name, 0, S)
            if s >= e:
                raise _bad(name, f"a span start < end within the {S} tokens", span)
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
        raise _bad("groups.output", f"the last {T} tokens [[{S - T}, {S}]] (the answer)",
                   v["output"])
    return groups


def _checks(v: Any) -> list[Check]:
    if not isinstance(v, list):
        raise _bad("checks", "a list", v)
    out = []
    for i, c in enumerate(v):
        name = f"checks[{i}]"
        if not isinstance(c, dict):
            raise _bad(name, "an object", c)
        numbers = c.get("numbers", {})
        if not isinstance(numbers, dict) or not all(isinstance(k, str) for k in numbers):
            raise _bad(f"{name}.numbers", "an object of numbers", numbers)
        out.append(Check(
            name=_str(_field(c, "name", f"{name}.name"), f"{name}.name"),
            passed=_bool(_field(c, "passed", f"{name}.passed"), f"{name}.passed"),
            numbers={k: _float(x, f"{name}.numbers.{k}") for k, x in numbers.items()},
            detail=_str(c.get("detail", ""), f"{name}.detail"),
        ))
    return out


def _truncations(v: Any, L: int, N: int) -> list[TruncationRun]:
    runs = []
    for i, t in enumerate(_list(v, "truncations")):
        name = f"truncations[{i}]"
        if not isinstance(t, dict):
            raise _bad(name, "an object", t)
        strategy = _str(_field(t, "strategy", f"{name}.strategy"), f"{name}.strategy")
        if strategy not in ("all", "top", "random"):
            raise _bad(f"{name}.strategy", "all, top or random", strategy)
        keep = _opt_int(t.get("keep"), f"{name}.keep", 0, N)
        if strategy != "all" and keep is None:
            raise _bad(f"{name}.keep", f"the image tokens kept by {strategy}", None)
        ids = _list(_field(t, "answer_token_ids", f"{name}.answer_token_ids"),
                    f"{name}.answer_token_ids")
        runs.append(TruncationRun(
            layer=_int(_field(t, "layer", f"{name}.layer"), f"{name}.layer", 0, L),
            strategy=strategy,
            keep=keep,
            seed=_opt_int(t.get("seed"), f"{name}.seed"),
            answer=_str(_field(t, "answer", f"{name}.answer"), f"{name}.answer"),
            answer_token_ids=[_int(x, f"{name}.answer_token_ids[{j}]", 0)
                              for j, x in enumerate(ids)],
            baseline_logprob=_float(_field(t, "baseline_logprob", f"{name}.baseline_logprob"),
                                    f"{name}.baseline_logprob"),
            same=_bool(_field(t, "same", f"{name}.same"), f"{name}.same"),
            seconds=_float(t.get("seconds", 0.0), f"{name}.seconds", 0.0),
        ))
    return runs


def _cam_settings(v: Any) -> CamSettings:
    if not isinstance(v, dict):
        raise _bad("cam", "an object", v)
    c = CamSettings()
    return CamSettings(
        site=_str(v.get("site", c.site), "cam.site"),
        target=_str(v.get("target", c.target), "cam.target"),
        threshold=_float(v.get("threshold", c.threshold), "cam.threshold", 0.0, 1.0),
        computed=_bool(v.get("computed", c.computed), "cam.computed"),
    )


def _model(v: Any) -> ModelInfo:
    if not isinstance(v, dict):
        raise _bad("model", "an object", v)
    return ModelInfo(
        name=_str(_field(v, "name", "model.name"), "model.name"),
        family=_str(_field(v, "family", "model.family"), "model.family"),
        num_layers=_int(_field(v, "num_layers", "model.num_layers"), "model.num_layers", 1),
        num_heads=_int(_field(v, "num_heads", "model.num_heads"), "model.num_heads", 1),
        dtype=_str(_field(v, "dtype", "model.dtype"), "model.dtype"),
        device=_str(_field(v, "device", "model.device"), "model.device"),
    )


def _tokens_v1(m: dict, arrays: dict[str, np.ndarray], image: np.ndarray, L: int) -> dict:
    """Version 1 stored one grid `cam` [L, rows, cols] over `image_box`: make it per token."""
    cam = arrays.get("cam")
    if cam is None:
        raise SnapshotError("array 'cam' is missing")
    if cam.ndim != 3 or cam.shape[0] != L or 0 in cam.shape:
        raise SnapshotError(f"array 'cam' has shape {list(cam.shape)}, expected "
                            f"[L={L}, rows, cols]")
    _, rows, cols = cam.shape
    cam = _floats(arrays, "cam", [("L", L), ("rows", rows), ("cols", cols)], 0.0, 1.0)
    h, w = image.shape[:2]
    box = m.get("image_box")
    if box is None:
        box = [0, 0, w, h]
    elif (not isinstance(box, list) or len(box) != 4 or not all(_is_int(x) for x in box)
          or not (0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h)):
        raise _bad("image_box", f"[x0, y0, x1, y1] inside the {w}x{h} image", box)
    return {
        "cam_tokens": cam.reshape(L, rows * cols),
        "token_regions": grid_regions(rows, cols, tuple(box)),
        "token_views": np.zeros(rows * cols, dtype=np.int16),
        "views": ["image"],
        "image_grid": (rows, cols),
        "image_box": tuple(int(x) for x in box) if m.get("image_box") is not None else None,
    }


def _tokens_v2(m: dict, arrays: dict[str, np.ndarray], L: int) -> dict:
    raw = arrays["cam_tokens"]
    if not isinstance(raw, np.ndarray) or raw.ndim != 2 or raw.shape[0] != L or raw.shape[1] < 1:
        shape = list(getattr(raw, "shape", []))
        raise SnapshotError(f"array 'cam_tokens' has shape {shape}, expected [L={L}, N >= 1]")
    N = raw.shape[1]
    cam = _floats(arrays, "cam_tokens", [("L", L), ("N", N)], 0.0, 1.0)
    regions = _array(arrays, "token_regions", [("N", N), ("4", 4)], "fiu").astype(np.float32)
    finite = np.isfinite(regions)
    none = np.isnan(regions).all(axis=1)
    if not (finite.all(axis=1) | none).all():
        raise SnapshotError("array 'token_regions' has rows that are neither four finite "
                            "numbers nor all NaN (no region)")
    r = regions[~none]
    if ((r[:, 2] < r[:, 0]) | (r[:, 3] < r[:, 1])).any():
        raise SnapshotError("array 'token_regions' has regions with x1 < x0 or y1 < y0")
    views = m.get("views") or ["image"]
    views = _strings(views, "views")
    token_views = _array(arrays, "token_views", [("N", N)], "iu")
    if N and (token_views.min() < 0 or token_views.max() >= len(views)):
        raise SnapshotError(f"array 'token_views' must index the {len(views)} views "
                            f"(0..{len(views) - 1})")
    grid = m.get("image_grid")
    if grid is not None:
        if (not isinstance(grid, list) or len(grid) != 2
                or not all(_is_int(x) and x >= 1 for x in grid)):
            raise _bad("image_grid", "[rows, cols] or null", grid)
        if grid[0] * grid[1] != N or len(views) != 1:
            raise _bad("image_grid", f"rows x cols = the {N} image tokens of one view", grid)
    return {
        "cam_tokens": cam,
        "token_regions": regions,
        "token_views": token_views.astype(np.int16),
        "views": views,
        "image_grid": None if grid is None else (int(grid[0]), int(grid[1])),
        "image_box": None,
    }


def decode_analysis(m: dict, arrays: dict[str, np.ndarray], image: np.ndarray) -> Analysis:
    """The Analysis a manifest + arrays + RGB image encode (the one decoder: snapshots and the
    remote protocol). Every field and array is checked (types, shapes consistent with each
    other and with the layer, head, token and feature counts, finite values, group spans
    covering the sequence); raises SnapshotError naming the field on bad input."""
    if not isinstance(m, dict):
        raise SnapshotError("the manifest is not a JSON object")
    for name, value in arrays.items():
        if getattr(getattr(value, "dtype", None), "hasobject", False):
            raise SnapshotError(f"array {name!r} holds pickled data; refusing to load it")
    image = _image(image)
    model = _model(_field(m, "model"))
    L, H = model.num_layers, model.num_heads
    ids = _list(_field(m, "answer_token_ids"), "answer_token_ids")
    T = len(ids)
    if T < 1:
        raise _bad("answer_token_ids", "a non-empty list (the answer)", ids)
    answer_ids = [_int(x, f"answer_token_ids[{i}]", 0) for i, x in enumerate(ids)]
    # A tokenizer may name no token for an id past its vocabulary: null, shown as "".
    tokens = ["" if t is None else _str(t, f"tokens[{i}]")
              for i, t in enumerate(_list(_field(m, "tokens"), "tokens"))]
    S = len(tokens)
    if S <= T:
        raise _bad("tokens", f"the prompt and the {T} answer tokens", f"{S} tokens")
    groups = _groups(_field(m, "groups"), S, T)
    shares = _floats(arrays, "shares", [("L", L), ("4", 4)], 0.0, 1.0)
    head_shares = _floats(arrays, "head_shares", [("L", L), ("H", H), ("4", 4)], 0.0, 1.0)
    answer_logprobs = _floats(arrays, "answer_logprobs", [("T", T)])
    if "cam_tokens" in arrays:
        tokens_part = _tokens_v2(m, arrays, L)
    else:
        tokens_part = _tokens_v1(m, arrays, image, L)
    N = tokens_part["cam_tokens"].shape[1]
    feats = _array(arrays, "feature_positions", [("N", N)], "iu", required=False)
    if feats is not None:
        feats = feats.astype(np.int64)
        in_image = np.zeros(S, dtype=bool)
        for s, e in groups["image"]:
            in_image[s:e] = True
        if (N and (feats.min() < 0 or feats.max() >= S or not in_image[feats].all())
                or (np.diff(feats) <= 0).any()):
            raise SnapshotError("array 'feature_positions' must be increasing positions inside "
                                "the image group")
    sweep_logprob = _floats(arrays, "sweep_logprob", [("L+1", L + 1)], required=False)
    sweep_same = _array(arrays, "sweep_same", [("L+1", L + 1)], "b", required=False)
    if (sweep_logprob is None) != (sweep_same is None):
        raise SnapshotError("arrays 'sweep_logprob' and 'sweep_same' come together (a sweep)")
    sweep_answers = m.get("sweep_answers")
    if sweep_answers is not None:
        sweep_answers = _strings(sweep_answers, "sweep_answers")
        if sweep_same is None or len(sweep_answers) != L + 1:
            raise _bad("sweep_answers", f"the {L + 1} answers of a sweep", sweep_answers)
    cliff = _opt_int(m.get("cliff_layer"), "cliff_layer", 0, L)
    if sweep_same is not None and cliff != cliff_layer(sweep_same):
        raise _bad("cliff_layer", f"the sweep's cliff layer ({cliff_layer(sweep_same)})", cliff)
    max_new_tokens = _int(m.get("max_new_tokens", T), "max_new_tokens", T, 1 << 20)
    return Analysis(
        model=model,
        question=_str(_field(m, "question"), "question"),
        prompt=_str(_field(m, "prompt"), "prompt"),
        answer=_str(_field(m, "answer"), "answer"),
        answer_token_ids=answer_ids,
        tokens=tokens,
        groups=groups,
        image=np.array(image),
        shares=shares,
        head_shares=head_shares,
        answer_logprobs=answer_logprobs,
        feature_positions=feats,
        image_attention=_floats(arrays, "image_attention", [("L", L), ("N", N)], 0.0, 1.0,
                                required=False),
        attention_tokens=_floats(arrays, "attention_tokens", [("L", L), ("N", N)], 0.0, 1.0,
                                 required=False),
        cam_settings=_cam_settings(m.get("cam", {})),
        truncations=_truncations(m.get("truncations", []), L, N),
        sweep_logprob=sweep_logprob,
        sweep_same=sweep_same,
        sweep_answers=sweep_answers,
        cliff_layer=cliff,
        created=_str(m.get("created", ""), "created"),
        flowtui_version=_str(m.get("flowtui_version", ""), "flowtui_version"),
        ended_with_eos=_bool(m.get("ended_with_eos", True), "ended_with_eos"),
        max_new_tokens=max_new_tokens,
        notes=_strings(m.get("notes", []), "notes"),
        checks=_checks(m.get("checks", [])),
        **tokens_part,
    )
