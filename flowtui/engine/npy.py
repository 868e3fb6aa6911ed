""".npy bytes to an array without trusting them: the one parser for snapshots and the remote
protocol.

`np.load` allocates the shape a header declares before reading the data, and an object dtype
means pickle; here the header is parsed first, only booleans and numbers pass, and the declared
shape must match the bytes that are really there.
"""

from __future__ import annotations

import io
import math

import numpy as np

from flowtui.engine.errors import first_line

# .npy dtypes accepted: booleans and numbers. Object arrays would mean pickle.
DTYPE_KINDS = "biuf"


class NpyError(ValueError):
    """Bytes that are not a safe .npy array; the message names the array and says why."""


def read_npy(data: bytes | bytearray | memoryview, name: str = "array") -> np.ndarray:
    """One .npy file to an array (a read-only view of `data`). Raises NpyError."""
    view = memoryview(data)
    head = io.BytesIO(view[: 65536 + 16].tobytes())
    try:
        version = np.lib.format.read_magic(head)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(head)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(head)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, EOFError, SyntaxError, TypeError) as exc:
        raise NpyError(f"{name} is not a valid .npy array: {first_line(exc)}") from None
    if dtype.hasobject:
        raise NpyError(f"{name} holds pickled objects; refusing it (arrays only)")
    if dtype.kind not in DTYPE_KINDS:
        raise NpyError(f"{name} has dtype {dtype}; only booleans and numbers are accepted")
    count = math.prod(shape)
    offset = head.tell()
    if len(view) - offset != count * dtype.itemsize:
        raise NpyError(
            f"{name} is truncated or padded: shape {shape} needs {count * dtype.itemsize} bytes, "
            f"got {len(view) - offset}"
        )
    arr = np.frombuffer(view, dtype=dtype, count=count, offset=offset)
    return arr.reshape(shape, order="F" if fortran else "C")


