"""The recording pass: one teacher-forced forward (and, for the CAM, one backward) that yields
the shares, the LLaVA-CAM of every layer, and the state every rerun starts from.

The state (`State`) keeps each layer's input over the whole sequence, each layer's keys and
values, the logits at the answer queries and the arguments the text model was called with, so a
rerun from K replays layers K..L-1 exactly (docs/definitions.md, "Truncation").
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from flowtui.engine import attention, compat, tokens
from flowtui.engine.analysis import (
    GROUPS,
    Analysis,
    Progress,
    ProgressFn,
)
from flowtui.engine.errors import InputError
from flowtui.engine.images import load_image

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from flowtui.engine.analysis import ModelInfo
    from flowtui.engine.families import FamilyAdapter

# Per layer: its keys and values over the whole sequence.
_KV = dict[int, tuple[torch.Tensor, torch.Tensor]]



@dataclass
class State:
    """Tensors kept for reruns of one analysis: the baseline's residual stream below every K."""

    full: dict[str, torch.Tensor]  # teacher-forced model inputs for prompt + answer
    prompt_len: int
    # What the text model received in the baseline forward (masks, M-RoPE positions, DeepStack
    # features, ...): a rerun from K gives layers K..L-1 exactly this again.
    text_args: tuple
    text_kwargs: dict[str, Any]
    hidden: list[torch.Tensor]  # hidden[K]: input of layer K over the full sequence, [1, P+T, D]
    logits: torch.Tensor  # [T + 1, V] float32 at the answer queries and the last position
    rank_attention: np.ndarray  # [L, N_feat] last prompt position -> feature tokens
    kv: _KV  # per layer keys/values over the sequence
    # The final norm's input [1, P+T, D]: the residual stream after the last layer, which no
    # layer reads (the logit lens's last layer: docs/definitions.md).
    final: torch.Tensor | None = None

    @property
    def input_ids(self) -> torch.Tensor:
        return self.full["input_ids"]


