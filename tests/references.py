"""Independent reference implementations, written from DESIGN.md's definitions.

They share no code with flowtui.engine: eager attention with output_attentions, the paper's
per-layer CAM loop, and a no-cache greedy loop over an eager masked attention.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import AttentionInterface, AutoModelForImageTextToText, AutoProcessor

GROUP_ORDER = ("system", "image", "user", "output")


def load_eager(path):
    model = AutoModelForImageTextToText.from_pretrained(path, attn_implementation="eager")
    return model.eval(), AutoProcessor.from_pretrained(path)


def full_inputs(processor, analysis):
    """Prompt + answer ids and pixel values, rebuilt from the analysis' image and question."""
    from PIL import Image

    conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": analysis.question}]}]
    prompt = processor.apply_chat_template(conv, add_generation_prompt=True)
    inputs = processor(images=Image.fromarray(analysis.image), text=prompt, return_tensors="pt")
    ids = torch.cat([inputs["input_ids"], torch.tensor([analysis.answer_token_ids])], dim=1)
    return ids, inputs["pixel_values"], inputs["input_ids"].shape[1]


def shares_eager(path, analysis) -> tuple[np.ndarray, np.ndarray]:
    """(shares [L,4], head_shares [L,H,4]) from eager output_attentions."""
    model, processor = load_eager(path)
    ids, pixels, P = full_inputs(processor, analysis)
    T = len(analysis.answer_token_ids)
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels, output_attentions=True)
    head = []
    for A in out.attentions:
        rows = A[0, :, P - 1 : P - 1 + T, :].double()  # [H, T, N]
        per_group = []
        for g in GROUP_ORDER:
            cols = [k for s, e in analysis.groups[g] for k in range(s, e)]
            per_group.append(rows[:, :, cols].sum(-1).mean(-1))  # [H]
        head.append(torch.stack(per_group, -1))
    head_shares = torch.stack(head).numpy()
    return head_shares.mean(1), head_shares


def cam_per_layer_loop(path, analysis) -> np.ndarray:
    """The paper's loop: one forward + backward per layer, gradient at that layer's norm output."""
    model, processor = load_eager(path)
    ids, pixels, P = full_inputs(processor, analysis)
    T = len(analysis.answer_token_ids)
    img = [k for s, e in analysis.groups["image"] for k in range(s, e)]
    layers = model.model.language_model.layers
    cams = []
    for layer in layers:
        saved = {}

        def hook(_m, _a, out, saved=saved):
            out.retain_grad()
            saved["a"] = out

        handle = layer.post_attention_layernorm.register_forward_hook(hook)
        model.zero_grad()
        logits = model(input_ids=ids, pixel_values=pixels).logits[0]
        target = sum(logits[P - 1 + t, analysis.answer_token_ids[t]] for t in range(T))
        target.backward()
        handle.remove()
        a = saved["a"][0, img].detach().double()
        g = saved["a"].grad[0, img].double()
        w = torch.relu(g).mean(0)
        cam = torch.relu((w * a).mean(1))
        cams.append((cam / cam.max() if cam.max() > 0 else cam).numpy())
    rows, cols = analysis.image_grid
    return np.stack(cams).reshape(len(layers), rows, cols)


class MaskedEager:
    """A model whose layers >= K cannot see the masked image keys; greedy without a KV cache."""

    def __init__(self, path):
        self.model, self.processor = load_eager(path)
        self.K = None
        self.masked: list[int] = []
        ref = self

        def attn(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
            groups = module.num_key_value_groups
            key = key.repeat_interleave(groups, dim=1)
            value = value.repeat_interleave(groups, dim=1)
            scores = query @ key.transpose(2, 3) * scaling
            n = key.shape[2]
            bad = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
            if ref.K is not None and module.layer_idx >= ref.K:
                for k in ref.masked:
                    bad[:, k] = True
                    bad[k, k] = False  # a masked image row keeps itself (never an empty row)
            scores = scores.masked_fill(bad[None, None], float("-inf"))
            probs = torch.softmax(scores.float(), -1).to(query.dtype)
            return (probs @ value).transpose(1, 2).contiguous(), probs

        # One registered name per instance: the closure reads this instance's K and mask.
        name = f"reference_masked_{id(self)}"
        AttentionInterface.register(name, attn)
        self.model.set_attn_implementation({"text_config": name})

    def logits(self, ids, pixels) -> torch.Tensor:
        with torch.no_grad():
            return self.model(input_ids=ids, pixel_values=pixels, use_cache=False).logits[0].float()

    def greedy(self, analysis, K, masked, max_new_tokens, eos):
        self.K, self.masked = K, list(masked)
        ids, pixels, P = full_inputs(self.processor, analysis)
        ids = ids[:, :P]
        out = []
        for _ in range(max_new_tokens):
            last = self.logits(ids, pixels)[-1]
            last[self.model.config.image_token_id] = float("-inf")  # never generated
            nxt = int(last.argmax())
            if nxt in eos:
                break
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
        return out

    def baseline_logprob(self, analysis, K, masked) -> float:
        self.K, self.masked = K, list(masked)
        ids, pixels, P = full_inputs(self.processor, analysis)
        T = len(analysis.answer_token_ids)
        lp = torch.log_softmax(self.logits(ids, pixels)[P - 1 : P - 1 + T], -1)
        return float(lp[torch.arange(T), torch.tensor(analysis.answer_token_ids)].sum())
