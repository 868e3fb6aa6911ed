"""The in-process engine: runs the model, computes shares, LLaVA-CAM, truncations and sweeps.

LocalEngine is the Engine interface; its jobs live in their own modules: the recording pass
(recording.py), reruns and sweeps (reruns.py), the logit lens (lens.py), the self-checks
(selfcheck.py).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from flowtui import versions
from flowtui.engine import attention, compat, selfcheck
from flowtui.engine.analysis import (
    Analysis,
    CamSettings,
    ModelInfo,
    Progress,
    ProgressFn,
    no_progress,
)
from flowtui.engine.errors import FlowtuiError, InputError
from flowtui.engine.families import FamilyAdapter, Layout
from flowtui.engine.images import load_image, load_image_notes
from flowtui.engine.interface import ImageInput, LogFn
from flowtui.engine.knockout import Knockouts
from flowtui.engine.lens import Lenses
from flowtui.engine.notes import QuestionForms, question_notes
from flowtui.engine.recording import Recording, State
from flowtui.version import __version__

if TYPE_CHECKING:
    from transformers import PreTrainedModel


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


class LocalEngine(Recording, Knockouts, Lenses):
    """Implements flowtui.engine.interface.Engine on a model loaded in this process."""

    def __init__(self, model: PreTrainedModel, processor: Any, adapter: FamilyAdapter,
                 info: ModelInfo, question_forms: QuestionForms | None = None):
        self.model = model
        # The questions the model says it answers (its folder's flowtui.json): others get a note.
        self.question_forms = question_forms
        self.location: str | None = None  # this process
        self.on_log: LogFn | None = None  # an in-process engine logs nothing of its own
        self.processor = processor
        self.adapter = adapter
        self.info = info
        # One model call at a time: reruns temporarily swap decoder layers.
        self._lock = threading.RLock()
        self._states: OrderedDict[str, State] = OrderedDict()
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
            # generate comes from GenerationMixin, which every image-text-to-text model mixes in
            out = self.model.generate(  # type: ignore[operator]
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

    def close(self) -> None:
        """Nothing to end in-process (the model stays loaded for whoever holds the engine)."""

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
        per_token: bool = False,
    ) -> Analysis:
        report = progress or no_progress
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
            result = self._capture(full, P, T, groups, feats, report, cam, per_token)

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
            token_head_shares=result["token_head_shares"],
            token_attention=result["token_attention"],
            token_cam=result["token_cam"],
            cam_settings=CamSettings(
                site=self.adapter.cam_site_name(self.adapter.layers[0]), computed=cam
            ),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            flowtui_version=__version__,
            ended_with_eos=ended,
            max_new_tokens=max_new_tokens,
            # An untested torch/transformers travels with the analysis (snapshot, explorer).
            notes=notes + question_notes(self.tokenizer, self.info.name, question,
                                          self.question_forms)
            + versions.startup_warnings(),
        )
        assert analysis.cam_tokens.shape == (L, len(feats))
        if self_check:
            report(Progress("checking", 0, 1, "self-checks"))
            with self._lock:
                analysis.checks = selfcheck.run(self, analysis, result["state"])
            report(Progress("checking", 1, 1, "self-checks"))
        self._remember(analysis, result["state"])
        return analysis
