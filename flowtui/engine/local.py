"""The in-process engine: runs the model, computes shares, LLaVA-CAM, truncations and sweeps."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import DynamicCache, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from flowtui import __version__
from flowtui.engine import attention
from flowtui.engine.adapters import FamilyAdapter
from flowtui.engine.analysis import (
    GROUPS,
    Analysis,
    ModelInfo,
    Progress,
    ProgressFn,
    Sweep,
    TruncationRun,
    cliff_layer,
)
from flowtui.engine.errors import Cancelled, FlowtuiError, InputError
from flowtui.engine.images import load_image
from flowtui.engine.interface import CancelFn, ImageInput, TokenFn

STRATEGIES = ("all", "top", "random")


def _noop(_: Progress) -> None:
    pass


@dataclass
class _State:
    """Tensors kept for reruns of one analysis: the baseline's residual stream below every K."""

    input_ids: torch.Tensor  # [1, P + T] prompt + answer
    prompt_ids: torch.Tensor  # [1, P]
    pixel_inputs: dict[str, torch.Tensor]
    hidden: list[torch.Tensor]  # hidden[K]: input of layer K over the full sequence, [1, P+T, D]
    logits: torch.Tensor  # [T + 1, V] float32 at the answer queries and the last position
    image_attention: np.ndarray  # [L, N_img]
    kv: dict[int, tuple[torch.Tensor, torch.Tensor]]  # per layer keys/values over the sequence


class _Streamer(BaseStreamer):
    """Calls back with all ids decoded so far (generate's first put is the prompt: skipped)."""

    def __init__(self, on_ids) -> None:
        self.on_ids = on_ids
        self.ids: list[int] = []
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.ids.extend(int(t) for t in value.reshape(-1).tolist())
        self.on_ids(self.ids)

    def end(self) -> None:
        pass


