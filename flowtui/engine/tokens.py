"""Every answer token on its own (docs/definitions.md, "Per-token quantities").

The recording pass already has what the per-token shares and attention need (the answer-query
rows, before the mean over queries: flowtui.engine.attention keeps them). The per-token
LLaVA-CAM needs one gradient per answer token; they come from the one recording forward through
batched vector-Jacobian products (one backward whose cotangent has a batch axis over the T
targets, torch.autograd.grad(..., is_grads_batched=True)), never from T separate analyses. The
whole-answer gradient is their sum (the target is linear in the per-token logits), so with
per-token CAMs the whole-answer CAM costs no backward of its own.

Plain torch + numpy: no UI here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# Targets per batched backward: the backward holds this many copies of every activation
# gradient at once, so long answers are taken in chunks (memory, not speed, sets it).
DEFAULT_CHUNK = 8


def _normalised(cam: torch.Tensor) -> torch.Tensor:
    """Divide each map (last axis: the feature tokens) by its max; an all-zero map stays zero."""
    peak = cam.amax(dim=-1, keepdim=True)
    return torch.where(peak > 0, cam / torch.where(peak > 0, peak, 1.0), cam)


def cam_rows(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """LLaVA-CAM of one layer for a batch of targets: a [N, D] site activations at the feature
    tokens, g [B, N, D] their gradients, one per target; returns [B, N], each row normalised by
    its max (docs/definitions.md, "LLaVA-CAM")."""
    a, g = a.detach().float(), g.detach().float()
    w = torch.relu(g).mean(dim=1)  # [B, D]: one weight per channel and target
    cam = torch.relu((w[:, None, :] * a[None]).mean(dim=2))  # [B, N]
    return _normalised(cam)


def site_gradients(
    logits: torch.Tensor,
    answer: torch.Tensor,
    sites: Sequence[torch.Tensor],
    feats: torch.Tensor,
    chunk: int = DEFAULT_CHUNK,
) -> list[torch.Tensor | None]:
    """Per layer: the gradient of each answer token's raw logit at its answer query with
    respect to that layer's site at the feature tokens, [T, N, D] (None where the layer's site
    is not on the logits' path). One forward (the caller's), ceil(T / chunk) batched backwards;
    the graph is freed after the last."""
    T = int(answer.shape[0])
    idx = torch.arange(T, device=logits.device)
    targets = logits[idx, answer]  # [T]: the raw logit of answer token t at query P-1+t
    out: list[list[torch.Tensor] | None] = [[] for _ in sites]
    starts = list(range(0, T, max(1, chunk)))
    for n, s in enumerate(starts):
        e = min(T, s + chunk)
        eye = torch.zeros(e - s, T, dtype=targets.dtype, device=targets.device)
        eye[torch.arange(e - s), torch.arange(s, e)] = 1.0
        grads = torch.autograd.grad(
            targets, list(sites), grad_outputs=eye, is_grads_batched=True,
            retain_graph=n < len(starts) - 1, allow_unused=True,
        )
        for layer, g in enumerate(grads):
            kept = out[layer]
            if g is None or kept is None:
                out[layer] = None
                continue
            kept.append(g[:, 0, feats.to(g.device)])  # [chunk, N, D]
    return [None if gs is None else torch.cat(gs) for gs in out]


def token_cams(
    logits: torch.Tensor,
    answer: torch.Tensor,
    sites: Sequence[torch.Tensor],
    feats: torch.Tensor,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[np.ndarray, np.ndarray]:
    """(per-token CAM [T, L, N], whole-answer CAM [L, N]) from one forward's graph: the
    whole-answer gradient is the sum of the per-token ones (the paper's target is their sum)."""
    T, L, N = int(answer.shape[0]), len(sites), int(feats.shape[0])
    per = np.zeros((T, L, N), dtype=np.float32)
    whole = np.zeros((L, N), dtype=np.float32)
    grads = site_gradients(logits, answer, sites, feats, chunk)
    for layer, g in enumerate(grads):
        if g is None:
            continue
        a = sites[layer][0, feats.to(sites[layer].device)]
        per[:, layer] = cam_rows(a, g).cpu().numpy()
        whole[layer] = cam_rows(a, g.float().sum(dim=0, keepdim=True))[0].cpu().numpy()
    return per, whole


# --- words of an answer, for truncation of a multi-token answer --------------------------------
