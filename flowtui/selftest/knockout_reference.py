"""An independent reference for attention knockout, written from docs/definitions.md
("Knockout positions and flows"): the whole model, run from the pixels with no reuse of any
layer and no batching, with an eager attention that removes the knocked-out edges from the
model's own mask. It shares no code with flowtui.engine's knockout.
"""

from __future__ import annotations

import torch

from flowtui.selftest.reference import full_inputs, load_eager, use_edited_attention


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

        def edit(layer: int, ok: torch.Tensor) -> None:
            if layer in ref.layers:
                for q, k in ref.pairs:
                    ok[q, k] = False

        use_edited_attention(self.model, f"reference_knockout_{id(self)}", edit)

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
