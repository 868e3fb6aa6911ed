"""The `.flowtui` snapshot format (DESIGN.md): a zip of manifest.json, arrays.npz, image.png.

Written atomically (temporary file in the same folder, then rename) and read with no pickle.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from flowtui.engine.analysis import Analysis, CamSettings, ModelInfo, TruncationRun, grid_regions
from flowtui.engine.errors import SnapshotError

FORMAT = "flowtui.snapshot"
VERSION = 2


def _manifest(a: Analysis) -> dict:
    from flowtui import __version__

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


def save_snapshot(a: Analysis, path: str | Path, screen_svg: str | None = None) -> Path:
    """Write `a` to `path` atomically. Raises SnapshotError with a one-line reason."""
    path = Path(path)
    if path.is_dir():
        raise SnapshotError(f"cannot write snapshot: {path} is a directory")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise SnapshotError(f"cannot write snapshot: folder {folder} does not exist")
    buf = io.BytesIO()
    np.savez_compressed(buf, **_arrays(a))
    png = io.BytesIO()
    Image.fromarray(np.asarray(a.image, dtype=np.uint8)).convert("RGB").save(png, format="PNG")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("manifest.json", json.dumps(_manifest(a), indent=1))
            zf.writestr("arrays.npz", buf.getvalue())
            zf.writestr("image.png", png.getvalue())
            if screen_svg is not None:
                zf.writestr("screen.svg", screen_svg)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise SnapshotError(f"cannot write snapshot {path}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _load_npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def load_snapshot(path: str | Path) -> Analysis:
    """Read a `.flowtui` snapshot. Raises SnapshotError with a one-line reason on any problem."""
    path = Path(path)
    if not path.exists():
        raise SnapshotError(f"snapshot not found: {path}")
    if path.is_dir():
        raise SnapshotError(f"{path} is a directory, not a snapshot")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            missing = {"manifest.json", "arrays.npz", "image.png"} - names
            if missing:
                raise SnapshotError(f"{path} is not a flowtui snapshot (missing {sorted(missing)[0]})")
            m = json.loads(zf.read("manifest.json"))
            if not isinstance(m, dict) or m.get("format") != FORMAT:
                raise SnapshotError(f"{path} is not a flowtui snapshot")
            version = m.get("version")
            if not isinstance(version, int):
                raise SnapshotError(f"{path}: snapshot version is missing")
            if version > VERSION:
                raise SnapshotError(
                    f"{path} was written by a newer flowtui (snapshot version {version}, this "
                    f"flowtui reads up to {VERSION}); upgrade flowtui to open it"
                )
            arrays = _load_npz(zf.read("arrays.npz"))
            image = np.asarray(Image.open(io.BytesIO(zf.read("image.png"))).convert("RGB"))
        return _analysis_from(m, arrays, image)
    except SnapshotError:
        raise
    except zipfile.BadZipFile:
        raise SnapshotError(f"{path} is corrupt or truncated (not a valid zip file)") from None
    except ValueError as exc:
        # np.load(allow_pickle=False) refuses object arrays with a ValueError.
        if "pickle" in str(exc).lower():
            raise SnapshotError(f"{path} holds pickled data; refusing to load it") from None
        raise SnapshotError(f"{path} is corrupt: {exc}") from None
    except (KeyError, TypeError, OSError, EOFError, json.JSONDecodeError, zipfile.LargeZipFile) as exc:
        raise SnapshotError(f"{path} is corrupt: {type(exc).__name__}: {exc}") from None


def _tokens_v1(m: dict, arrays: dict[str, np.ndarray], image: np.ndarray) -> dict:
    """Version 1 stored one grid `cam` [L, rows, cols] over `image_box`: make it per token."""
    if "cam" not in arrays:
        raise SnapshotError("snapshot is missing the array 'cam'")
    cam = arrays["cam"]
    if cam.ndim != 3:
        raise SnapshotError(f"snapshot array 'cam' has shape {cam.shape}, expected [L, rows, cols]")
    L, rows, cols = cam.shape
    h, w = image.shape[:2]
    box = tuple(int(v) for v in m["image_box"]) if m.get("image_box") else (0, 0, w, h)
    return {
        "cam_tokens": cam.reshape(L, rows * cols),
        "token_regions": grid_regions(rows, cols, box),
        "token_views": np.zeros(rows * cols, dtype=np.int16),
        "views": ["image"],
        "image_grid": (rows, cols),
    }


def _analysis_from(m: dict, arrays: dict[str, np.ndarray], image: np.ndarray) -> Analysis:
    for value in arrays.values():
        if value.dtype == object:
            raise SnapshotError("snapshot holds pickled data; refusing to load it")
    for key in ("shares", "head_shares", "answer_logprobs"):
        if key not in arrays:
            raise SnapshotError(f"snapshot is missing the array {key!r}")
    if "cam_tokens" in arrays:
        for key in ("token_regions", "token_views"):
            if key not in arrays:
                raise SnapshotError(f"snapshot is missing the array {key!r}")
        grid = m.get("image_grid")
        tokens = {
            "cam_tokens": arrays["cam_tokens"],
            "token_regions": arrays["token_regions"],
            "token_views": arrays["token_views"].astype(np.int16),
            "views": [str(v) for v in m.get("views") or ["image"]],
            "image_grid": (int(grid[0]), int(grid[1])) if grid else None,
        }
    else:
        tokens = _tokens_v1(m, arrays, image)
    feats = arrays.get("feature_positions")
    known_run = set(TruncationRun.__dataclass_fields__)
    known_cam = set(CamSettings.__dataclass_fields__)
    known_model = set(ModelInfo.__dataclass_fields__)
    return Analysis(
        model=ModelInfo(**{k: v for k, v in m["model"].items() if k in known_model}),
        question=str(m["question"]),
        prompt=str(m["prompt"]),
        answer=str(m["answer"]),
        answer_token_ids=[int(t) for t in m["answer_token_ids"]],
        tokens=[str(t) for t in m["tokens"]],
        groups={g: [(int(s), int(e)) for s, e in spans] for g, spans in m["groups"].items()},
        image=image,
        image_box=tuple(int(v) for v in m["image_box"]) if m.get("image_box") else None,
        shares=arrays["shares"],
        head_shares=arrays["head_shares"],
        answer_logprobs=arrays["answer_logprobs"],
        feature_positions=None if feats is None else feats.astype(np.int64),
        image_attention=arrays.get("image_attention"),
        attention_tokens=arrays.get("attention_tokens"),
        cam_settings=CamSettings(**{k: v for k, v in m.get("cam", {}).items() if k in known_cam}),
        truncations=[
            TruncationRun(**{k: v for k, v in t.items() if k in known_run})
            for t in m.get("truncations", [])
        ],
        sweep_logprob=arrays.get("sweep_logprob"),
        sweep_same=arrays.get("sweep_same"),
        sweep_answers=m.get("sweep_answers"),
        cliff_layer=m.get("cliff_layer"),
        created=str(m.get("created", "")),
        flowtui_version=str(m.get("flowtui_version", "")),
        ended_with_eos=bool(m.get("ended_with_eos", True)),
        max_new_tokens=int(m.get("max_new_tokens", len(m["answer_token_ids"]))),
        notes=[str(n) for n in m.get("notes", [])],
        **tokens,
    )
