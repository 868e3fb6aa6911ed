"""The logit lens on image tokens (docs/definitions.md, "Logit lens on image tokens").

For every layer l and feature token i: the decoder's own final norm and output head (with
Cohere's logit scale and Gemma's final soft-cap where the model's own forward applies them:
FamilyAdapter.logits) on the residual stream after layer l at that token, softmaxed over the
vocabulary. Kept: the top-5 tokens with their probabilities, and one chosen word's probability.

The residual stream after layer l is what layer l+1 reads (the recording pass keeps it:
`State.hidden[l + 1]`), and after the last layer what the final norm reads (`State.final`).
Where a text model adds to the stream between layers (Qwen3-VL's DeepStack features) that
addition is part of it, as it is of what the model would output if it stopped after layer l.

No forward pass is needed: the stream is the recording's. Rows go through the head in chunks
so that only chunk x vocabulary logits exist at a time; what is kept is O(N * 5) per layer.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from flowtui.engine import compat
from flowtui.engine.analysis import Analysis, Lens, Progress, ProgressFn, no_progress
from flowtui.engine.errors import Cancelled, InputError
from flowtui.engine.interface import CancelFn

if TYPE_CHECKING:
    from flowtui.engine.families import FamilyAdapter
    from flowtui.engine.recording import State

TOP_K = 5
# Logits held at once, in float32 elements (64 MiB): the chunk is this over the vocabulary.
CHUNK_ELEMENTS = 1 << 24


def word_token(tokenizer, word: str) -> tuple[int, str]:
    """The token id a typed word stands for, and that token's text: the word itself where it is
    one vocabulary entry (`yes`, `▁red`, `Ġcircle`), else the first token the tokenizer splits
    it into. Raises InputError on an empty word or one the tokenizer makes nothing of."""
    if not isinstance(word, str) or not word.strip():
        raise InputError("the lens word is empty")
    word = word.strip()
    vocab = tokenizer.get_vocab()
    if word in vocab:
        tid = int(vocab[word])
    else:
        ids = tokenizer.encode(word, add_special_tokens=False)
        if not ids:
            raise InputError(f"the tokenizer makes no token of {word!r}")
        tid = int(ids[0])
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and tid == unk and word != getattr(tokenizer, "unk_token", None):
        raise InputError(f"{word!r} is not in the model's vocabulary (it reads as unknown)")
    return tid, token_text(tokenizer, tid)


def token_text(tokenizer, tid: int) -> str:
    """A token as a reader sees it: decoded, or its vocabulary name where decoding gives
    nothing visible (special tokens, a lone space)."""
    text = tokenizer.decode([int(tid)], skip_special_tokens=False)
    if text.strip():
        return text.strip()
    name = tokenizer.convert_ids_to_tokens(int(tid))
    return str(name) if name is not None else f"#{int(tid)}"


@torch.no_grad()
def lens_rows(norm, head, stream: torch.Tensor, word_id: int, k: int = TOP_K,
              chunk_elements: int = CHUNK_ELEMENTS) -> tuple[np.ndarray, ...]:
    """top ids [n, k], top probs [n, k] and the word's probability [n] for the rows of
    `stream` [n, D], through `norm` then `head` (hidden -> logits), a chunk of rows at a time."""
    n = stream.shape[0]
    ids = np.zeros((n, k), dtype=np.int32)
    probs = np.zeros((n, k), dtype=np.float32)
    word = np.zeros(n, dtype=np.float32)
    dev = next(iter(norm.parameters()), stream).device
    start = 0
    step = None
    while start < n:
        rows = stream[start:start + (step or 1)].to(dev)
        logits = head(norm(rows)).float()
        if step is None:  # the vocabulary is known after the first row
            step = max(1, chunk_elements // max(1, logits.shape[-1]))
        logp = torch.log_softmax(logits, dim=-1)
        top = logp.topk(min(k, logp.shape[-1]), dim=-1)
        end = start + rows.shape[0]
        ids[start:end, :top.indices.shape[1]] = top.indices.cpu().numpy()
        probs[start:end, :top.values.shape[1]] = top.values.exp().cpu().numpy()
        word[start:end] = logp[:, word_id].exp().cpu().numpy()
        start = end
    return ids, probs, word


class Lenses:
    """The logit lens, for LocalEngine (mixed in beside Recording and Reruns)."""

    # What LocalEngine (and Recording) provide (declared for the type checker only).
    adapter: FamilyAdapter
    _lock: threading.RLock
    if TYPE_CHECKING:
        @property
        def tokenizer(self) -> Any: ...
        def _state(self, a: Analysis, report: ProgressFn) -> State: ...

    def lens(self, analysis: Analysis, word: str | None = None,
             progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> Lens:
        """The logit lens on every layer and feature token. `word` None: the baseline answer's
        first token, and the result is kept as `analysis.lens` (what a snapshot stores);
        another word gives its own Lens and leaves the analysis as it was."""
        report = progress or no_progress
        if word is None:
            word_id = int(analysis.answer_token_ids[0])
            text = token_text(self.tokenizer, word_id)
        else:
            word_id, text = word_token(self.tokenizer, word)
        L = self.adapter.num_layers
        feats = torch.as_tensor(np.asarray(analysis.feature_positions), dtype=torch.long)
        top_ids = np.zeros((L, len(feats), TOP_K), dtype=np.int32)
        top_probs = np.zeros((L, len(feats), TOP_K), dtype=np.float32)
        word_prob = np.zeros((L, len(feats)), dtype=np.float32)
        with self._lock:
            st = self._state(analysis, report)
            if st.final is None:
                raise InputError("this analysis' state has no final residual stream")
            norm = compat.final_norm(self.adapter.text_model)
            with torch.no_grad():
                for layer in range(L):
                    if cancel is not None and cancel():
                        raise Cancelled(f"lens cancelled at layer {layer}")
                    report(Progress("lens", layer, L, f"layer {layer}"))
                    h = st.hidden[layer + 1] if layer + 1 < L else st.final
                    rows = h[0, feats.to(h.device)]
                    top_ids[layer], top_probs[layer], word_prob[layer] = lens_rows(
                        norm, self.adapter.logits, rows, word_id)
        report(Progress("lens", L, L, "done"))
        ids = sorted({int(t) for t in np.unique(top_ids)} | {word_id})
        result = Lens(word=text, word_id=word_id, top_ids=top_ids, top_probs=top_probs,
                      word_prob=word_prob,
                      strings={t: token_text(self.tokenizer, t) for t in ids})
        if word is None:
            analysis.lens = result
        return result
