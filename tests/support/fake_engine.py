"""A synthetic but consistent engine for UI tests: no model, numpy only, deterministic.

`make_analysis` builds an `Analysis` whose shares rows sum to 1, whose CAMs are blobs in
[0, 1] that drift across layers, with a short answer. `FakeEngine` implements the Engine
protocol with small sleeps and the same callbacks a real engine makes; `fail=` makes a call
raise, to test error notifications.
"""

from __future__ import annotations

import time

import numpy as np

from flowtui.engine.analysis import (
    GROUPS,
    Analysis,
    Lens,
    ModelInfo,
    Progress,
    Sweep,
    TruncationRun,
    cliff_layer,
    grid_regions,
)
from flowtui.engine.errors import Cancelled, InputError, ModelLoadError


def make_image(size: int = 96, width: int | None = None) -> np.ndarray:
    """A light background with a red disc and a blue square (like a toy scene); `size` high,
    `width` wide (default square)."""
    w = width or size
    yy, xx = np.mgrid[0:size, 0:w]
    img = np.full((size, w, 3), 235, dtype=np.uint8)
    disc = (yy - size * 0.35) ** 2 + (xx - w * 0.3) ** 2 < (min(size, w) * 0.15) ** 2
    img[disc] = (215, 40, 40)
    sq = (abs(yy - size * 0.7) < size * 0.12) & (abs(xx - w * 0.7) < w * 0.12)
    img[sq] = (45, 75, 215)
    return img


# The multi-view layout's sink tokens: (view, index within the view, attention). Edge tokens,
# 20-300x the others, as Qwen-family models put them.
TILE_SINKS: tuple[tuple[int, int, float], ...] = (
    (0, 0, 0.2),  # global: its top-left token
    (1, 0, 0.1),  # tiles: the top-left token of three tiles
    (1, 64, 0.15),
    (1, 128, 0.3),
)


