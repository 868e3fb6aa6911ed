"""The one encoding of an Analysis as a JSON manifest plus named arrays (README, "Snapshot
format"): snapshots (flowtui.engine.snapshot) and the remote protocol (flowtui.remote) both use
it. Decoding checks every field and array (flowtui.engine.validate) before anything is built.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime

import numpy as np

from flowtui.engine import knockout_codec
from flowtui.engine import validate as v
from flowtui.engine.analysis import Analysis, cliff_layer
from flowtui.engine.errors import SnapshotError
from flowtui.engine.lens_codec import decode_lens, encode_lens
from flowtui.version import __version__

FORMAT = "flowtui.snapshot"
# 3: the logit lens (manifest `lens`, arrays lens_top_ids, lens_top_probs, lens_word_prob),
# the per-answer-token arrays (token_shares, token_head_shares, token_attention, token_cam) and
# attention knockout (knockout_codec.py).
VERSION = 3


def encode_analysis(a: Analysis) -> tuple[dict, dict[str, np.ndarray]]:
    """The manifest (JSON-ready) and the named arrays of `a`; the image is not included."""
    return _manifest(a), _arrays(a)


def _manifest(a: Analysis) -> dict:
    knockout, _ = knockout_codec.encode(a.knockout)
    manifest = {
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
        **({"lens": encode_lens(a.lens)[0]} if a.lens is not None else {}),
    }
    if knockout is not None:
        manifest["knockout"] = knockout
    return manifest


def _arrays(a: Analysis) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {
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
    if a.token_head_shares is not None:  # per answer token (version 3)
        arrays["token_head_shares"] = np.asarray(a.token_head_shares, dtype=np.float32)
        # The head mean too, for readers of arrays.npz without flowtui.
        arrays["token_shares"] = np.asarray(a.token_shares, dtype=np.float32)
    if a.token_attention is not None:
        arrays["token_attention"] = np.asarray(a.token_attention, dtype=np.float32)
    if a.token_cam is not None:
        arrays["token_cam"] = np.asarray(a.token_cam, dtype=np.float32)
    if a.sweep_logprob is not None:
        arrays["sweep_logprob"] = np.asarray(a.sweep_logprob, dtype=np.float32)
    if a.sweep_same is not None:
        arrays["sweep_same"] = np.asarray(a.sweep_same, dtype=bool)
    if a.lens is not None:
        arrays.update(encode_lens(a.lens)[1])
    arrays.update(knockout_codec.encode(a.knockout)[1])
    return arrays


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
    image = v.image_array(image)
    model = v.model_info(v.field(m, "model"))
    L, H = model.num_layers, model.num_heads
    ids = v.list_of(v.field(m, "answer_token_ids"), "answer_token_ids")
    T = len(ids)
    if T < 1:
        raise v.bad("answer_token_ids", "a non-empty list (the answer)", ids)
    answer_ids = [v.integer(x, f"answer_token_ids[{i}]", 0) for i, x in enumerate(ids)]
    # A tokenizer may name no token for an id past its vocabulary: null, shown as "".
    tokens = ["" if t is None else v.string(t, f"tokens[{i}]")
              for i, t in enumerate(v.list_of(v.field(m, "tokens"), "tokens"))]
    S = len(tokens)
    if S <= T:
        raise v.bad("tokens", f"the prompt and the {T} answer tokens", f"{S} tokens")
    groups = v.groups(v.field(m, "groups"), S, T)
    shares = v.floats(arrays, "shares", [("L", L), ("4", 4)], 0.0, 1.0)
    head_shares = v.floats(arrays, "head_shares", [("L", L), ("H", H), ("4", 4)], 0.0, 1.0)
    answer_logprobs = v.floats(arrays, "answer_logprobs", [("T", T)])
    if "cam_tokens" in arrays:
        tokens_part = v.tokens_v2(m, arrays, L)
    else:
        tokens_part = v.tokens_v1(m, arrays, image, L)
    N = tokens_part["cam_tokens"].shape[1]
    feats = v.array(arrays, "feature_positions", [("N", N)], "iu", required=False)
    if feats is not None:
        feats = feats.astype(np.int64)
        in_image = np.zeros(S, dtype=bool)
        for s, e in groups["image"]:
            in_image[s:e] = True
        if (N and (feats.min() < 0 or feats.max() >= S or not in_image[feats].all())
                or (np.diff(feats) <= 0).any()):
            raise SnapshotError("array 'feature_positions' must be increasing positions inside "
                                "the image group")
    per_token = _per_token(arrays, T, L, H, N)
    sweep_logprob = v.floats(arrays, "sweep_logprob", [("L+1", L + 1)], required=False)
    sweep_same = v.array(arrays, "sweep_same", [("L+1", L + 1)], "b", required=False)
    if (sweep_logprob is None) != (sweep_same is None):
        raise SnapshotError("arrays 'sweep_logprob' and 'sweep_same' come together (a sweep)")
    sweep_answers = m.get("sweep_answers")
    if sweep_answers is not None:
        sweep_answers = v.strings(sweep_answers, "sweep_answers")
        if sweep_same is None or len(sweep_answers) != L + 1:
            raise v.bad("sweep_answers", f"the {L + 1} answers of a sweep", sweep_answers)
    cliff = v.opt_integer(m.get("cliff_layer"), "cliff_layer", 0, L)
    if sweep_same is not None and cliff != cliff_layer(sweep_same):
        raise v.bad("cliff_layer", f"the sweep's cliff layer ({cliff_layer(sweep_same)})", cliff)
    max_new_tokens = v.integer(m.get("max_new_tokens", T), "max_new_tokens", T, 1 << 20)
    return Analysis(
        model=model,
        question=v.string(v.field(m, "question"), "question"),
        prompt=v.string(v.field(m, "prompt"), "prompt"),
        answer=v.string(v.field(m, "answer"), "answer"),
        answer_token_ids=answer_ids,
        tokens=tokens,
        groups=groups,
        image=np.array(image),
        shares=shares,
        head_shares=head_shares,
        answer_logprobs=answer_logprobs,
        feature_positions=feats,
        image_attention=v.floats(arrays, "image_attention", [("L", L), ("N", N)], 0.0, 1.0,
                                required=False),
        attention_tokens=v.floats(arrays, "attention_tokens", [("L", L), ("N", N)], 0.0, 1.0,
                                 required=False),
        cam_settings=v.cam_settings(m.get("cam", {})),
        **per_token,
        truncations=v.truncations(m.get("truncations", []), L, N),
        sweep_logprob=sweep_logprob,
        sweep_same=sweep_same,
        sweep_answers=sweep_answers,
        cliff_layer=cliff,
        created=v.string(m.get("created", ""), "created"),
        flowtui_version=v.string(m.get("flowtui_version", ""), "flowtui_version"),
        ended_with_eos=v.boolean(m.get("ended_with_eos", True), "ended_with_eos"),
        max_new_tokens=max_new_tokens,
        notes=v.strings(m.get("notes", []), "notes"),
        checks=v.checks(m.get("checks", [])),
        lens=decode_lens(m.get("lens"), arrays, L, N),
        knockout=knockout_codec.decode(m, arrays, L),
        **tokens_part,
    )


def _per_token(arrays: dict[str, np.ndarray], T: int, L: int, H: int, N: int) -> dict:
    """The per-answer-token arrays of version 3 (each optional; absent from older snapshots)."""
    head = v.floats(arrays, "token_head_shares", [("T", T), ("L", L), ("H", H), ("4", 4)],
                    0.0, 1.0, required=False)
    shares = v.floats(arrays, "token_shares", [("T", T), ("L", L), ("4", 4)], 0.0, 1.0,
                      required=False)
    if shares is not None and (head is None
                               or not np.allclose(shares, head.mean(axis=2), atol=1e-4)):
        raise SnapshotError("array 'token_shares' must be the head mean of 'token_head_shares'")
    return {
        "token_head_shares": head,
        "token_attention": v.floats(arrays, "token_attention", [("T", T), ("L", L), ("N", N)],
                                    0.0, 1.0, required=False),
        "token_cam": v.floats(arrays, "token_cam", [("T", T), ("L", L), ("N", N)], 0.0, 1.0,
                              required=False),
    }