class _CancelCriteria(StoppingCriteria):
    def __init__(self, cancel: CancelFn) -> None:
        self.cancel = cancel

    def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
        stop = bool(self.cancel())
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class LocalEngine:
    """Implements flowtui.engine.interface.Engine on a model loaded in this process."""

    def __init__(self, model: nn.Module, processor: Any, adapter: FamilyAdapter, info: ModelInfo):
        self.model = model
        self.processor = processor
        self.adapter = adapter
        self.info = info
        # One model call at a time: reruns temporarily re-slice the decoder stack.
        self._lock = threading.RLock()
        self._states: OrderedDict[str, _State] = OrderedDict()
        self._max_states = 4
        attention.register()
        text_config = adapter.text_config
        text_config._attn_implementation = attention.NAME
        self.device = next(adapter.text_model.parameters()).device

    # --- helpers -----------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def _inputs(self, image: Any, question: str) -> tuple[str, dict[str, torch.Tensor]]:
        prompt, inputs = self.adapter.build_inputs(image, question)
        dtype = next(self.model.parameters()).dtype
        out = {}
        for k, v in inputs.items():
            v = v.to(self.device)
            out[k] = v.to(dtype) if v.is_floating_point() else v
        return prompt, out

    def _generate(
        self,
        input_ids: torch.Tensor,
        pixel_inputs: dict[str, torch.Tensor],
        max_new_tokens: int,
        on_ids=None,
        cancel: CancelFn | None = None,
        cache: DynamicCache | None = None,
    ) -> list[int]:
        kwargs: dict[str, Any] = {}
        if cache is not None:
            kwargs["past_key_values"] = cache
        if on_ids is not None:
            kwargs["streamer"] = _Streamer(on_ids)
        if cancel is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList([_CancelCriteria(cancel)])
        with torch.no_grad():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                **pixel_inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                # The image placeholder is input-only; emitting it would corrupt the sequence.
                suppress_tokens=[self.adapter.image_token_id],
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                **kwargs,
            )
        if cancel is not None and cancel():
            raise Cancelled("cancelled")
        return [int(t) for t in out[0, input_ids.shape[1]:].tolist()]

    def _split_eos(self, ids: list[int]) -> tuple[list[int], bool]:
        eos = self.adapter.eos_token_ids
        for i, t in enumerate(ids):
            if t in eos:
                return ids[:i], True
        return ids, False

    def _groups(self, prompt_ids: np.ndarray, answer_len: int) -> dict[str, list[tuple[int, int]]]:
        spans = self.adapter.image_spans(prompt_ids)
        p = len(prompt_ids)
        return {
            "system": [(0, spans[0][0])] if spans[0][0] > 0 else [],
            "image": spans,
            "user": [(spans[-1][1], p)] if spans[-1][1] < p else [],
            "output": [(p, p + answer_len)],
        }

    # --- analysis ----------------------------------------------------------------------------
    def analyze(
        self,
        image: ImageInput,
        question: str,
        max_new_tokens: int = 32,
        progress: ProgressFn | None = None,
    ) -> Analysis:
        report = progress or _noop
        if not isinstance(question, str) or not question.strip():
            raise InputError("the question is empty")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        pil = load_image(image)
        question = question.strip()
        with self._lock:
            prompt, inputs = self._inputs(pil, question)
            prompt_ids = inputs.pop("input_ids")
            inputs.pop("attention_mask", None)
            P = prompt_ids.shape[1]
            report(Progress("generating", 0, max_new_tokens))

            def on_ids(ids: list[int]) -> None:
                report(Progress("generating", len(ids), max_new_tokens, self._decode(ids)))

            generated = self._generate(prompt_ids, inputs, max_new_tokens, on_ids)
            answer_ids, ended = self._split_eos(generated)
            if not answer_ids:
                raise FlowtuiError("the model's answer is empty (it stopped at once); nothing to analyze")
            T = len(answer_ids)
            full = torch.cat(
                [prompt_ids, torch.tensor([answer_ids], device=prompt_ids.device)], dim=1
            )
            groups = self._groups(prompt_ids[0].cpu().numpy(), T)
            report(Progress("capturing", 0, 1))
            result = self._capture(full, P, T, inputs, groups, report)

        rows_cols = self.adapter.image_grid(int(sum(e - s for s, e in groups["image"])))
        L = self.adapter.num_layers
        analysis = Analysis(
            model=self.info,
            question=question,
            prompt=prompt,
            answer=self._decode(answer_ids),
            answer_token_ids=answer_ids,
            tokens=self.tokenizer.convert_ids_to_tokens(full[0].tolist()),
            groups=groups,
            image_grid=rows_cols,
            image=np.asarray(pil, dtype=np.uint8),
            image_box=self.adapter.visible_box(*pil.size),
            shares=result["head_shares"].mean(axis=1),
            head_shares=result["head_shares"],
            cam=result["cam"].reshape(L, *rows_cols),
            answer_logprobs=result["answer_logprobs"],
            image_attention=result["image_attention"],
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            flowtui_version=__version__,
            ended_with_eos=ended,
            max_new_tokens=max_new_tokens,
        )
        self._remember(analysis, result["state"])
        return analysis

    def _forward_recording(
        self, full: torch.Tensor, T: int, pixel_inputs: dict[str, torch.Tensor], with_cam: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor], dict]:
        """One teacher-forced forward that keeps every layer's input and (for CAM) site output.

        Returns (logits at the last T+1 positions, layer inputs, CAM-site activations, and each
        layer's keys/values).
        """
        layers = list(self.adapter.layers)
        hidden: list[torch.Tensor] = [None] * len(layers)  # type: ignore[list-item]
        sites: list[torch.Tensor] = [None] * len(layers)  # type: ignore[list-item]
        handles = []

        def keep_input(i: int):
            def hook(_mod, args, kwargs):
                h = args[0] if args else kwargs["hidden_states"]
                hidden[i] = h.detach()

            return hook

        def keep_site(i: int):
            def hook(_mod, _args, out):
                sites[i] = out

            return hook

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
                out = self.model(
                    input_ids=full,
                    attention_mask=torch.ones_like(full),
                    **pixel_inputs,
                    use_cache=False,
                    logits_to_keep=T + 1,
                )
        finally:
            for h in handles:
                h.remove()
        return out.logits[0], hidden, sites, kv

    def _capture(self, full, P, T, pixel_inputs, groups, report) -> dict[str, Any]:
        cap = attention.ShareCapture.for_groups(groups, GROUPS, T)
        img_pos = cap.image_positions
        with attention.capturing(cap):
            logits, hidden, sites, kv = self._forward_recording(full, T, pixel_inputs, with_cam=True)
        L = self.adapter.num_layers
        answer = full[0, P:].to(logits.device)
        idx = torch.arange(T, device=logits.device)
        report(Progress("cam", 0, 1))
        # The paper's target: the raw logit of each answer token at its query, summed.
        target = logits[idx, answer].sum()
        grads = torch.autograd.grad(target, sites, allow_unused=True)
        cams = np.zeros((L, len(img_pos)), dtype=np.float32)
        for layer, (a, g) in enumerate(zip(sites, grads, strict=True)):
            if g is None:
                continue
            cams[layer] = cam_from(a[0, img_pos.to(a.device)], g[0, img_pos.to(g.device)])
        report(Progress("cam", 1, 1))
        logits = logits.detach().float()
        logprobs = torch.log_softmax(logits[:T], dim=-1)[idx, answer]
        head_shares = torch.stack([cap.head_shares[i] for i in range(L)]).numpy()
        image_attention = torch.stack([cap.image_attention[i] for i in range(L)]).numpy()
        state = _State(
            input_ids=full,
            prompt_ids=full[:, :P],
            pixel_inputs=pixel_inputs,
            hidden=hidden,
            logits=logits,
            image_attention=image_attention,
            kv=kv,
        )
        return {
            "head_shares": head_shares.astype(np.float32),
            "cam": cams,
            "answer_logprobs": logprobs.cpu().numpy().astype(np.float32),
            "image_attention": image_attention.astype(np.float32),
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

    def _remember(self, a: Analysis, state: _State) -> None:
        key = self._key(a)  # hashes the whole image: once
        self._states[key] = state
        self._states.move_to_end(key)
        while len(self._states) > self._max_states:
            self._states.popitem(last=False)

    def _state(self, a: Analysis, report: ProgressFn) -> _State:
        key = self._key(a)
        if key in self._states:
            self._states.move_to_end(key)
            return self._states[key]
        # A reopened snapshot or an evicted analysis: rebuild the baseline's residual stream.
        report(Progress("capturing", 0, 1, "rebuilding the baseline"))
        _, inputs = self._inputs(load_image(a.image), a.question)
        prompt_ids = inputs.pop("input_ids")
        inputs.pop("attention_mask", None)
        if a.groups["output"] and prompt_ids.shape[1] != a.prompt_length:
            raise InputError(
                f"this analysis was made with {a.model.name}; its prompt does not match the "
                f"loaded model {self.info.name} ({a.prompt_length} vs {prompt_ids.shape[1]} tokens)"
            )
        if self.adapter.num_layers != a.num_layers:
            raise InputError(
                f"this analysis has {a.num_layers} layers but {self.info.name} has "
                f"{self.adapter.num_layers}; load the model it was made with"
            )
        T = len(a.answer_token_ids)
        full = torch.cat([prompt_ids, torch.tensor([a.answer_token_ids], device=self.device)], 1)
        cap = attention.ShareCapture.for_groups(a.groups, GROUPS, T)
        with torch.no_grad(), attention.capturing(cap):
            logits, hidden, _, kv = self._forward_recording(full, T, inputs, with_cam=False)
        image_attention = torch.stack(
            [cap.image_attention[i] for i in range(self.adapter.num_layers)]
        ).numpy()
        state = _State(full, prompt_ids, inputs, hidden, logits.float(), image_attention, kv)
        self._remember(a, state)
        return state

    # --- truncation -------------------------------------------------------------------------------
    def _truncation(
        self, a: Analysis, st: _State, layer: int, strategy: str, keep: int | None, seed: int
    ) -> attention.Truncation:
        L = self.adapter.num_layers
        if not isinstance(layer, int | np.integer) or not 0 <= layer <= L:
            raise InputError(f"truncation layer must be between 0 and {L}, got {layer!r}")
        if strategy not in STRATEGIES:
            raise InputError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
        img = a.image_positions
        if strategy == "all":
            masked = img
        else:
            if keep is None or not 0 <= int(keep) <= len(img):
                raise InputError(
                    f"strategy {strategy!r} needs keep=R with 0 <= R <= {len(img)} image tokens"
                )
            keep = int(keep)
            if strategy == "top":
                # FastV: rank by attention from the last prompt position at the last intact layer.
                ranked = np.argsort(-st.image_attention[max(layer - 1, 0)], kind="stable")
                kept = ranked[:keep]
            else:
                kept = np.random.default_rng(seed).choice(len(img), size=keep, replace=False)
            masked = np.delete(img, kept)
        return attention.Truncation(int(layer), torch.as_tensor(np.sort(masked), dtype=torch.long))

    def _logits_from_layer(
        self, st: _State, trunc: attention.Truncation
    ) -> tuple[torch.Tensor, dict[int, tuple[torch.Tensor, torch.Tensor]]]:
        """Teacher-forced logits (answer queries + last position) with layers >= K truncated,
        and the keys/values of every layer under that truncation.

        Layers below K see exactly what the baseline saw, so their output is reused: only layers
        K..L-1 run, from the stored input of layer K.
        """
        K = trunc.layer
        if K >= self.adapter.num_layers:
            return st.logits, st.kv
        text = self.adapter.text_model
        T1 = st.logits.shape[0]
        full_stack = text.layers
        text.layers = nn.ModuleList(list(full_stack)[K:])
        try:
            with torch.no_grad(), attention.truncated(trunc), attention.recording_kv() as kv:
                out = text(
                    inputs_embeds=st.hidden[K],
                    attention_mask=torch.ones_like(st.input_ids),
                    use_cache=False,
                )
        finally:
            text.layers = full_stack
        kv = {i: st.kv[i] if i < K else kv[i] for i in range(self.adapter.num_layers)}
        return self.adapter.lm_head(out.last_hidden_state[0, -T1:]).float(), kv

    def _compare(self, a: Analysis, logits: torch.Tensor) -> tuple[float, int | None, int | None]:
        """(baseline log-prob, first index where greedy departs from the baseline, its token)."""
        b = torch.tensor(a.answer_token_ids, device=logits.device)
        T = len(b)
        logprob = float(torch.log_softmax(logits[:T], dim=-1)[torch.arange(T), b].sum())
        pred = logits.index_fill(1, torch.tensor([self.adapter.image_token_id]), float("-inf"))
        pred = pred.argmax(dim=-1)  # as generate() picks: the image placeholder suppressed
        diff = torch.nonzero(pred[:T] != b)
        if len(diff):
            j = int(diff[0])
            return logprob, j, int(pred[j])
        if a.ended_with_eos and int(pred[T]) not in self.adapter.eos_token_ids:
            return logprob, T, int(pred[T])
        return logprob, None, None

    def _rerun(
        self,
        a: Analysis,
        st: _State,
        trunc: attention.Truncation,
        on_token: TokenFn | None = None,
        cancel: CancelFn | None = None,
    ) -> tuple[list[int], float, bool]:
        """Greedy answer and baseline log-prob under truncation `trunc`.

        Greedy decoding agrees with the teacher-forced baseline up to the first token where the
        argmax differs; only from there on does it need real cached decoding (with the mask).
        """
        logits, kv = self._logits_from_layer(st, trunc)
        logprob, j, token = self._compare(a, logits)
        b = list(a.answer_token_ids)
        if j is None:
            if on_token:
                on_token(self._decode(b))
            return b, logprob, True
        ids = b[:j] + [token]
        if on_token:
            on_token(self._decode(ids))
        if token in self.adapter.eos_token_ids:
            return b[:j], logprob, False
        budget = a.max_new_tokens - len(ids)
        if budget > 0:
            # Everything before the departing token is already in `kv` (baseline below K, the
            # truncated pass from K on), so decoding continues from there with no prefill.
            n = st.prompt_ids.shape[1] + j
            cache = DynamicCache(
                ddp_cache_data=[(k[:, :, :n], v[:, :, :n]) for k, v in (kv[i] for i in sorted(kv))],
                config=self.adapter.text_config,
            )
            prefix = torch.cat([st.prompt_ids, torch.tensor([ids], device=self.device)], dim=1)

            def on_ids(new: list[int]) -> None:
                if on_token:
                    on_token(self._decode(ids + self._split_eos(new)[0]))

            with attention.truncated(trunc):
                more = self._generate(prefix, {}, budget, on_ids, cancel, cache=cache)
            ids = ids + more
        ids, _ = self._split_eos(ids)
        return ids, logprob, False

    def truncate(
        self,
        analysis: Analysis,
        layer: int,
        strategy: str = "all",
        keep: int | None = None,
        seed: int = 0,
        on_token: TokenFn | None = None,
        progress: ProgressFn | None = None,
        record: bool = True,
    ) -> TruncationRun:
        report = progress or _noop
        start = time.perf_counter()
        with self._lock:
            st = self._state(analysis, report)
            trunc = self._truncation(analysis, st, layer, strategy, keep, seed)
            report(Progress("truncating", 0, 1, f"K={layer}"))
            ids, logprob, same = self._rerun(analysis, st, trunc, on_token)
        run = TruncationRun(
            layer=int(layer),
            strategy=strategy,
            keep=None if strategy == "all" else int(keep),  # type: ignore[arg-type]
            seed=seed if strategy == "random" else None,
            answer=self._decode(ids),
            answer_token_ids=ids,
            baseline_logprob=logprob,
            same=same,
            seconds=time.perf_counter() - start,
        )
        report(Progress("truncating", 1, 1, f"K={layer}"))
        if record:
            analysis.truncations.append(run)
        return run

    def sweep(
        self,
        analysis: Analysis,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> Sweep:
        report = progress or _noop
        start = time.perf_counter()
        L = self.adapter.num_layers
        logprob = np.zeros(L + 1, dtype=np.float32)
        same = np.zeros(L + 1, dtype=bool)
        answers: list[str] = []
        with self._lock:
            st = self._state(analysis, report)
            for K in range(L + 1):
                if cancel is not None and cancel():
                    raise Cancelled(f"sweep cancelled at K={K}")
                report(Progress("sweep", K, L + 1, f"K={K}"))
                trunc = self._truncation(analysis, st, K, "all", None, 0)
                ids, logprob[K], same[K] = self._rerun(analysis, st, trunc, cancel=cancel)
                answers.append(self._decode(ids))
        result = Sweep(logprob, same, answers, cliff_layer(same), time.perf_counter() - start)
        report(Progress("sweep", L + 1, L + 1, "done"))
        analysis.set_sweep(result)
        return result


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
