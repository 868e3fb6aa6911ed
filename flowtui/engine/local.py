"""The in-process engine: runs the model, computes shares, LLaVA-CAM, truncations and sweeps."""

from __future__ import annotations

import hashlib
import string
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch
from torch import nn

from flowtui import versions
from flowtui.engine import attention, compat, selfcheck
from flowtui.engine.analysis import (
    GROUPS,
    Analysis,
    CamSettings,
    ModelInfo,
    Progress,
    ProgressFn,
    Sweep,
    TruncationRun,
    cliff_layer,
)
from flowtui.engine.errors import Cancelled, FlowtuiError, InputError
from flowtui.engine.families import FamilyAdapter, Layout
from flowtui.engine.images import load_image, load_image_notes
from flowtui.engine.interface import CancelFn, ImageInput, TokenFn
from flowtui.engine.loading import TOY_NAME
from flowtui.toy.scenes import COLOURS, SHAPES, parse_question
from flowtui.version import __version__

STRATEGIES = ("all", "top", "random")

# Per layer: its keys and values over the whole sequence.
_KV = dict[int, tuple[torch.Tensor, torch.Tensor]]


def _noop(_: Progress) -> None:
    pass


@dataclass
class _State:
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

    @property
    def input_ids(self) -> torch.Tensor:
        return self.full["input_ids"]


class _Skip(nn.Module):
    """Stands in for a decoder layer below K during a rerun: its output is already known."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        for name in ("attention_type", "layer_type", "is_sliding", "sliding_window", "layer_idx"):
            if hasattr(layer, name):
                setattr(self, name, getattr(layer, name))

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states


def _without_cache(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A captured call's kwargs with no cache under any name: a rerun is a fresh pass, and
    handing a decoder both names makes transformers 5.24+ warn."""
    return {k: v for k, v in kwargs.items() if k not in compat.CACHE_NAMES}


