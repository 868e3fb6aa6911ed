"""The remote engine's wire protocol: frames of one JSON header and .npy arrays on a byte stream.

A frame (integers big-endian):

    magic     4 bytes   b"FTUI" (lets a reader skip junk and find the next frame)
    H         uint32    length of the JSON header
    B         uint32    number of binary parts
    lengths   B uint64  length of each part
    header    H bytes   UTF-8 JSON object; its "parts" lists the B part names in order
    parts               the parts back to back, each one .npy file (never pickle)

docs/remote.md describes the messages. Nothing here imports torch, Textual or Rich; lengths are
checked against `Limits` before anything is read or allocated for them.
"""

from __future__ import annotations

import io
import json
import struct
import threading
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

import numpy as np

from flowtui.engine import knockout_codec
from flowtui.engine.analysis import Analysis, ModelInfo, Progress, Sweep, TruncationRun
from flowtui.engine.codec import decode_analysis, encode_analysis
from flowtui.engine.errors import RemoteError, first_line
from flowtui.engine.knockout_flows import KnockoutResult
from flowtui.engine.npy import DTYPE_KINDS, NpyError, read_npy

MAGIC = b"FTUI"
# Bumped on any incompatible change; both sides refuse a different one in the handshake.
PROTOCOL = 1
_PREFIX = struct.Struct(">4sII")
_LENGTH = struct.Struct(">Q")
_READ_CHUNK = 1 << 20

MESSAGE_TYPES = ("hello", "request", "cancel", "progress", "token", "result", "error")
# Error kinds, one per way a call can fail (docs/remote.md).
ERROR_KINDS = ("version", "protocol", "method", "input", "model", "snapshot", "cancelled",
               "unknown_analysis", "oom", "flowtui", "internal")


@dataclass(frozen=True)
class Limits:
    """The largest frame a reader accepts. A length above these is refused unread."""

    header: int = 16 << 20
    parts: int = 64
    part: int = 1 << 30
    frame: int = 1 << 30


LIMITS = Limits()


class ProtocolError(RemoteError):
    """A message broke the protocol. `id` is the request it belongs to, when known."""

    def __init__(self, message: str, id: int | None = None, kind: str = "protocol") -> None:
        super().__init__(message)
        self.id = id
        self.kind = kind


class FrameError(ProtocolError):
    """The byte stream was not a well-formed frame; the reader skips to the next frame start."""


class TruncatedFrame(ProtocolError):
    """The stream ended inside a frame."""


@dataclass
class Frame:
    header: dict[str, Any]
    parts: dict[str, np.ndarray]

    @property
    def type(self) -> str | None:
        t = self.header.get("type")
        return t if isinstance(t, str) else None

    @property
    def id(self) -> int | None:
        return request_id(self.header.get("id"))


