"""Independent reference implementations, written from DESIGN.md's definitions.

They share no code with flowtui.engine and work on any family: eager attention with
output_attentions, the paper's per-layer CAM loop, a no-cache greedy loop over an eager masked
attention, and each feature token's pixels found by back-propagation (tests/support/regions.py, which stays with
the tests).

`flowtui doctor` runs the same references as the tests (flowtui.selftest.checks).

The prompt text is taken from the analysis (it is the input flowtui gave the processor);
everything else is rebuilt here from the processor, the config and DESIGN.md.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import AttentionInterface, AutoModelForImageTextToText
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from flowtui.engine.processors import load_processor  # loading is not what is under test

GROUP_ORDER = ("system", "image", "user", "output")


def load_eager(path):
    model = AutoModelForImageTextToText.from_pretrained(path, attn_implementation="eager")
    model.requires_grad_(False)
    return model.eval(), load_processor(path, model.config.model_type)


def language_model(model):
    inner = model.model
    return inner.language_model if hasattr(inner, "language_model") else inner.text_model


def image_token_id(model) -> int:
    c = model.config
    return int(c.image_token_id if getattr(c, "image_token_id", None) is not None else c.image_token_index)


def eos_token_ids(model, tokenizer) -> set[int]:
    """Where greedy decoding stops: the generation config's EOS ids, else the tokenizer's."""
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos if isinstance(eos, list) else [eos]) - {None}


def full_inputs(processor, analysis, answer_ids=None, model_type: str = ""):
    """Model kwargs for prompt + answer, and the prompt length, from the analysis' image and
    prompt text. Every per-token input is extended over the answer: with 0 (text), except
    PaliGemma's token_type_ids, which mark the answer (the suffix) with 1."""
    answer = list(analysis.answer_token_ids if answer_ids is None else answer_ids)
    inputs = dict(processor(images=[Image.fromarray(analysis.image)], text=analysis.prompt,
                            return_tensors="pt"))
    P = inputs["input_ids"].shape[1]
    extra = torch.tensor([answer], dtype=torch.long)
    out = {}
    for k, v in inputs.items():
        if k == "input_ids":
            v = torch.cat([v, extra], 1)
        elif k == "attention_mask":
            v = torch.ones(1, P + len(answer), dtype=v.dtype)
        elif isinstance(v, torch.Tensor) and v.dim() == 2 and v.shape == (1, P):
            fill = 1 if (model_type == "paligemma" and k == "token_type_ids") else 0
            v = torch.cat([v, torch.full((1, len(answer)), fill, dtype=v.dtype)], 1)
        out[k] = v
    return out, P


def _eager_attentions(path, analysis) -> tuple[tuple[torch.Tensor, ...], int, int, np.ndarray]:
    """One eager forward of prompt + answer with output_attentions: (every layer's attention
    [1, H, S, S], the prompt length P, the answer length T, the feature token positions)."""
    model, processor = load_eager(path)
    inputs, P = full_inputs(processor, analysis, model_type=model.config.model_type)
    feats = np.flatnonzero(inputs["input_ids"][0, :P].numpy() == image_token_id(model))
    with torch.no_grad():
        out = model(**inputs, output_attentions=True)
    return out.attentions, P, len(analysis.answer_token_ids), feats


def shares_eager(path, analysis) -> tuple[np.ndarray, np.ndarray]:
    """(shares [L,4], head_shares [L,H,4]) from eager output_attentions."""
    attentions, P, T, _ = _eager_attentions(path, analysis)
    head = []
    for A in attentions:
        rows = A[0, :, P - 1 : P - 1 + T, :].double()  # [H, T, N]
        per_group = []
        for g in GROUP_ORDER:
            cols = [k for s, e in analysis.groups[g] for k in range(s, e)]
            per_group.append(rows[:, :, cols].sum(-1).mean(-1))  # [H]
        head.append(torch.stack(per_group, -1))
    head_shares = torch.stack(head).numpy()
    return head_shares.mean(1), head_shares


