"""An independent reference for attention knockout, written from docs/definitions.md
("Knockout positions and flows"): the whole model, run from the pixels with no reuse of any
layer and no batching, with an eager attention that removes the knocked-out edges from the
model's own mask. It shares no code with flowtui.engine's knockout.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from flowtui.selftest.reference import full_inputs, load_eager


def _positions(analysis) -> dict[str, list[int]]:
    """Each knockout position's sequence positions, from the analysis' groups."""
    P = analysis.groups["output"][0][0]
    T = len(analysis.answer_token_ids)

    def span(g):
        return [k for s, e in analysis.groups[g] for k in range(s, e)]

    return {"system": span("system"), "image": span("image"),
            "question": [k for k in span("user") if k != P - 1], "last": [P - 1],
            "answer": list(range(P, P + T))}


class KnockoutEager:
    """A model whose layers in `self.layers` cannot attend along the edges `self.edges`
    ([(src, dst)] position names)."""

    def __init__(self, path):
        self.model, self.processor = load_eager(path)
        self.model_type = self.model.config.model_type
        self.layers: range = range(0)
        self.pairs: list[tuple[int, int]] = []  # (query, key) positions knocked out
        ref = self

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
                if ok.dtype != torch.bool:
                    ok = ok > torch.finfo(ok.dtype).min / 2
            if module.layer_idx in ref.layers:
                for q, k in ref.pairs:
                    ok[q, k] = False
            scores = scores.masked_fill(~ok[None, None], float("-inf"))
            probs = torch.softmax(scores.float(), -1).to(query.dtype)
            return (probs @ value).transpose(1, 2).contiguous(), probs

        name = f"reference_knockout_{id(self)}"
        AttentionInterface.register(name, attn)
        ALL_MASK_ATTENTION_FUNCTIONS.register(name, sdpa_mask)
        self.model.set_attn_implementation({"text_config": name})

    def measure(self, analysis, flow: str, layers: range) -> tuple[float, float]:
        """(probability of the answer's first token at `last`, log-prob of the whole answer)
        with `flow` (`a->b+c->d`) knocked out in `layers`."""
        pos = _positions(analysis)
        self.layers = layers
        self.pairs = [(q, k) for edge in flow.split("+")
                      for src, dst in [edge.split("->")]
                      for q in pos[dst] for k in pos[src]]
        inputs, P = full_inputs(self.processor, analysis, model_type=self.model_type)
        T = len(analysis.answer_token_ids)
        with torch.no_grad():
            logits = self.model(**inputs, use_cache=False).logits[0].double()
        answer = torch.tensor(analysis.answer_token_ids)
        p = float(torch.softmax(logits[P - 1], -1)[answer[0]])
        lp = float(torch.log_softmax(logits[P - 1:P - 1 + T], -1)[torch.arange(T), answer].sum())
        return p, lp

    def greedy(self, analysis, flow: str, layers: range, max_new_tokens: int,
               eos: set[int]) -> list[int]:
        """Greedy answer under the knockout, no cache: a full forward per token (decoded
        tokens are `answer` positions)."""
        self.measure(analysis, flow, layers)  # sets the edges for the prompt
        pos = _positions(analysis)
        P = pos["last"][0] + 1
        out: list[int] = []
        suppressed = {int(self.model.config.image_token_id if getattr(
            self.model.config, "image_token_id", None) is not None
            else self.model.config.image_token_index)}
        for _ in range(max_new_tokens):
            answer = list(range(P, P + len(out)))
            self.pairs = [(q, k) for edge in flow.split("+")
                          for src, dst in [edge.split("->")]
                          for q in (answer if dst == "answer" else pos[dst])
                          for k in (answer if src == "answer" else pos[src])]
            inputs, _ = full_inputs(self.processor, analysis, out, self.model_type)
            with torch.no_grad():
                row = self.model(**inputs, use_cache=False).logits[0, -1].float()
            for t in suppressed:
                row[t] = float("-inf")
            nxt = int(row.argmax())
            if nxt in eos:
                break
            out.append(nxt)
        return out