def request_id(value: Any) -> int | None:
    """A valid request id (a JSON-safe non-negative integer), or None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53:
        return value
    return None


# --- arrays ------------------------------------------------------------------------------------
def encode_array(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr)
    if arr.dtype.hasobject or arr.dtype.kind not in DTYPE_KINDS:
        raise ValueError(f"cannot send an array of dtype {arr.dtype}")
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def decode_array(data: bytes | bytearray | memoryview, name: str = "part") -> np.ndarray:
    """One .npy file to an array (flowtui.engine.npy: the header is parsed first, the shape must
    match the bytes, and only boolean and numeric dtypes pass; an object array is refused)."""
    try:
        return read_npy(data, name)
    except NpyError as exc:
        raise ProtocolError(str(exc)) from None


# --- frames ------------------------------------------------------------------------------------
class FrameReader:
    """Reads frames from a binary stream; after a bad frame, the next read resynchronises on the
    next magic, so one garbled message does not end the session."""

    def __init__(self, stream: BinaryIO, limits: Limits = LIMITS) -> None:
        self._stream = stream
        self._read = getattr(stream, "read1", stream.read)
        self.limits = limits
        self._buf = bytearray()
        self._syncing = False
        self.skipped = bytearray()  # junk skipped before the first frame (capped), for messages

    def _fill(self, n: int) -> bool:
        """At least n bytes buffered; False at end of stream."""
        while len(self._buf) < n:
            chunk = self._read(min(max(n - len(self._buf), 1 << 16), _READ_CHUNK))
            if not chunk:
                return False
            self._buf += chunk
        return True

    def _skip_to_magic(self, start: int) -> tuple[bool, int]:
        """Drop buffered bytes before the next magic at or after `start`: (found, dropped).
        Only what is already buffered is searched, so an error goes out without waiting."""
        i = self._buf.find(MAGIC, start)
        cut = i if i >= 0 else max(start, len(self._buf) - len(MAGIC) + 1)
        if len(self.skipped) < 4096:
            self.skipped += self._buf[: min(cut, 4096 - len(self.skipped))]
        del self._buf[:cut]
        return i >= 0, cut

    def _resync(self, message: str) -> FrameError:
        found, _ = self._skip_to_magic(1)
        self._syncing = not found
        return FrameError(message)

    def read(self) -> Frame | None:
        """The next frame; None at a clean end of stream. Raises FrameError (the stream is
        resynchronised), TruncatedFrame (it ended mid-frame) or ProtocolError (a well-framed
        message with a bad part)."""
        while self._syncing:
            if not self._fill(len(self._buf) + 1):
                return None
            found, _ = self._skip_to_magic(0)
            self._syncing = not found
        if not self._fill(1):
            return None
        if not self._fill(len(MAGIC)):
            raise TruncatedFrame(f"stream ended inside a frame ({len(self._buf)} bytes)")
        if self._buf[: len(MAGIC)] != MAGIC:
            found, dropped = self._skip_to_magic(1)
            self._syncing = not found
            raise FrameError(f"not a flowtui frame: skipped {dropped} bytes of other data")
        lim = self.limits
        if not self._fill(_PREFIX.size):
            raise TruncatedFrame(f"stream ended inside a frame header ({len(self._buf)} bytes)")
        _, hlen, nparts = _PREFIX.unpack_from(self._buf)
        if hlen > lim.header or hlen == 0:
            raise self._resync(f"frame header length {hlen} is outside 1..{lim.header}; refused")
        if nparts > lim.parts:
            raise self._resync(f"frame has {nparts} parts, more than {lim.parts}; refused")
        lengths_end = _PREFIX.size + nparts * _LENGTH.size
        if not self._fill(lengths_end):
            raise TruncatedFrame("stream ended inside a frame header")
        lengths = [_LENGTH.unpack_from(self._buf, _PREFIX.size + i * _LENGTH.size)[0]
                   for i in range(nparts)]
        if any(n > lim.part for n in lengths) or sum(lengths) + hlen > lim.frame:
            raise self._resync(
                f"frame of {sum(lengths) + hlen} bytes (largest part {max(lengths, default=0)}) "
                f"is over the limit of {lim.frame} bytes ({lim.part} per part); refused"
            )
        total = lengths_end + hlen + sum(lengths)
        if not self._fill(total):
            raise TruncatedFrame(f"stream ended inside a frame ({len(self._buf)} of {total} bytes)")
        try:
            header = json.loads(bytes(self._buf[lengths_end:lengths_end + hlen]).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            # RecursionError: JSON nested deeper than Python's stack (a hostile header).
            raise self._resync(f"frame header is not UTF-8 JSON: {first_line(exc)}") from None
        if len(self._buf) == total:  # the usual case: no copy of a large frame
            data, self._buf = self._buf, bytearray()
        else:
            data = self._buf[:total]
            del self._buf[:total]
        if not isinstance(header, dict):
            raise ProtocolError("frame header is not a JSON object")
        return Frame(header, self._parts(header, data, lengths_end + hlen, lengths))

    @staticmethod
    def _parts(header: dict, data: bytearray, offset: int, lengths: list[int]) -> dict:
        rid = request_id(header.get("id"))
        names = header.get("parts", [])
        if (not isinstance(names, list) or len(names) != len(lengths)
                or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names)):
            raise ProtocolError(
                f"frame header 'parts' must name its {len(lengths)} parts uniquely", rid
            )
        parts = {}
        view = memoryview(data)
        for name, n in zip(names, lengths, strict=True):
            try:
                parts[name] = decode_array(view[offset:offset + n], f"part {name!r}")
            except ProtocolError as exc:
                exc.id = rid
                raise
            offset += n
        return parts


class FrameWriter:
    """Writes whole frames; safe to share between threads."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, header: dict[str, Any], parts: dict[str, np.ndarray] | None = None) -> None:
        names = list(parts or {})
        blobs = [encode_array(parts[n]) for n in names]  # type: ignore[index]
        if names:
            header = {**header, "parts": names}
        body = json.dumps(header, separators=(",", ":")).encode("utf-8")
        prefix = _PREFIX.pack(MAGIC, len(body), len(blobs)) + b"".join(
            _LENGTH.pack(len(b)) for b in blobs
        )
        with self._lock:
            self._stream.write(prefix + body)
            for blob in blobs:
                self._stream.write(blob)
            self._stream.flush()