def _detached(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, dict):
        return {k: _detached(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(_detached(v) for v in x)
    return x


class Recording:
    """The recording pass and the per-analysis state, for LocalEngine (mixed in)."""

    # What LocalEngine provides (declared for the type checker only).
    adapter: FamilyAdapter
    model: PreTrainedModel
    info: ModelInfo
    _states: OrderedDict[str, State]
    _max_states: int
    if TYPE_CHECKING:
        def _inputs(self, image: Any, question: str) -> tuple[str, dict[str, torch.Tensor]]: ...

    def _forward_recording(self, full: dict[str, torch.Tensor], T: int, with_cam: bool) -> dict:
        """One teacher-forced forward that keeps every layer's input, (for CAM) every site's
        output, every layer's keys/values, and what the text model was called with."""
        layers = list(self.adapter.layers)
        hidden: list[torch.Tensor] = [None] * len(layers)  # type: ignore[list-item]
        sites: list[torch.Tensor] = [None] * len(layers)  # type: ignore[list-item]
        call: dict[str, Any] = {}
        handles = []

        def keep_call(_mod, args, kwargs):
            call["args"], call["kwargs"] = _detached(tuple(args)), _detached(dict(kwargs))

        def keep_input(i: int):
            def hook(_mod, args, kwargs):
                h = args[0] if args else kwargs["hidden_states"]
                hidden[i] = h.detach()

            return hook

        def keep_site(i: int):
            def hook(_mod, _args, out):
                sites[i] = out

            return hook

        def keep_final(_mod, args):
            call["final"] = args[0].detach()

        handles.append(
            self.adapter.text_model.register_forward_pre_hook(keep_call, with_kwargs=True)
        )
        handles.append(compat.final_norm(self.adapter.text_model).register_forward_pre_hook(
            keep_final))
        for i, layer in enumerate(layers):
            handles.append(layer.register_forward_pre_hook(keep_input(i), with_kwargs=True))
            if with_cam:
                handles.append(self.adapter.cam_site(layer).register_forward_hook(keep_site(i)))
        if with_cam:
            # Parameters never need gradients; the graph starts at the input embeddings.
            handles.append(
                self.model.get_input_embeddings().register_forward_hook(
                    lambda _m, _a, out: out.detach().requires_grad_(True)
                )
            )
        try:
            with torch.set_grad_enabled(with_cam), attention.recording_kv() as kv:
                out = self.model(**full, use_cache=False, logits_to_keep=T + 1)
        finally:
            for h in handles:
                h.remove()
        return {"logits": out.logits[0], "hidden": hidden, "sites": sites, "kv": kv,
                "text_args": call["args"], "text_kwargs": call["kwargs"],
                "final": call.get("final")}

    def _capture(self, full, P, T, groups, feats, report, cam: bool = True,
                 per_token: bool = False) -> dict[str, Any]:
        cap = attention.ShareCapture.for_groups(groups, GROUPS, T, feats)
        with attention.capturing(cap):
            rec = self._forward_recording(full, T, with_cam=cam)
        logits, sites = rec["logits"], rec["sites"]
        L = self.adapter.num_layers
        answer = full["input_ids"][0, P:].to(logits.device)
        idx = torch.arange(T, device=logits.device)
        cams = np.zeros((L, len(feats)), dtype=np.float32)
        token_cam = None
        if cam and per_token:
            # One batched backward per chunk of answer tokens; the whole-answer CAM is the same
            # gradients summed (docs/definitions.md, "Per-token quantities").
            report(Progress("cam", 0, 1, "every answer token"))
            pos = torch.as_tensor(feats, dtype=torch.long)
            token_cam, cams = tokens.token_cams(logits, answer, sites, pos)
            report(Progress("cam", 1, 1))
        elif cam:
            report(Progress("cam", 0, 1))
            # The paper's target: the raw logit of each answer token at its query, summed.
            target = logits[idx, answer].sum()
            grads = torch.autograd.grad(target, sites, allow_unused=True)
            pos = torch.as_tensor(feats, dtype=torch.long)
            for layer, (a, g) in enumerate(zip(sites, grads, strict=True)):
                if g is None:
                    continue
                cams[layer] = cam_from(a[0, pos.to(a.device)], g[0, pos.to(g.device)])
            report(Progress("cam", 1, 1))
        logits = logits.detach().float()
        logprobs = torch.log_softmax(logits[:T], dim=-1)[idx, answer]
        head_shares = torch.stack([cap.head_shares[i] for i in range(L)]).numpy()
        rank = torch.stack([cap.rank_attention[i] for i in range(L)]).numpy()
        answer_attention = torch.stack([cap.answer_attention[i] for i in range(L)]).numpy()
        # [T, L, H, G] and [T, L, N]: answer token first (the cursor's axis).
        token_head = torch.stack([cap.token_head_shares[i] for i in range(L)]).permute(2, 0, 1, 3)
        token_attention = torch.stack([cap.token_attention[i] for i in range(L)]).transpose(0, 1)
        state = State(
            full=full,
            prompt_len=P,
            text_args=rec["text_args"],
            text_kwargs=rec["text_kwargs"],
            hidden=rec["hidden"],
            logits=logits,
            rank_attention=rank,
            kv=rec["kv"],
            final=rec["final"],
        )
        return {
            "head_shares": head_shares.astype(np.float32),
            "cam": cams,
            "answer_logprobs": logprobs.cpu().numpy().astype(np.float32),
            "rank_attention": rank.astype(np.float32),
            "answer_attention": answer_attention.astype(np.float32),
            "token_head_shares": token_head.numpy().astype(np.float32),
            "token_attention": token_attention.numpy().astype(np.float32),
            "token_cam": token_cam,
            "state": state,
        }

    # --- rerun state ---------------------------------------------------------------------------
    @staticmethod
    def _key(a: Analysis) -> str:
        h = hashlib.sha1()
        h.update(np.ascontiguousarray(a.image).tobytes())
        h.update(a.question.encode())
        h.update(np.asarray(a.answer_token_ids, dtype=np.int64).tobytes())
        return h.hexdigest()

    def _remember(self, a: Analysis, state: State) -> None:
        key = self._key(a)  # hashes the whole image: once
        self._states[key] = state
        self._states.move_to_end(key)
        while len(self._states) > self._max_states:
            self._states.popitem(last=False)

    def _state(self, a: Analysis, report: ProgressFn) -> State:
        key = self._key(a)
        if key in self._states:
            self._states.move_to_end(key)
            return self._states[key]
        # A reopened snapshot or an evicted analysis: rebuild the baseline's residual stream.
        report(Progress("capturing", 0, 1, "rebuilding the baseline"))
        if self.adapter.num_layers != a.num_layers:
            raise InputError(
                f"this analysis was made with {a.model.name} ({a.num_layers} layers) but the "
                f"loaded model {self.info.name} has {self.adapter.num_layers}; load the model "
                "it was made with"
            )
        _, inputs = self._inputs(load_image(a.image), a.question)
        prompt_ids = inputs["input_ids"][0].cpu().numpy()
        P = len(prompt_ids)
        if a.groups["output"] and P != a.prompt_length:
            raise InputError(
                f"this analysis was made with {a.model.name}; its prompt does not match the "
                f"loaded model {self.info.name} ({a.prompt_length} vs {P} tokens)"
            )
        feats = self.adapter.feature_positions(prompt_ids)
        if a.feature_positions is None or not np.array_equal(feats, a.feature_positions):
            raise InputError(
                f"this analysis was made with {a.model.name}; its image tokens do not match "
                f"the loaded model {self.info.name}"
            )
        T = len(a.answer_token_ids)
        full = self.adapter.teacher_forced(inputs, list(a.answer_token_ids))
        cap = attention.ShareCapture.for_groups(a.groups, GROUPS, T, feats)
        with torch.no_grad(), attention.capturing(cap):
            rec = self._forward_recording(full, T, with_cam=False)
        rank = torch.stack([cap.rank_attention[i] for i in range(self.adapter.num_layers)]).numpy()
        state = State(full, P, rec["text_args"], rec["text_kwargs"], rec["hidden"],
                       rec["logits"].float(), rank, rec["kv"], rec["final"])
        self._remember(a, state)
        return state


def cam_from(a: torch.Tensor, g: torch.Tensor) -> np.ndarray:
    """LLaVA-CAM for one layer from the site activations a and gradients g, both [N_img, D].

    w = mean over positions of ReLU(g); cam = ReLU(mean over channels of w*a), divided by its max.
    """
    a, g = a.detach().float().cpu(), g.detach().float().cpu()
    w = torch.relu(g).mean(dim=0)
    cam = torch.relu((w[None, :] * a).mean(dim=1))
    peak = cam.max()
    if peak > 0:
        cam = cam / peak
    return cam.numpy()