def tiles_layout(
    image_hw: tuple[int, int], grid: int = 8
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A multi-view layout like LLaVA-NeXT's: a `global` view (grid x grid over the whole
    image, then one row-newline token with no region) and `tiles` (2x2 tiles of grid x grid
    each, tile by tile). Returns regions [N, 4], token_views [N] and the view names."""
    h, w = image_hw
    regions = [grid_regions(grid, grid, (0, 0, w, h)), np.full((1, 4), np.nan, np.float32)]
    views = [np.zeros(grid * grid + 1, np.int16)]
    for ty in range(2):
        for tx in range(2):
            box = (tx * w / 2, ty * h / 2, (tx + 1) * w / 2, (ty + 1) * h / 2)
            regions.append(grid_regions(grid, grid, box))
            views.append(np.ones(grid * grid, np.int16))
    return np.concatenate(regions), np.concatenate(views), ["global", "tiles"]


def make_analysis(
    num_layers: int = 8,
    num_heads: int = 4,
    grid: tuple[int, int] = (12, 12),
    image_size: int = 96,
    question: str = "Is there a red circle?",
    answer_tokens: tuple[str, ...] = ("Yes", "."),
    seed: int = 0,
    layout: str = "grid",
    per_token: bool = False,
) -> Analysis:
    """`layout="grid"`: one view, a `grid` of patches over a square image (as LLaVA-1.5).
    `layout="tiles"`: a 128x96 image seen as a global view plus 2x2 tiles (`tiles_layout`),
    no `image_grid`, and sink tokens (TILE_SINKS) in `attention_tokens`."""
    rng = np.random.default_rng(seed)
    L, H = num_layers, num_heads
    if layout == "tiles":
        image = make_image(96, 128)
        regions, token_views, views = tiles_layout(image.shape[:2])
        image_grid = None
    elif layout == "grid":
        image = make_image(image_size)
        regions = grid_regions(grid[0], grid[1], (0, 0, image.shape[1], image.shape[0]))
        token_views = np.zeros(grid[0] * grid[1], dtype=np.int16)
        views, image_grid = ["image"], grid
    else:
        raise ValueError(f"unknown layout {layout!r}")
    n_img = len(regions)
    n_sys, n_user, T = 5, 9, len(answer_tokens)
    groups = {
        "system": [(0, n_sys)],
        "image": [(n_sys, n_sys + n_img)],
        "user": [(n_sys + n_img, n_sys + n_img + n_user)],
        "output": [(n_sys + n_img + n_user, n_sys + n_img + n_user + T)],
    }
    tokens = (
        ["<s>", "SYS", "tem", ":", "USER"]
        + ["<image>"] * n_img
        + ["▁Is", "▁there", "▁a", "▁red", "▁circle", "?", "ASSIST", "ANT", ":"]
        + [f"▁{t}" if i == 0 else t for i, t in enumerate(answer_tokens)]
    )
    # Image share rises then falls across layers, as the paper describes.
    x = np.linspace(0, 1, L)
    img_share = 0.15 + 0.5 * np.exp(-((x - 0.3) ** 2) / 0.05)
    raw = np.stack([0.3 + 0.2 * x, img_share, 0.2 + 0.1 * (1 - x), 0.05 + 0.1 * x], axis=1)
    head_raw = raw[:, None, :] * rng.uniform(0.5, 1.5, size=(L, H, 4))
    head_shares = (head_raw / head_raw.sum(-1, keepdims=True)).astype(np.float32)
    shares = head_shares.mean(axis=1)
    shares = (shares / shares.sum(-1, keepdims=True)).astype(np.float32)

    if layout == "grid":
        gy, gx = np.mgrid[0 : grid[0], 0 : grid[1]]
        cams = []
        for layer in range(L):
            t = layer / max(1, L - 1)
            cy, cx = grid[0] * (0.35 + 0.3 * t), grid[1] * (0.3 + 0.4 * t)
            blob = np.exp(-((gy - cy) ** 2 + (gx - cx) ** 2) / (2 * (1.5 + 3 * t) ** 2))
            cams.append(blob / blob.max())
        cam = np.asarray(cams, dtype=np.float32).reshape(L, -1)
        image_attention = rng.random((L, n_img)).astype(np.float32)
        attention = rng.random((L, n_img)).astype(np.float32)
    else:
        image_attention = rng.random((L, n_img)).astype(np.float32)
        cam, attention = _tile_maps(image.shape[:2], regions, token_views, L, rng)
    cam[-1] = 0.0  # an all-zero map stays zero
    token_arrays = _token_arrays(head_shares, cam, attention, T, rng) if per_token else {}
    return Analysis(
        model=ModelInfo("fake-lvlm", "fake", L, H, "float32", "cpu"),
        question=question,
        prompt="USER: <image>\n" + question + " ASSISTANT:",
        answer="".join(answer_tokens),
        answer_token_ids=list(range(100, 100 + T)),
        tokens=tokens,
        groups=groups,
        image_grid=image_grid,
        image=image,
        shares=shares,
        head_shares=head_shares,
        cam_tokens=cam,
        token_regions=regions,
        token_views=token_views,
        views=views,
        answer_logprobs=np.array([-0.05, -1.7][:T] + [-0.3] * max(0, T - 2), dtype=np.float32),
        image_attention=image_attention,
        attention_tokens=attention,
        created="2025-01-01T00:00:00+00:00",
        flowtui_version="0.1.0",
        **token_arrays,
    )


def _token_arrays(head_shares, cam, attention, T, rng) -> dict:
    """Per-token arrays whose means over the answer are the whole-answer ones: token t's image
    share leans one way, the next token's the other; its maps roll across the image."""
    L, H, _ = head_shares.shape
    tilt = np.linspace(-0.6, 0.6, T) if T > 1 else np.zeros(1)
    head = np.empty((T, L, H, 4), dtype=np.float32)
    for t in range(T):
        w = head_shares * np.array([1.0, 1.0 + tilt[t], 1.0, 1.0 - tilt[t] / 2])
        head[t] = w / w.sum(-1, keepdims=True)
    shift = [int(round(s)) for s in np.linspace(-cam.shape[1] // 6, cam.shape[1] // 6, T)]
    token_cam = np.stack([np.roll(cam, s, axis=1) for s in shift]).astype(np.float32)
    token_attention = np.stack([np.roll(attention, -s, axis=1) for s in shift]).astype(np.float32)
    return {"token_head_shares": head, "token_attention": token_attention,
            "token_cam": token_cam}


def _tile_maps(
    image_hw: tuple[int, int],
    regions: np.ndarray,
    token_views: np.ndarray,
    L: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """CAM and attention for the multi-view layout: blobs over the image that drift across
    layers, sampled at each token's region centre (so the views differ in resolution); the CAM
    normalised over all views, the attention small (~1e-3) with TILE_SINKS on top."""
    h, w = image_hw
    cx = np.nan_to_num((regions[:, 0] + regions[:, 2]) / 2 / w, nan=0.0)
    cy = np.nan_to_num((regions[:, 1] + regions[:, 3]) / 2 / h, nan=0.0)
    cams, atts = [], []
    for layer in range(L):
        t = layer / max(1, L - 1)
        d2 = (cy - (0.35 + 0.3 * t)) ** 2 + (cx - (0.3 + 0.4 * t)) ** 2
        blob = np.exp(-d2 / (2 * (0.12 + 0.2 * t) ** 2))
        cams.append(blob / blob.max())
        # The answer looks at the blob's mirror image, so CAM and attention differ on screen.
        d2 = (cy - (0.65 - 0.3 * t)) ** 2 + (cx - (0.7 - 0.4 * t)) ** 2
        atts.append(1e-3 * (0.2 + np.exp(-d2 / 0.02) + 0.1 * rng.random(len(regions))))
    cam = np.asarray(cams, dtype=np.float32)
    attention = np.asarray(atts, dtype=np.float32)
    for view, index, value in TILE_SINKS:
        attention[:, np.flatnonzero(token_views == view)[index]] = value
    return cam, attention


# The fake's vocabulary for the lens: the answer's tokens are ids 100.. (make_analysis).
LENS_WORDS = {100: "Yes", 101: ".", 200: "the", 201: "picture", 202: "red", 203: "circle",
              204: "blue", 205: "square", 206: "shape"}


def make_lens(analysis: Analysis, word: str | None = None) -> Lens:
    """A lens over make_analysis' image: background tokens read `the`; the red disc's tokens
    `picture` in layers 0-2, `red` in 3-4, `circle` from 5; the blue square's `blue` from 4 and
    `square` from 6 (relative to 8 layers). The word's probability is high where it is top;
    the default word (`Yes`) grows with depth on the disc."""
    L, N = analysis.num_layers, analysis.num_features
    h, w = analysis.image.shape[:2]
    r = np.nan_to_num(analysis.token_regions, nan=-1.0)
    cx, cy = (r[:, 0] + r[:, 2]) / 2, (r[:, 1] + r[:, 3]) / 2
    disc = (cy - h * 0.35) ** 2 + (cx - w * 0.3) ** 2 < (min(h, w) * 0.15) ** 2
    square = (abs(cy - h * 0.7) < h * 0.12) & (abs(cx - w * 0.7) < w * 0.12)
    ids = {v: k for k, v in LENS_WORDS.items()}
    top = np.full((L, N), ids["the"], dtype=np.int32)
    for layer in range(L):
        t = layer * 8 / L
        top[layer, disc] = ids["circle" if t >= 5 else "red" if t >= 3 else "picture"]
        if t >= 4:
            top[layer, square] = ids["square" if t >= 6 else "blue"]
    others = np.array([ids["shape"], ids["picture"], ids["the"], 101], dtype=np.int32)
    top_ids = np.zeros((L, N, 5), dtype=np.int32)
    top_ids[:, :, 0] = top
    for j in range(1, 5):  # the runners-up: any four others, distinct from the top
        top_ids[:, :, j] = np.where(top == others[j - 1], ids["blue"], others[j - 1])
    top_probs = np.tile(np.array([0.6, 0.15, 0.1, 0.05, 0.02], np.float32), (L, N, 1))
    if word is None:
        wid = analysis.answer_token_ids[0]
        depth = np.linspace(0.01, 0.9, L, dtype=np.float32)[:, None]
        word_prob = np.where(disc[None, :], depth, 0.01).astype(np.float32)
        word_prob = np.broadcast_to(word_prob, (L, N)).copy()
    else:
        if word.strip() not in ids:
            raise InputError(f"{word.strip()!r} is not in the model's vocabulary")
        wid = ids[word.strip()]
        word_prob = np.where(top == wid, 0.6, 0.01).astype(np.float32)
    return Lens(word=LENS_WORDS.get(wid, "Yes"), word_id=int(wid), top_ids=top_ids,
                top_probs=top_probs, word_prob=word_prob, strings=dict(LENS_WORDS))


def save_version_1(analysis: Analysis, path) -> None:
    """Write a one-grid analysis as flowtui 0.1 did: manifest version 1, one grid `cam`, no
    per-token arrays, views or attention_tokens."""
    import io
    import json
    import zipfile

    tmp = analysis.save(str(path) + ".v2")
    with zipfile.ZipFile(tmp) as zin, zipfile.ZipFile(path, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "manifest.json":
                m = json.loads(data)
                m["version"] = 1
                m.pop("views", None)
                data = json.dumps(m).encode()
            elif name == "arrays.npz":
                with np.load(io.BytesIO(data)) as npz:
                    arrays = {
                        k: npz[k] for k in npz.files
                        if k not in ("cam_tokens", "token_regions", "token_views",
                                     "feature_positions", "attention_tokens")
                    }
                buf = io.BytesIO()
                np.savez(buf, **arrays)
                data = buf.getvalue()
            zout.writestr(name, data)
    tmp.unlink()


class FakeEngine:
    """Engine protocol over `make_analysis`. The image is hidden from layer `cliff` onward only
    when K < cliff changes the answer (answer "No" there)."""

    def __init__(
        self,
        num_layers: int = 8,
        delay: float = 0.0,
        fail: str | None = None,
        fail_exc: Exception | None = None,
        cliff: int = 3,
    ) -> None:
        self.num_layers = num_layers
        self.delay = delay
        self.fail = fail
        self.fail_exc = fail_exc
        self.cliff = cliff
        self.info = ModelInfo("fake-lvlm", "fake", num_layers, 4, "float32", "cpu")
        self.calls: list[str] = []
        self.location: str | None = None  # in this process
        self.on_log = None
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def count_image_tokens(self, image) -> int | None:
        return None  # the fake's token count depends on nothing: --keep is checked in truncate

    def _maybe_fail(self, name: str) -> None:
        if self.fail == name:
            raise self.fail_exc or RuntimeError(f"{name} exploded")

    def analyze(self, image, question, max_new_tokens=32, progress=None, cam=True,
                self_check=True, per_token=False) -> Analysis:
        self.calls.append("analyze")
        for stage in ("generating", "capturing", "cam"):
            if progress:
                progress(Progress(stage, 0, 1))
            time.sleep(self.delay)
        self._maybe_fail("analyze")
        return make_analysis(num_layers=self.num_layers, question=question)

    def _answer(self, layer: int) -> tuple[str, float]:
        same = layer >= self.cliff
        lp = -0.1 - 3.0 * max(0, self.cliff - layer) / max(1, self.cliff)
        return ("Yes." if same else "No."), float(lp)

    def truncate(self, analysis, layer, strategy="all", keep=None, seed=0, on_token=None, progress=None):
        self.calls.append(f"truncate:{layer}:{strategy}:{keep}")
        self._maybe_fail("truncate")
        t0 = time.perf_counter()
        answer, lp = self._answer(layer)
        if progress:
            progress(Progress("truncating", 0, len(answer)))
        text = ""
        for i, ch in enumerate(answer):
            time.sleep(self.delay)
            text += ch
            if on_token:
                on_token(text)
            if progress:
                progress(Progress("truncating", i + 1, len(answer)))
        run = TruncationRun(
            layer=layer,
            strategy=strategy,
            keep=keep,
            seed=seed if strategy == "random" else None,
            answer=answer,
            answer_token_ids=[1, 2],
            baseline_logprob=lp,
            same=answer == analysis.answer,
            seconds=time.perf_counter() - t0,
        )
        analysis.truncations.append(run)  # as the real engine does: it owns the record
        return run

    def sweep(self, analysis, progress=None, cancel=None, strategy="all", keep=None, seed=0) -> Sweep:
        self.calls.append("sweep")
        self._maybe_fail("sweep")
        L = analysis.num_layers
        lps, same, answers = [], [], []
        for k in range(L + 1):
            if cancel and cancel():
                raise Cancelled("sweep cancelled")
            if progress:
                progress(Progress("sweep", k, L + 1, f"K={k}"))
            time.sleep(self.delay)
            a, lp = self._answer(k)
            answers.append(a)
            lps.append(lp)
            same.append(a == analysis.answer)
        if progress:
            progress(Progress("sweep", L + 1, L + 1))
        same_arr = np.array(same, dtype=bool)
        sweep = Sweep(
            logprob=np.array(lps, dtype=np.float32),
            same=same_arr,
            answers=answers,
            cliff_layer=cliff_layer(same_arr),
        )
        if strategy == "all":
            analysis.set_sweep(sweep)
        return sweep

    def knockout(self, analysis, flows, window=None, layers=None, greedy=False, progress=None,
                 cancel=None):
        """Made-up curves with the real shapes: each flow dips in the middle layers."""
        from flowtui.engine.knockout_flows import (
            KnockoutResult,
            default_window,
            parse_flows,
            parse_layers,
        )

        self.calls.append("knockout")
        self._maybe_fail("knockout")
        names = [f.name for f in parse_flows(flows)]
        L = analysis.num_layers
        span = None
        if layers is not None:
            span = parse_layers(layers if isinstance(layers, str) else f"{layers[0]}:{layers[1]}", L)
        W = 1 if span else L
        rel = np.zeros((len(names), W), dtype=np.float32)
        for w in range(W):
            if cancel and cancel():
                raise Cancelled("knockout cancelled")
            if progress:
                progress(Progress("knockout", w, W, f"window {w}"))
            time.sleep(self.delay)
            for f in range(len(names)):
                rel[f, w] = -80.0 * np.exp(-((w - L / 2 - f) ** 2) / 2.0) / (f + 1)
        p0 = 0.6
        first = (p0 * (1 + rel / 100)).astype(np.float32)
        result = KnockoutResult(flows=names, first_prob=first, rel_change=rel,
                                logprob=np.log(first).astype(np.float32), baseline_first_prob=p0,
                                window=None if span else (window or default_window(L)),
                                layers=span,
                                answers=[[analysis.answer] * W for _ in names] if greedy else None)
        if progress:
            progress(Progress("knockout", W, W))
        analysis.knockout = result
        return result


    def lens(self, analysis, word=None, progress=None, cancel=None) -> Lens:
        self.calls.append(f"lens:{word}")
        self._maybe_fail("lens")
        L = analysis.num_layers
        for layer in range(L):
            if cancel and cancel():
                raise Cancelled("lens cancelled")
            if progress:
                progress(Progress("lens", layer, L, f"layer {layer}"))
            time.sleep(self.delay)
        result = make_lens(analysis, word)
        if word is None:
            analysis.lens = result
        return result


def fake_factory(engine: FakeEngine | None = None, fail: bool = False, delay: float = 0.0):
    """An engine_factory for run_explorer/FlowtuiApp: calls progress like a loader does."""

    def factory(progress):
        progress(Progress("loading", 0, 1, "fake-lvlm"))
        time.sleep(delay)
        if fail:
            raise ModelLoadError("model 'nope' not found in the Hugging Face cache")
        return engine or FakeEngine()

    return factory


__all__ = [
    "GROUPS",
    "TILE_SINKS",
    "FakeEngine",
    "fake_factory",
    "make_analysis",
    "make_lens",
    "make_image",
    "save_version_1",
    "tiles_layout",
]