# --- parameters ----------------------------------------------------------------------------------
_REQUIRED = object()


def param(params: dict, name: str, kinds: tuple[type, ...], default: Any = _REQUIRED,
          rid: int | None = None) -> Any:
    """params[name] checked against `kinds` (bool is never an int here)."""
    if name not in params:
        if default is _REQUIRED:
            raise ProtocolError(f"missing parameter {name!r}", rid, "input")
        return default
    value = params[name]
    ok = isinstance(value, kinds) and not (
        isinstance(value, bool) and bool not in kinds and int in kinds
    )
    if not ok:
        want = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise ProtocolError(
            f"parameter {name!r} must be {want}, got {type(value).__name__}", rid, "input"
        )
    return value


def image_part(parts: dict[str, np.ndarray], rid: int | None = None) -> np.ndarray:
    img = parts.get("image")
    if img is None:
        raise ProtocolError("missing the 'image' part", rid, "input")
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or 0 in img.shape:
        raise ProtocolError(
            f"'image' must be uint8 [H, W, 3], got {img.dtype} {list(img.shape)}", rid, "input"
        )
    return img


# --- engine objects <-> messages ------------------------------------------------------------------
def progress_to(p: Progress) -> dict:
    return {"stage": p.stage, "done": int(p.done), "total": int(p.total), "message": p.message}


def progress_from(d: dict) -> Progress:
    return Progress(str(d.get("stage", "")), int(d.get("done", 0)), int(d.get("total", 0)),
                    str(d.get("message", "")))


def info_from(d: dict) -> ModelInfo:
    known = set(ModelInfo.__dataclass_fields__)
    return ModelInfo(**{k: v for k, v in d.items() if k in known})


def run_to(run: TruncationRun) -> dict:
    return asdict(run)


def run_from(d: dict) -> TruncationRun:
    known = set(TruncationRun.__dataclass_fields__)
    return TruncationRun(**{k: v for k, v in d.items() if k in known})


def sweep_to(s: Sweep) -> tuple[dict, dict[str, np.ndarray]]:
    meta = {"answers": list(s.answers), "cliff_layer": s.cliff_layer, "seconds": s.seconds,
            "strategy": s.strategy, "keep": s.keep, "seed": s.seed}
    return meta, {"logprob": np.asarray(s.logprob), "same": np.asarray(s.same)}


def sweep_from(meta: dict, parts: dict[str, np.ndarray]) -> Sweep:
    return Sweep(logprob=parts["logprob"], same=parts["same"], answers=list(meta["answers"]),
                 cliff_layer=meta["cliff_layer"], seconds=float(meta["seconds"]),
                 strategy=meta["strategy"], keep=meta["keep"], seed=meta["seed"])


def knockout_to(k: KnockoutResult) -> tuple[dict, dict[str, np.ndarray]]:
    meta, arrays = knockout_codec.encode(k)
    return meta or {}, arrays


def knockout_from(meta: dict, parts: dict[str, np.ndarray], num_layers: int) -> KnockoutResult:
    k = knockout_codec.decode({"knockout": meta}, parts, num_layers)
    assert k is not None
    return k


def analysis_to(a: Analysis, with_image: bool) -> tuple[dict, dict[str, np.ndarray]]:
    """The snapshot encoding (one place for both), minus the derived grid `cam`; the image as a
    uint8 part where the other side does not already hold it."""
    manifest, arrays = encode_analysis(a)
    arrays.pop("cam", None)
    if with_image:
        arrays["image"] = np.asarray(a.image, dtype=np.uint8)
    return manifest, arrays


def analysis_from(manifest: Any, parts: dict[str, np.ndarray], image: np.ndarray,
                  rid: int | None = None) -> Analysis:
    if not isinstance(manifest, dict):
        raise ProtocolError("the analysis must be a JSON object", rid, "input")
    arrays = {k: v for k, v in parts.items() if k != "image"}
    try:
        return decode_analysis(manifest, arrays, image)
    except (KeyError, TypeError, ValueError, IndexError, RemoteError) as exc:
        raise ProtocolError(f"bad analysis: {type(exc).__name__}: {first_line(exc)}", rid,
                            "input") from None
    except Exception as exc:  # SnapshotError and kin: already one line
        raise ProtocolError(f"bad analysis: {first_line(exc)}", rid, "input") from None
