"""The snapshot encoding of a knockout (README, "Snapshot format", version 3): the manifest's
`knockout` (flows, window or layers, baseline_first_prob, greedy answers where run) and the
arrays knockout_first_prob, knockout_rel_change, knockout_logprob, each [F, L] for a sweep of
windows or [F, 1] for one layer range. Older snapshots have neither: no knockout.
"""

from __future__ import annotations

import numpy as np

from flowtui.engine import validate as v
from flowtui.engine.errors import SnapshotError
from flowtui.engine.knockout_flows import KnockoutResult, parse_flows

ARRAY_NAMES = ("knockout_first_prob", "knockout_rel_change", "knockout_logprob")


def encode(k: KnockoutResult | None) -> tuple[dict | None, dict[str, np.ndarray]]:
    if k is None:
        return None, {}
    meta: dict = {"flows": list(k.flows), "baseline_first_prob": float(k.baseline_first_prob),
                  "seconds": float(k.seconds)}
    if k.layers is not None:
        meta["layers"] = [int(k.layers[0]), int(k.layers[1])]
    else:
        meta["window"] = int(k.window)  # type: ignore[arg-type]
    if k.answers is not None:
        meta["answers"] = [list(row) for row in k.answers]
    arrays = {"knockout_first_prob": np.asarray(k.first_prob, dtype=np.float32),
              "knockout_rel_change": np.asarray(k.rel_change, dtype=np.float32),
              "knockout_logprob": np.asarray(k.logprob, dtype=np.float32)}
    return meta, arrays


def decode(m: dict, arrays: dict[str, np.ndarray], L: int) -> KnockoutResult | None:
    """The knockout a manifest + arrays hold, checked; None where there is none."""
    meta = m.get("knockout")
    if meta is None:
        if any(n in arrays for n in ARRAY_NAMES):
            raise SnapshotError("knockout arrays without the manifest's 'knockout'")
        return None
    if not isinstance(meta, dict):
        raise v.bad("knockout", "an object", meta)
    names = v.strings(v.field(meta, "flows", "knockout.flows"), "knockout.flows")
    try:
        flows = [f.name for f in parse_flows(names)]
    except Exception as exc:  # an InputError: say where it came from
        raise SnapshotError(f"knockout.flows: {exc}") from None
    if ("window" in meta) == ("layers" in meta):
        raise SnapshotError("knockout holds one of 'window' and 'layers'")
    window = layers = None
    if "window" in meta:
        window = v.integer(meta["window"], "knockout.window", 1, L)
        W = L
    else:
        pair = v.list_of(meta["layers"], "knockout.layers")
        if len(pair) != 2:
            raise v.bad("knockout.layers", "[A, B]", pair)
        a = v.integer(pair[0], "knockout.layers[0]", 0, L - 1)
        layers = (a, v.integer(pair[1], "knockout.layers[1]", a + 1, L))
        W = 1
    F = len(flows)
    shape = [("F", F), ("L" if W == L else "1", W)]
    first = v.floats(arrays, "knockout_first_prob", shape, 0.0, 1.0)
    rel = v.floats(arrays, "knockout_rel_change", shape, -100.0)
    logprob = v.floats(arrays, "knockout_logprob", shape, hi=0.0)
    p0 = v.number(v.field(meta, "baseline_first_prob", "knockout.baseline_first_prob"),
                  "knockout.baseline_first_prob", 0.0, 1.0)
    answers = meta.get("answers")
    if answers is not None:
        rows = v.list_of(answers, "knockout.answers")
        if len(rows) != F:
            raise v.bad("knockout.answers", f"{F} rows", answers)
        answers = [v.strings(r, f"knockout.answers[{i}]") for i, r in enumerate(rows)]
        if any(len(r) != W for r in answers):
            raise v.bad("knockout.answers", f"{W} answers a row", answers)
    seconds = v.number(meta.get("seconds", 0.0), "knockout.seconds", 0.0)
    return KnockoutResult(flows=flows, first_prob=first, rel_change=rel, logprob=logprob,
                          baseline_first_prob=p0, window=window, layers=layers,
                          answers=answers, seconds=seconds)
