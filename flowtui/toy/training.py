"""Pieces the toy's training stages share (train.py's stages 1-3, train_captions.py's stage 4):
batching scenes and questions as the processor would, the image features the language model
reads, and the CAM-alignment term of stage 3."""

from __future__ import annotations

import numpy as np
import torch

from .build import GRID, NUM_IMAGE_TOKENS
from .scenes import Question, Scene, mask_to_grid, patch_labels


def random_size(rng: np.random.Generator) -> tuple[int, int]:
    """Mostly square images of varied size, some not square (the processor squashes them)."""
    side = int(rng.integers(64, 257))
    if rng.random() < 0.75:
        return side, side
    aspect = float(rng.uniform(0.7, 1.4))
    return side, max(48, int(side * aspect))

class Batcher:
    """Turns scenes + questions into tensors in exactly the format the processor produces."""

    def __init__(self, processor) -> None:
        self.processor = processor
        tok = processor.tokenizer
        conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]}]
        prompt = processor.apply_chat_template(conv, add_generation_prompt=True)
        ids = tok(prompt, add_special_tokens=False).input_ids
        first = ids.index(processor.image_token_id)
        # The template puts one <image> that the processor expands to NUM_IMAGE_TOKENS.
        self.prefix_ids = ids[: first] + [processor.image_token_id] * NUM_IMAGE_TOKENS
        self.image_start = first
        self.eos = tok.eos_token_id
        self.pad = tok.pad_token_id
        self.answer_ids = {a: tok.convert_tokens_to_ids(a) for a in ("Yes", "No")}
        self._prompt_tail = prompt[prompt.index("<image>") + len("<image>"):]

    def suffix(self, q: Question) -> list[int]:
        """Question + assistant tag, as the processor would tokenise them."""
        tail = self._prompt_tail.replace("Q", q.text, 1)
        return self.processor.tokenizer(tail, add_special_tokens=False).input_ids

    def pixels(self, scenes: list[Scene]) -> torch.Tensor:
        out = self.processor.image_processor([s.image for s in scenes], return_tensors="pt")
        return out["pixel_values"]

    def make(self, scenes: list[Scene], questions: list[list[Question]]) -> dict[str, torch.Tensor]:
        """Batch: pixels, patch labels, suffix ids [B*Q, S] right-padded, loss targets."""
        seqs, targets, where = [], [], []
        for qs in questions:
            for q in qs:
                s = self.suffix(q) + [self.answer_ids[q.answer], self.eos]
                seqs.append(s)
        width = max(len(s) for s in seqs)
        suffix = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        for i, s in enumerate(seqs):
            suffix[i, : len(s)] = torch.tensor(s)
            # Predict the answer at the assistant tag and EOS at the answer.
            where.append([len(s) - 3, len(s) - 2])
            targets.append([s[-2], s[-1]])
        labels = [patch_labels(s, GRID) for s in scenes]
        # Grounding targets: the patches the asked object covers, for colour+shape Yes questions.
        grounded, masks = [], []
        for i, (sc, qs) in enumerate(zip(scenes, questions, strict=True)):
            for j, q in enumerate(qs):
                if q.target is not None:
                    grounded.append(i * len(qs) + j)
                    masks.append(object_patches(sc, q))
        return {
            "grounded": torch.tensor(grounded, dtype=torch.long),
            "object_masks": torch.stack(masks) if masks else torch.zeros(0, NUM_IMAGE_TOKENS),
            "pixel_values": self.pixels(scenes),
            "colour_labels": torch.from_numpy(np.stack([c for c, _ in labels]).reshape(len(scenes), -1)),
            "shape_labels": torch.from_numpy(np.stack([s for _, s in labels]).reshape(len(scenes), -1)),
            "suffix": suffix,
            "where": torch.tensor(where),
            "targets": torch.tensor(targets),
        }

def object_patches(scene: Scene, q: Question, min_cover: float = 0.25) -> torch.Tensor:
    """[144] float mask of the patches the asked object covers (at least `min_cover`)."""
    assert q.target is not None, "the question asks about no object"
    cover = mask_to_grid(scene.objects[q.target].mask, GRID).reshape(-1)
    return torch.from_numpy(cover >= min_cover).float()

def image_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """Projector output per patch, [B, 144, D]: what the language model sees."""
    feats = model.model.get_image_features(
        pixel_values, vision_feature_layer=-1, vision_feature_select_strategy="default"
    ).pooler_output
    return torch.stack(list(feats))

# Sharpness of the softmax over patches in the CAM term (maps are scaled to [-1, 1]).
CAM_SHARPNESS = 8.0

def cam_alignment_loss(model, batcher: Batcher, emb: torch.Tensor, questions: list[Question],
                       masks: torch.Tensor, cam_layers: tuple[int, ...]) -> torch.Tensor:
    """How far each layer's LLaVA-CAM is from peaking on the asked object.

    One Yes question per image; the CAM is flowtui's (docs/definitions.md): site = post-attention norm
    output at the image positions, target = raw logit of the answer token, w = mean over
    positions of ReLU(gradient). The gradient is kept in the graph (second-order backward),
    so training shapes the gradient weights as well as the activations.
    """
    lm = model.model.language_model
    s0 = batcher.image_start
    sites: dict[int, torch.Tensor] = {}
    hooks = [
        lm.layers[layer].post_attention_layernorm.register_forward_hook(
            lambda _m, _a, out, layer=layer: sites.__setitem__(layer, out))
        for layer in cam_layers
    ]
    yes = batcher.answer_ids["Yes"]
    suffixes = [batcher.suffix(q) for q in questions]
    total = torch.zeros(())
    try:
        # Questions of equal length go together: no padding inside the sequence.
        for length in sorted({len(x) for x in suffixes}):
            idx = [i for i, x in enumerate(suffixes) if len(x) == length]
            ids = torch.tensor([suffixes[i] for i in idx])
            seq = torch.cat([emb[idx], model.model.get_input_embeddings()(ids)], dim=1)
            logit = model.lm_head(lm(inputs_embeds=seq).last_hidden_state[:, -1])[:, yes].sum()
            grads = torch.autograd.grad(logit, [sites[k] for k in cam_layers], create_graph=True)
            for layer, g in zip(cam_layers, grads, strict=True):
                a = sites[layer][:, s0:s0 + NUM_IMAGE_TOKENS]
                w = torch.relu(g[:, s0:s0 + NUM_IMAGE_TOKENS]).mean(1, keepdim=True)
                # The map before its final ReLU: a ReLU'd map can die (all zero), and then
                # nothing would pull it back. Scaled to [-1, 1] per map.
                z = (w * a).mean(-1)
                z = z / z.abs().amax(-1, keepdim=True).clamp_min(1e-12)
                on = masks[idx] > 0
                # A sliver of an object may cover no patch enough: such a question is skipped.
                valid = on.any(-1)
                on = on | ~valid[:, None]
                logits = CAM_SHARPNESS * z
                # The object's share of a sharpened map, and its peak at the map's (positive) max.
                share = torch.logsumexp(logits.masked_fill(~on, -torch.inf), -1) - torch.logsumexp(logits, -1)
                peak = torch.relu(1 - z.masked_fill(~on, -torch.inf).amax(-1))
                total = total + ((peak - share) * valid).sum()
    finally:
        for h in hooks:
            h.remove()
    return total / (len(questions) * len(cam_layers))
