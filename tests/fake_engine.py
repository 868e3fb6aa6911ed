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
    ModelInfo,
    Progress,
    Sweep,
    TruncationRun,
    cliff_layer,
    grid_regions,
)
from flowtui.engine.errors import Cancelled, ModelLoadError


def make_image(size: int = 96) -> np.ndarray:
    """A light background with a red disc and a blue square (like a toy scene)."""
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.full((size, size, 3), 235, dtype=np.uint8)
    disc = (yy - size * 0.35) ** 2 + (xx - size * 0.3) ** 2 < (size * 0.15) ** 2
    img[disc] = (215, 40, 40)
    sq = (abs(yy - size * 0.7) < size * 0.12) & (abs(xx - size * 0.7) < size * 0.12)
    img[sq] = (45, 75, 215)
    return img


def make_analysis(
    num_layers: int = 8,
    num_heads: int = 4,
    grid: tuple[int, int] = (12, 12),
    image_size: int = 96,
    question: str = "Is there a red circle?",
    answer_tokens: tuple[str, ...] = ("Yes", "."),
    seed: int = 0,
) -> Analysis:
    rng = np.random.default_rng(seed)
    L, H = num_layers, num_heads
    n_img = grid[0] * grid[1]
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

    gy, gx = np.mgrid[0 : grid[0], 0 : grid[1]]
    cams = []
    for layer in range(L):
        t = layer / max(1, L - 1)
        cy, cx = grid[0] * (0.35 + 0.3 * t), grid[1] * (0.3 + 0.4 * t)
        blob = np.exp(-((gy - cy) ** 2 + (gx - cx) ** 2) / (2 * (1.5 + 3 * t) ** 2))
        cams.append(blob / blob.max())
    cam = np.asarray(cams, dtype=np.float32)
    cam[-1] = 0.0  # an all-zero map stays zero
    image = make_image(image_size)
    return Analysis(
        model=ModelInfo("fake-lvlm", "fake", L, H, "float32", "cpu"),
        question=question,
        prompt="USER: <image>\n" + question + " ASSISTANT:",
        answer="".join(answer_tokens),
        answer_token_ids=list(range(100, 100 + T)),
        tokens=tokens,
        groups=groups,
        image_grid=grid,
        image=image,
        shares=shares,
        head_shares=head_shares,
        cam_tokens=cam.reshape(L, -1),
        token_regions=grid_regions(grid[0], grid[1], (0, 0, image.shape[1], image.shape[0])),
        token_views=np.zeros(n_img, dtype=np.int16),
        answer_logprobs=np.array([-0.05, -1.7][:T] + [-0.3] * max(0, T - 2), dtype=np.float32),
        image_attention=rng.random((L, n_img)).astype(np.float32),
        attention_tokens=rng.random((L, n_img)).astype(np.float32),
        created="2025-01-01T00:00:00+00:00",
        flowtui_version="0.1.0",
    )


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

    def _maybe_fail(self, name: str) -> None:
        if self.fail == name:
            raise self.fail_exc or RuntimeError(f"{name} exploded")

    def analyze(self, image, question, max_new_tokens=32, progress=None, cam=True) -> Analysis:
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


def fake_factory(engine: FakeEngine | None = None, fail: bool = False, delay: float = 0.0):
    """An engine_factory for run_explorer/FlowtuiApp: calls progress like a loader does."""

    def factory(progress):
        progress(Progress("loading", 0, 1, "fake-lvlm"))
        time.sleep(delay)
        if fail:
            raise ModelLoadError("model 'nope' not found in the Hugging Face cache")
        return engine or FakeEngine()

    return factory


__all__ = ["GROUPS", "FakeEngine", "fake_factory", "make_analysis", "make_image"]
