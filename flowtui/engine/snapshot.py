"""The `.flowtui` snapshot file (README, "Snapshot format"): a zip of manifest.json,
arrays.npz and image.png.

Written atomically through filesafe, never over a file that is not a snapshot, and read as
untrusted input: no pickle, every member's expanded size taken from a budget before it expands
(filesafe), every manifest field and array checked (codec.decode_analysis, with validate).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from flowtui.engine import knockout_codec
from flowtui.engine.analysis import (
    Analysis,
)
from flowtui.engine.codec import FORMAT, VERSION, decode_analysis, encode_analysis
from flowtui.engine.errors import SnapshotError, first_line
from flowtui.engine.filesafe import TMP_SUFFIX, Budget, WriteError, read_member, write_atomic
from flowtui.engine.images import open_bounded, regular_file, special_kind
from flowtui.engine.npy import NpyError, read_npy
from flowtui.engine.validate import is_int

__all__ = ["FORMAT", "TMP_SUFFIX", "VERSION", "check_target", "decode_analysis",
           "encode_analysis", "is_snapshot", "load_snapshot", "save_snapshot"]



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
                m = _manifest_of(zf, Budget(os.fstat(fh.fileno()).st_size))
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
    # numpy's stub types **kwds as its own keyword arguments (allow_pickle: bool)
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
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
MAX_MANIFEST = 16 << 20
# The arrays the format defines; anything else in arrays.npz (a future version's) is skipped
# unread.
ARRAY_NAMES = ("shares", "head_shares", "answer_logprobs", "cam_tokens", "token_regions",
               "token_views", "feature_positions", "cam", "image_attention", "attention_tokens",
               "token_shares", "token_head_shares", "token_attention", "token_cam",
               "sweep_logprob", "sweep_same", "lens_top_ids", "lens_top_probs",
               "lens_word_prob", *knockout_codec.ARRAY_NAMES)


def _manifest_of(zf: zipfile.ZipFile, budget: Budget) -> dict:
    try:
        m = json.loads(read_member(zf, "manifest.json", budget, MAX_MANIFEST))
    except RecursionError:  # JSON nested deeper than Python's stack: hostile
        raise SnapshotError("manifest.json is nested too deeply") from None
    if not isinstance(m, dict):
        raise SnapshotError("manifest.json is not a JSON object")
    return m


def _read_npz(data: bytes, budget: Budget) -> dict[str, np.ndarray]:
    """arrays.npz (a zip of .npy files, itself inside the snapshot's zip): the known arrays, each
    through the same size checks and the safe .npy parser; never np.load."""
    if not data.startswith(_ZIP_MAGIC):
        raise SnapshotError("arrays.npz is not an .npz archive")
    arrays = {}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for name in zf.namelist():
            key = name.removesuffix(".npy")
            if key in ARRAY_NAMES and key not in arrays:
                raw = read_member(zf, name, budget)
                try:
                    arrays[key] = read_npy(raw, f"array {key!r}")
                except NpyError as exc:  # its message names the array
                    raise SnapshotError(str(exc)) from None
    return arrays


def _read_image(data: bytes, budget: Budget) -> np.ndarray:
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
            budget = Budget(os.fstat(fh.fileno()).st_size)
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
                if not is_int(version) or version < 1:
                    raise _Whole(f"{path}: snapshot version is missing")
                if version > VERSION:
                    raise _Whole(
                        f"{path} was written by a newer flowtui (snapshot version {version}, "
                        f"this flowtui reads up to {VERSION}); upgrade flowtui to open it"
                    )
                arrays = _read_npz(read_member(zf, "arrays.npz", budget), budget)
                image = _read_image(read_member(zf, "image.png", budget), budget)
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