def _detached(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, dict):
        return {k: _detached(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(_detached(v) for v in x)
    return x


class _Streamer(compat.BaseStreamer):
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


class LocalEngine:
    """Implements flowtui.engine.interface.Engine on a model loaded in this process."""

    def __init__(self, model: nn.Module, processor: Any, adapter: FamilyAdapter, info: ModelInfo):
        self.model = model
        self.processor = processor
        self.adapter = adapter
        self.info = info
        # One model call at a time: reruns temporarily swap decoder layers.
        self._lock = threading.RLock()
        self._states: OrderedDict[str, _State] = OrderedDict()
        self._max_states = 4
        attention.register()
        # Only the language model gets flowtui's attention; the vision tower keeps its own.
        adapter.text_config._attn_implementation = attention.NAME
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
            if isinstance(v, torch.Tensor):
                v = v.to(self.device)
                v = v.to(dtype) if v.is_floating_point() else v
            out[k] = v
        return prompt, out

    def _generate(
        self,
        inputs: dict[str, torch.Tensor],
        max_new_tokens: int,
        on_ids=None,
    ) -> list[int]:
        """The model's own greedy answer, through its own generate()."""
        kwargs: dict[str, Any] = {}
        if on_ids is not None:
            kwargs["streamer"] = _Streamer(on_ids)
        with torch.no_grad():
            out = self.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                # Image placeholders are input-only; emitting one would corrupt the sequence.
                suppress_tokens=self.adapter.suppressed_token_ids,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                **kwargs,
            )
        return [int(t) for t in out[0, inputs["input_ids"].shape[1]:].tolist()]

    def _split_eos(self, ids: list[int]) -> tuple[list[int], bool]:
        eos = self.adapter.eos_token_ids
        for i, t in enumerate(ids):
            if t in eos:
                return ids[:i], True
        return ids, False

    def _groups(self, prompt_ids: np.ndarray, answer_len: int) -> dict[str, list[tuple[int, int]]]:
        spans = self.adapter.image_spans(prompt_ids)
        p = len(prompt_ids)
        # Text between image blocks (Gemma 3's pan & scan: "... and here are some crops ...")
        # is prompt text after the image: it joins the user group, so the groups still
        # cover every position once.
        ends = [e for _, e in spans]
        starts = [s for s, _ in spans[1:]] + [p]
        return {
            "system": [(0, spans[0][0])] if spans[0][0] > 0 else [],
            "image": spans,
            "user": [(e, s) for e, s in zip(ends, starts, strict=True) if s > e],
            "output": [(p, p + answer_len)],
        }

    def _check_context(self, prompt_len: int, max_new_tokens: int) -> None:
        """Refuse a prompt (plus the answer budget) longer than the model was made for: past
        its context the numbers would be silently meaningless."""
        limit = getattr(self.adapter.text_config, "max_position_embeddings", None)
        if limit and prompt_len + max_new_tokens > int(limit):
            raise InputError(
                f"the prompt is {prompt_len} tokens (with the image) and the answer may take "
                f"{max_new_tokens} more, past {self.info.name}'s context length of {int(limit)} "
                "tokens; ask a shorter question or lower --max-new-tokens"
            )

    def _question_notes(self, question: str) -> list[str]:
        """What a first-time user should know about the question: words the tokenizer does not
        know (read as its unk token, so the answer cannot be about them), and for the built-in
        toy, a question outside the one form it was trained on."""
        notes = []
        tok = self.tokenizer
        unk = getattr(tok, "unk_token_id", None)
        if unk is not None:
            unknown: list[str] = []
            for word in question.split():
                word = word.strip(string.punctuation) or word
                if word not in unknown and unk in tok(word, add_special_tokens=False)["input_ids"]:
                    unknown.append(word)
            if unknown:
                shown = ", ".join(repr(w) for w in unknown[:5]) + (" …" if len(unknown) > 5 else "")
                notes.append(f"{self.info.name}'s tokenizer does not know {shown} (read as "
                             f"{tok.unk_token}): the answer cannot be about "
                             f"{'it' if len(unknown) == 1 else 'them'}")
        if self.info.name == TOY_NAME and parse_question(question) is None:
            notes.append(
                "the built-in toy model only answers \"Is there a {colour} {shape}?\" (colours "
                f"{', '.join(COLOURS)}; shapes {', '.join(SHAPES)}): its answer to anything "
                "else means nothing"
            )
        return notes

    def count_image_tokens(self, image: ImageInput) -> int:
        """How many feature tokens the model makes of `image` (what keep=R counts), from the
        processor alone: a bad R is refused before the model generates anything."""
        _, inputs = self.adapter.build_inputs(load_image(image), "?")
        return len(self.adapter.feature_positions(inputs["input_ids"][0].cpu().numpy()))

    def _layout(self, size: tuple[int, int], inputs: dict, feats: np.ndarray) -> Layout:
        layout = self.adapter.layout(size, inputs)
        if len(layout) != len(feats):
            raise FlowtuiError(
                f"{self.adapter.family}: the layout has {len(layout)} regions for "
                f"{len(feats)} feature tokens; this processor configuration is not supported"
            )
        return layout

    # --- analysis ----------------------------------------------------------------------------
    def analyze(
        self,
        image: ImageInput,
        question: str,
        max_new_tokens: int = 32,
        progress: ProgressFn | None = None,
        cam: bool = True,
        self_check: bool = True,
    ) -> Analysis:
        report = progress or _noop
        if not isinstance(question, str) or not question.strip():
            raise InputError("the question is empty")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        pil, notes = load_image_notes(image)
        question = question.strip()
        with self._lock:
            prompt, inputs = self._inputs(pil, question)
            prompt_ids = inputs["input_ids"][0].cpu().numpy()
            P = len(prompt_ids)
            self._check_context(P, max_new_tokens)
            feats = self.adapter.feature_positions(prompt_ids)
            layout = self._layout(pil.size, inputs, feats)
            report(Progress("generating", 0, max_new_tokens))

            def on_ids(ids: list[int]) -> None:
                report(Progress("generating", len(ids), max_new_tokens, self._decode(ids)))

            generated = self._generate(inputs, max_new_tokens, on_ids)
            answer_ids, ended = self._split_eos(generated)
            if not answer_ids:
                raise FlowtuiError("the model's answer is empty (it stopped at once); nothing to analyze")
            T = len(answer_ids)
            full = self.adapter.teacher_forced(inputs, answer_ids)
            groups = self._groups(prompt_ids, T)
            report(Progress("capturing", 0, 1))
            result = self._capture(full, P, T, groups, feats, report, cam)

        L = self.adapter.num_layers
        analysis = Analysis(
            model=self.info,
            question=question,
            prompt=prompt,
            answer=self._decode(answer_ids),
            answer_token_ids=answer_ids,
            tokens=self.tokenizer.convert_ids_to_tokens(full["input_ids"][0].tolist()),
            groups=groups,
            image=np.asarray(pil, dtype=np.uint8),
            shares=result["head_shares"].mean(axis=1),
            head_shares=result["head_shares"],
            answer_logprobs=result["answer_logprobs"],
            cam_tokens=result["cam"],
            token_regions=layout.regions,
            token_views=layout.token_views,
            views=list(layout.views),
            feature_positions=feats,
            image_grid=layout.grid,
            image_attention=result["rank_attention"],
            attention_tokens=result["answer_attention"],
            cam_settings=CamSettings(
                site=self.adapter.cam_site_name(self.adapter.layers[0]), computed=cam
            ),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            flowtui_version=__version__,
            ended_with_eos=ended,
            max_new_tokens=max_new_tokens,
            # An untested torch/transformers travels with the analysis (snapshot, explorer).
            notes=notes + self._question_notes(question) + versions.startup_warnings(),
        )
        assert analysis.cam_tokens.shape == (L, len(feats))
        if self_check:
            report(Progress("checking", 0, 1, "self-checks"))
            with self._lock:
                analysis.checks = selfcheck.run(self, analysis, result["state"])
            report(Progress("checking", 1, 1, "self-checks"))
        self._remember(analysis, result["state"])
        return analysis

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

        handles.append(
            self.adapter.text_model.register_forward_pre_hook(keep_call, with_kwargs=True)
        )
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
                "text_args": call["args"], "text_kwargs": call["kwargs"]}

    def _capture(self, full, P, T, groups, feats, report, cam: bool = True) -> dict[str, Any]:
        cap = attention.ShareCapture.for_groups(groups, GROUPS, T, feats)
        with attention.capturing(cap):
            rec = self._forward_recording(full, T, with_cam=cam)
        logits, sites = rec["logits"], rec["sites"]
        L = self.adapter.num_layers
        answer = full["input_ids"][0, P:].to(logits.device)
        idx = torch.arange(T, device=logits.device)
        cams = np.zeros((L, len(feats)), dtype=np.float32)
        if cam:
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
        state = _State(
            full=full,
            prompt_len=P,
            text_args=rec["text_args"],
            text_kwargs=rec["text_kwargs"],
            hidden=rec["hidden"],
            logits=logits,
            rank_attention=rank,
            kv=rec["kv"],
        )
        return {
            "head_shares": head_shares.astype(np.float32),
            "cam": cams,
            "answer_logprobs": logprobs.cpu().numpy().astype(np.float32),
            "rank_attention": rank.astype(np.float32),
            "answer_attention": answer_attention.astype(np.float32),
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
        if not np.array_equal(feats, a.feature_positions):
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
        state = _State(full, P, rec["text_args"], rec["text_kwargs"], rec["hidden"],
                       rec["logits"].float(), rank, rec["kv"])
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
        img, feats = a.image_positions, np.asarray(a.feature_positions)
        if strategy == "all":
            masked = img
        else:
            if keep is None or not 0 <= int(keep) <= len(feats):
                raise InputError(
                    f"strategy {strategy!r} needs keep=R with 0 <= R <= {len(feats)} image tokens"
                )
            keep = int(keep)
            if strategy == "top":
                # FastV: rank by attention from the last prompt position at the last intact layer.
                ranked = np.argsort(-st.rank_attention[max(layer - 1, 0)], kind="stable")
                kept = feats[ranked[:keep]]
            else:
                kept = feats[np.random.default_rng(seed).choice(len(feats), size=keep, replace=False)]
            # Markers and separators carry no feature of their own: only kept features stay.
            masked = np.setdiff1d(img, kept)
        return attention.Truncation(int(layer), torch.as_tensor(np.sort(masked), dtype=torch.long))

    @contextmanager
    def _from_layer(self, K: int, hidden: torch.Tensor) -> Iterator[None]:
        """Layers below K become pass-throughs and layer K gets the baseline's input: the text
        model's own forward then builds masks, positions and DeepStack additions as usual."""
        layers = self.adapter.layers
        saved = [layers[i] for i in range(K)]

        def inject(_mod, args, kwargs):
            if args:
                return (hidden, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": hidden}

        handle = layers[K].register_forward_pre_hook(inject, with_kwargs=True)
        try:
            for i in range(K):
                layers[i] = _Skip(saved[i])
            yield
        finally:
            for i, layer in enumerate(saved):
                layers[i] = layer
            handle.remove()

    def _logits_from_layer(
        self, st: _State, trunc: attention.Truncation, reduced: bool = True
    ) -> tuple[torch.Tensor, Callable[[], _KV]]:
        """Teacher-forced logits (answer queries + last position) with layers >= K truncated,
        and a function giving the keys/values of every layer under that truncation (only
        decoding needs them, only where the answer departs from the baseline).

        Layers below K see exactly what the baseline saw, so their output is reused: only layers
        K..L-1 run, from the stored input of layer K.
        """
        K = trunc.layer
        T1 = st.logits.shape[0]
        keep = self._kept_positions(st, trunc) if reduced else None
        if keep is not None:
            return self._logits_from_layer_kept(st, trunc, keep)
        kwargs = {**_without_cache(st.text_kwargs), "use_cache": False}
        with (
            torch.no_grad(),
            self._from_layer(K, st.hidden[K]),
            attention.truncated(trunc),
            attention.recording_kv() as kv,
        ):
            out = self.adapter.text_model(*st.text_args, **kwargs)
        kv = {i: st.kv[i] if i < K else kv[i] for i in range(self.adapter.num_layers)}
        last = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return self.adapter.logits(last[0, -T1:]).float(), lambda: kv

    def _kept_positions(self, st: _State, trunc: attention.Truncation) -> torch.Tensor | None:
        """The positions a rerun from K must compute, or None to run the full sequence.

        From layer K on, no query attends to a masked position, so what those positions compute
        there reaches nothing: layers K..L-1 need only the others, with their own position ids
        (RoPE sees the same relative positions) and a causal mask among them. Under strategy
        `all` that drops every image position: for LLaVA-1.5, 576 of about 600. Only where the
        family declares it exact (FamilyAdapter.reduced_rerun) and can cut every captured input
        to the kept positions (FamilyAdapter.reduced_text_kwargs), and never under a sliding
        window that is shorter than the sequence: its span counts positions.
        """
        if (not self.adapter.reduced_rerun or st.text_args or trunc.masked.numel() == 0
                or self._window_bites(st.hidden[trunc.layer].shape[1])):
            return None
        N = st.hidden[trunc.layer].shape[1]
        kept = torch.ones(N, dtype=torch.bool)
        kept[trunc.masked.cpu()] = False
        if not bool(kept[N - st.logits.shape[0]:].all()):  # the answer queries must stay
            return None
        keep = torch.nonzero(kept).squeeze(1)
        if self.adapter.reduced_text_kwargs(st.text_kwargs, keep) is None:
            return None  # an input the family cannot cut: the full pass
        return keep

    def _window_bites(self, n: int) -> bool:
        """Whether a sliding window could hide a key from a query in a sequence of n positions
        (a window of n or more never does, and then counts nothing)."""
        cfg = self.adapter.text_config
        types = getattr(cfg, "layer_types", None) or ()
        sliding = any("sliding" in str(t) for t in types) or (
            getattr(cfg, "sliding_window", None) is not None
            and getattr(cfg, "use_sliding_window", True) is not False)
        window = getattr(cfg, "sliding_window", None)
        return sliding and (window is None or int(window) < n)

    def _logits_from_layer_kept(
        self, st: _State, trunc: attention.Truncation, keep: torch.Tensor
    ) -> tuple[torch.Tensor, Callable[[], _KV]]:
        """_logits_from_layer on the kept positions only (see _kept_positions). The keys and
        values it returns span the full sequence again: the masked positions keep the
        baseline's, which decoding under the same truncation never reads."""
        K = trunc.layer
        T1 = st.logits.shape[0]
        idx = keep.to(st.hidden[K].device)
        kwargs = self.adapter.reduced_text_kwargs(st.text_kwargs, keep)
        if kwargs is None:  # _kept_positions asked the family already
            raise FlowtuiError(f"{self.adapter.family}: cannot cut the text inputs to {len(keep)} "
                               "positions")
        kwargs["use_cache"] = False
        with (
            torch.no_grad(),
            self._from_layer(K, st.hidden[K][:, idx]),
            attention.recording_kv() as kv,
        ):
            out = self.adapter.text_model(**kwargs)

        def full() -> _KV:  # full-length copies, built only if decoding continues
            spans: _KV = {}
            for i in range(self.adapter.num_layers):
                if i < K:
                    spans[i] = st.kv[i]
                    continue
                k, v = (t.clone() for t in st.kv[i])
                k[:, :, idx.to(k.device)] = kv[i][0].to(k.dtype)
                v[:, :, idx.to(v.device)] = kv[i][1].to(v.dtype)
                spans[i] = (k, v)
            return spans

        last = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return self.adapter.logits(last[0, -T1:]).float(), full

    def _masked_argmax(self, logits: torch.Tensor) -> torch.Tensor:
        """Greedy picks as generate() makes them: the input-only placeholders suppressed."""
        banned = torch.tensor(self.adapter.suppressed_token_ids, device=logits.device)
        return logits.index_fill(-1, banned, float("-inf")).argmax(dim=-1)

    def _compare(self, a: Analysis, logits: torch.Tensor) -> tuple[float, int | None, int | None]:
        """(baseline log-prob, first index where greedy departs from the baseline, its token)."""
        b = torch.tensor(a.answer_token_ids, device=logits.device)
        T = len(b)
        logprob = float(torch.log_softmax(logits[:T], dim=-1)[torch.arange(T), b].sum())
        pred = self._masked_argmax(logits)
        diff = torch.nonzero(pred[:T] != b)
        if len(diff):
            j = int(diff[0])
            return logprob, j, int(pred[j])
        if a.ended_with_eos and int(pred[T]) not in self.adapter.eos_token_ids:
            return logprob, T, int(pred[T])
        return logprob, None, None

    def _position_ids(self, st: _State, n: int) -> torch.Tensor:
        """Position ids of absolute position n, as the model's own forward would give them.

        They come from the baseline's (so Qwen's M-RoPE offsets after the image carry over) and
        step by one per token past the end of the teacher-forced sequence.
        """
        given = st.text_kwargs.get("position_ids")
        if given is None:
            return torch.tensor([[n]], device=self.device)
        N = given.shape[-1]
        if n < N:
            return given[..., n:n + 1]
        return given[..., N - 1:N] + (n - (N - 1))

    def _cache_before(self, kv: _KV, n: int) -> Any:
        """A KV cache holding every layer's keys/values of positions < n."""
        cache = compat.new_cache(self.adapter.text_config)
        for i in range(self.adapter.num_layers):
            # update() keeps each layer's own kind: a sliding layer trims to its window.
            cache.update(kv[i][0][:, :, :n], kv[i][1][:, :, :n], i)
        return cache

    def _step(self, st: _State, cache: Any, tok: int, n: int) -> torch.Tensor:
        """One cached decoding step: token `tok` at absolute position n; logits [1, V]."""
        text = self.adapter.text_model
        with attention.decoding_at(n + 1):
            out = text(
                input_ids=torch.tensor([[tok]], device=self.device),
                position_ids=self._position_ids(st, n),
                use_cache=True,
                **{compat.cache_kwarg(text): cache},
            )
        last = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return self.adapter.logits(last[0, -1:]).float()

    def _cached_step(
        self, st: _State, trunc: attention.Truncation | None, kv: _KV, ids: list[int]
    ) -> torch.Tensor:
        """Logits after the answer prefix `ids`, by one cached decoding step (the self-check
        compares it with the recording pass)."""
        n = st.prompt_len + len(ids) - 1
        with torch.no_grad(), attention.truncated(trunc):
            return self._step(st, self._cache_before(kv, n), ids[-1], n)

    def _continue(
        self,
        st: _State,
        trunc: attention.Truncation,
        kv: _KV,
        ids: list[int],
        budget: int,
        on_ids=None,
        cancel: CancelFn | None = None,
    ) -> list[int]:
        """Greedy decoding under `trunc` after the answer prefix `ids`, with a KV cache holding
        everything before the last of them (baseline below K, the truncated pass from K on)."""
        n = st.prompt_len + len(ids) - 1
        cache = self._cache_before(kv, n)
        eos = self.adapter.eos_token_ids
        tok, more = ids[-1], []
        with torch.no_grad(), attention.truncated(trunc):
            for _ in range(budget):
                tok = int(self._masked_argmax(self._step(st, cache, tok, n))[0])
                if tok in eos:
                    break
                more.append(tok)
                n += 1
                if on_ids is not None:
                    on_ids(more)
                if cancel is not None and cancel():
                    raise Cancelled("cancelled")
        return more

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
        b = list(a.answer_token_ids)
        if trunc.layer >= self.adapter.num_layers:
            # K = L is the unmodified model: the baseline itself, by definition.
            T = len(b)
            lp = torch.log_softmax(st.logits[:T], dim=-1)[torch.arange(T), torch.tensor(b)]
            if on_token:
                on_token(self._decode(b))
            return b, float(lp.sum()), True
        logits, kv_of = self._logits_from_layer(st, trunc)
        logprob, j, token = self._compare(a, logits)
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
            def on_ids(new: list[int]) -> None:
                if on_token:
                    on_token(self._decode(ids + new))

            ids = ids + self._continue(st, trunc, kv_of(), ids, budget, on_ids, cancel)
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
        strategy: str = "all",
        keep: int | None = None,
        seed: int = 0,
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
                trunc = self._truncation(analysis, st, K, strategy, keep, seed)
                ids, logprob[K], same[K] = self._rerun(analysis, st, trunc, cancel=cancel)
                answers.append(self._decode(ids))
        result = Sweep(logprob, same, answers, cliff_layer(same), time.perf_counter() - start,
                       strategy, None if strategy == "all" else keep,
                       seed if strategy == "random" else None)
        report(Progress("sweep", L + 1, L + 1, "done"))
        if strategy == "all":  # the analysis keeps the sweep the cliff is defined on (docs/definitions.md)
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
