"""An independent reference for the logit lens on image tokens (docs/definitions.md).

It shares no code with flowtui.engine: for each layer l, the eager model itself is run with its
decoder stack cut after layer l, so the logits at the feature tokens are what the model's own
forward makes of the residual stream after layer l (its own final norm, head, soft-cap and
logit scale, and whatever it adds between layers). Softmax in float64 over the whole
vocabulary, no chunks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from flowtui.selftest.reference import full_inputs, image_token_id, language_model, load_eager


def lens_eager(path, analysis, word_id: int, k: int = 5) -> tuple[np.ndarray, ...]:
    """(top ids [L, N, k], top probs [L, N, k], word probability [L, N]) at the feature tokens
    of `analysis`, one eager forward per layer with the layers above it removed."""
    model, processor = load_eager(path)
    inputs, P = full_inputs(processor, analysis, model_type=model.config.model_type)
    feats = np.flatnonzero(inputs["input_ids"][0, :P].numpy() == image_token_id(model))
    stack = language_model(model)
    layers = stack.layers
    ids, probs, word = [], [], []
    try:
        for layer in range(len(layers)):
            stack.layers = nn.ModuleList(list(layers)[: layer + 1])
            with torch.no_grad():
                logits = model(**inputs, use_cache=False).logits[0, feats].double()
            p = torch.softmax(logits, dim=-1)
            top = p.topk(k, dim=-1)
            ids.append(top.indices.numpy())
            probs.append(top.values.numpy())
            word.append(p[:, word_id].numpy())
    finally:
        stack.layers = layers
    return np.stack(ids), np.stack(probs), np.stack(word)
