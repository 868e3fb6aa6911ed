"""The logit lens in a snapshot or a remote reply (README, "Snapshot format", version 3): the
manifest's `lens` entry and the arrays `lens_top_ids` [L, N, 5], `lens_top_probs` [L, N, 5]
and `lens_word_prob` [L, N], N in `cam_tokens` order. All optional: older snapshots have none.
"""

from __future__ import annotations

import numpy as np

from flowtui.engine import validate as v
from flowtui.engine.analysis import Lens
from flowtui.engine.errors import SnapshotError

ARRAYS = ("lens_top_ids", "lens_top_probs", "lens_word_prob")


def encode_lens(lens: Lens) -> tuple[dict, dict[str, np.ndarray]]:
    """The manifest entry (JSON-ready: ids as string keys) and the arrays of `lens`."""
    meta = {
        "word": lens.word,
        "word_token_id": int(lens.word_id),
        "k": int(lens.top_ids.shape[-1]),
        "strings": {str(int(k)): str(s) for k, s in sorted(lens.strings.items())},
    }
    arrays = {
        "lens_top_ids": np.asarray(lens.top_ids, dtype=np.int32),
        "lens_top_probs": np.asarray(lens.top_probs, dtype=np.float32),
        "lens_word_prob": np.asarray(lens.word_prob, dtype=np.float32),
    }
    return meta, arrays


def decode_lens(meta: object, arrays: dict[str, np.ndarray], L: int, N: int) -> Lens | None:
    """The Lens a manifest entry and its arrays encode, checked; None where there is none.
    Raises SnapshotError naming the field on bad input."""
    present = [name for name in ARRAYS if name in arrays]
    if meta is None and not present:
        return None
    if meta is None or len(present) != len(ARRAYS):
        raise SnapshotError("the lens needs the manifest's 'lens' and all of "
                            f"{', '.join(ARRAYS)} together")
    if not isinstance(meta, dict):
        raise v.bad("lens", "an object", meta)
    k = v.integer(v.field(meta, "k", "lens.k"), "lens.k", 1, 100)
    ids = v.array(arrays, "lens_top_ids", [("L", L), ("N", N), ("k", k)], "iu")
    if ids.size and ids.min() < 0:
        raise SnapshotError("array 'lens_top_ids' holds a negative token id")
    probs = v.floats(arrays, "lens_top_probs", [("L", L), ("N", N), ("k", k)], 0.0, 1.0)
    word = v.floats(arrays, "lens_word_prob", [("L", L), ("N", N)], 0.0, 1.0)
    raw = v.field(meta, "strings", "lens.strings")
    if not isinstance(raw, dict):
        raise v.bad("lens.strings", "an object of token id -> text", raw)
    strings = {}
    for key, text in raw.items():
        if not (isinstance(key, str) and key.isdigit()):
            raise v.bad("lens.strings", "token ids as keys", key)
        strings[int(key)] = v.string(text, f"lens.strings[{key}]")
    return Lens(
        word=v.string(v.field(meta, "word", "lens.word"), "lens.word"),
        word_id=v.integer(v.field(meta, "word_token_id", "lens.word_token_id"),
                          "lens.word_token_id", 0),
        top_ids=ids.astype(np.int32),
        top_probs=probs.astype(np.float32),
        word_prob=word.astype(np.float32),
        strings=strings,
    )