def attention_maps_eager(path, analysis) -> tuple[np.ndarray, np.ndarray]:
    """Per layer and feature token: (last prompt position's head-mean attention, the answer's
    attention as mean over heads and answer queries)."""
    attentions, P, T, feats = _eager_attentions(path, analysis)
    last = np.stack([A[0, :, P - 1, feats].double().mean(0).numpy() for A in attentions])
    answer = np.stack(
        [A[0, :, P - 1 : P - 1 + T][:, :, feats].double().mean((0, 1)).numpy() for A in attentions]
    )
    return last, answer


def cam_site(layer) -> torch.nn.Module:
    """DESIGN.md: the norm that feeds the MLP."""
    if hasattr(layer, "pre_feedforward_layernorm"):
        return layer.pre_feedforward_layernorm
    if hasattr(layer, "post_attention_layernorm"):
        return layer.post_attention_layernorm
    return layer.input_layernorm  # parallel attention + MLP blocks (Cohere 2)


def token_rows_eager(path, analysis) -> tuple[np.ndarray, np.ndarray]:
    """Per answer token t (its query row P-1+t, nothing averaged over queries), from eager
    output_attentions: (head shares [T, L, H, 4], head-mean attention on each feature token
    [T, L, N])."""
    attentions, P, T, feats = _eager_attentions(path, analysis)
    shares = np.zeros((T, len(attentions), attentions[0].shape[1], 4))
    attn = np.zeros((T, len(attentions), len(feats)))
    for layer, A in enumerate(attentions):
        for t in range(T):
            row = A[0, :, P - 1 + t, :].double()  # [H, S]
            for gi, g in enumerate(GROUP_ORDER):
                cols = [k for s, e in analysis.groups[g] for k in range(s, e)]
                shares[t, layer, :, gi] = row[:, cols].sum(-1).numpy()
            attn[t, layer] = row[:, feats].mean(0).numpy()
    return shares, attn


def cam_per_layer_loop(path, analysis, token: int | None = None) -> np.ndarray:
    """The paper's loop: one forward + backward per layer, gradient at that layer's MLP input,
    over the feature tokens. The target is the sum of the answer tokens' logits, or with `token`
    the logit of that one answer token at its query. Returns [L, N]."""
    model, processor = load_eager(path)
    inputs, P = full_inputs(processor, analysis, model_type=model.config.model_type)
    T = len(analysis.answer_token_ids)
    img = np.flatnonzero(inputs["input_ids"][0, :P].numpy() == image_token_id(model)).tolist()
    emb = model.get_input_embeddings()
    cams = []
    for layer in language_model(model).layers:
        saved: dict[str, torch.Tensor] = {}

        def hook(_m, _a, out, saved=saved):
            out.retain_grad()
            saved["a"] = out

        handles = [
            cam_site(layer).register_forward_hook(hook),
            # The parameters are frozen: let the graph start at the input embeddings instead.
            emb.register_forward_hook(lambda _m, _a, out: out.detach().requires_grad_(True)),
        ]
        logits = model(**inputs).logits[0]
        chosen = range(T) if token is None else [token]
        target = sum(logits[P - 1 + t, analysis.answer_token_ids[t]] for t in chosen)
        target.backward()
        for h in handles:
            h.remove()
        a = saved["a"][0, img].detach().double()
        grad = saved["a"].grad
        assert grad is not None  # retained by the hook
        g = grad[0, img].double()
        w = torch.relu(g).mean(0)
        cam = torch.relu((w * a).mean(1))
        cams.append((cam / cam.max() if cam.max() > 0 else cam).numpy())
    return np.stack(cams)

def use_edited_attention(model, name: str, edit) -> None:
    """Give `model`'s text layers an eager attention under `name` whose allowed (query, key)
    matrix `edit(layer_idx, ok)` may change in place, on top of the model's own mask (causal,
    sliding windows, bidirectional image blocks); attention logits are soft-capped where the
    layer asks. One registered name per caller: its closure reads that caller's state. The mask
    function is registered too, or transformers would hand the layers no mask."""

    def attn(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
             softcap=None, **kw):
        groups = query.shape[1] // key.shape[1]
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
        scores = query @ key.transpose(2, 3) * scaling
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        n = key.shape[2]
        if attention_mask is None:
            ok = torch.ones(n, n, dtype=torch.bool).tril()
        else:
            ok = attention_mask[0, 0, -query.shape[2]:, -n:].clone()
            if ok.dtype != torch.bool:  # an additive float mask: -inf (or min) where not allowed
                ok = ok > torch.finfo(ok.dtype).min / 2
        edit(module.layer_idx, ok)
        scores = scores.masked_fill(~ok[None, None], float("-inf"))
        probs = torch.softmax(scores.float(), -1).to(query.dtype)
        return (probs @ value).transpose(1, 2).contiguous(), probs

    AttentionInterface.register(name, attn)
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, sdpa_mask)
    model.set_attn_implementation({"text_config": name})


class MaskedEager:
    """A model whose layers >= K cannot see the masked image keys; greedy without a KV cache.

    The model's own mask (causal, sliding windows, bidirectional image blocks) is kept; masked
    image keys are removed on top of it. Attention logits are soft-capped where the layer asks.
    """

    def __init__(self, path) -> None:
        self.model, self.processor = load_eager(path)
        self.model_type = self.model.config.model_type
        self.K = None
        self.masked: list[int] = []
        ref = self

        def edit(layer: int, ok: torch.Tensor) -> None:
            if ref.K is not None and layer >= ref.K:
                for k in ref.masked:
                    ok[:, k] = False
                    ok[k, k] = True  # a masked image row keeps itself (never an empty row)

        use_edited_attention(self.model, f"reference_masked_{id(self)}", edit)
        self.suppressed = {image_token_id(self.model)}
        video = getattr(self.model.config, "video_token_id", None)
        if video is not None:
            self.suppressed.add(int(video))

    def logits(self, inputs) -> torch.Tensor:
        with torch.no_grad():
            return self.model(**inputs, use_cache=False).logits[0].float()

    def _next(self, row: torch.Tensor) -> int:
        row = row.clone()
        for t in self.suppressed:
            row[t] = float("-inf")  # never generated
        return int(row.argmax())

    def greedy(self, analysis, K, masked, max_new_tokens, eos) -> list[int]:
        self.K, self.masked = K, list(masked)
        out: list[int] = []
        for _ in range(max_new_tokens):
            inputs, _ = full_inputs(self.processor, analysis, out, self.model_type)
            nxt = self._next(self.logits(inputs)[-1])
            if nxt in eos:
                break
            out.append(nxt)
        return out

    def baseline_logprob(self, analysis, K, masked) -> float:
        self.K, self.masked = K, list(masked)
        inputs, P = full_inputs(self.processor, analysis, model_type=self.model_type)
        T = len(analysis.answer_token_ids)
        lp = torch.log_softmax(self.logits(inputs)[P - 1 : P - 1 + T], -1)
        return float(lp[torch.arange(T), torch.tensor(analysis.answer_token_ids)].sum())

    def greedy_and_logprob(self, analysis, K, masked, max_new_tokens, eos) -> tuple[list[int], float]:
        """greedy() and baseline_logprob() with fewer forwards (for `flowtui doctor`): the
        teacher-forced pass over the baseline answer gives its log-prob and, the model being
        causal over the answer and run without a cache, the greedy tokens for as long as they
        follow the baseline; the no-cache loop goes on from where they part."""
        self.K, self.masked = K, list(masked)
        answer = list(analysis.answer_token_ids)
        T = len(answer)
        inputs, P = full_inputs(self.processor, analysis, model_type=self.model_type)
        logits = self.logits(inputs)
        lp = torch.log_softmax(logits[P - 1 : P - 1 + T], -1)
        logprob = float(lp[torch.arange(T), torch.tensor(answer, dtype=torch.long)].sum())
        out: list[int] = []
        ended = False
        for t in range(T + 1):  # logits[P-1+t] follow prompt + answer[:t] == prompt + out
            if len(out) >= max_new_tokens:
                break
            nxt = self._next(logits[P - 1 + t])
            if nxt in eos:
                ended = True
                break
            out.append(nxt)
            if t == T or nxt != answer[t]:
                break
        while not ended and len(out) < max_new_tokens:
            inputs, _ = full_inputs(self.processor, analysis, out, self.model_type)
            nxt = self._next(self.logits(inputs)[-1])
            if nxt in eos:
                break
            out.append(nxt)
        return out, logprob
