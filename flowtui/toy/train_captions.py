"""Stage 4 of the toy's recipe: learn to describe the scene, keep answering yes/no.

Continues from the model stages 1-3 leave (train.py runs it after them, or ``--from DIR``
starts it from a saved stage-3 model, e.g. the release before captions). The vocabulary grows
by CAPTION_WORDS (new rows appended, every earlier id unchanged); the vision tower and the
projector are frozen, so the image tokens the language model reads stay what stages 1-3 made
them. Every image gets yes/no questions (answer, end-of-sequence and grounding losses as in
stage 2) and caption prompts (teacher-forced cross-entropy over the caption and its end); the
positions that write an object's colour and shape are grounded on that object the way stage 2
grounds a yes/no answer, and a few images per step keep stage 3's CAM-alignment term, so the
yes/no CAM keeps pointing. Everything is drawn from (seed + 4, step): the stage is a function
of the stage-3 weights and the seed.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from flowtui.engine import compat

from .build import GRID, NUM_IMAGE_TOKENS
from .captions import caption_order, caption_prompt, caption_tokens
from .scenes import (
    Question,
    Scene,
    mask_to_grid,
    render_scene,
    sample_attribute_question,
    sample_question,
)
from .training import Batcher, cam_alignment_loss, image_features, object_patches, random_size

# Kinds of supervised positions.
QA_ANSWER, QA_EOS, CAPTION = 1, 2, 3


def extend_vocabulary(model, size: int, seed: int) -> None:
    """Grow the embeddings and the head to `size` rows; the new rows are drawn from `seed`
    (embeddings like the model's init, head rows zero so no new word is favoured at first)."""
    emb = model.get_input_embeddings()
    old = emb.weight.shape[0]
    if size <= old:
        return
    gen = torch.Generator().manual_seed(seed)
    std = model.config.text_config.initializer_range
    new_emb = torch.nn.Embedding(size, emb.weight.shape[1])
    new_head = torch.nn.Linear(model.lm_head.in_features, size, bias=False)
    with torch.no_grad():
        new_emb.weight[:old] = emb.weight
        new_emb.weight[old:] = torch.randn(size - old, emb.weight.shape[1], generator=gen) * std
        new_head.weight[:old] = model.lm_head.weight
        new_head.weight[old:] = 0.0
    model.set_input_embeddings(new_emb)
    model.lm_head = new_head
    model.config.text_config.vocab_size = size


def object_mask(obj, min_cover: float = 0.25) -> torch.Tensor:
    return torch.from_numpy(mask_to_grid(obj.mask, GRID).reshape(-1) >= min_cover).float()


def caption_batch(rng: np.random.Generator, batcher, n_images: int, n_questions: int,
                  n_captions: int, p_attr: float = 0.1) -> dict[str, Any]:
    """Scenes, each with `n_questions` yes/no questions and `n_captions` caption prompts,
    as right-padded suffixes with per-position targets, kinds and grounding masks."""
    tok = batcher.processor.tokenizer
    scenes = [render_scene(rng, size=random_size(rng)) for _ in range(n_images)]
    seqs, kinds, ground, cam_qs = [], [], [], []
    for sc in scenes:
        for j in range(n_questions):
            yes = j % 2 == 0
            q = (sample_attribute_question(rng, sc, yes=yes) if rng.random() < p_attr
                 else sample_question(rng, sc, yes=yes))
            s = batcher.suffix(q)
            a = len(s)
            seqs.append(s + [batcher.answer_ids[q.answer], batcher.eos])
            kinds.append({a - 1: QA_ANSWER, a: QA_EOS})
            if q.target is not None:
                ground.append((len(seqs) - 1, a - 1, object_mask(sc.objects[q.target])))
        for _ in range(n_captions):
            s = batcher.suffix(Question(caption_prompt(rng), "", None, None))
            words = caption_tokens(sc)
            a = len(s)
            seqs.append(s + tok.convert_tokens_to_ids(words) + [batcher.eos])
            kinds.append({t: CAPTION for t in range(a - 1, a + len(words))})
            # Position a-1+4k writes object k's "a", +1 its colour, +2 its shape: the colour
            # and shape are read from that object (grounded like a yes/no answer).
            for k, o in enumerate(caption_order(sc.objects)):
                m = object_mask(o)
                ground += [(len(seqs) - 1, a + 4 * k, m), (len(seqs) - 1, a + 4 * k + 1, m)]
        cam_qs.append(sample_question(rng, sc, yes=True))
    width = max(len(s) for s in seqs)
    suffix = torch.full((len(seqs), width), batcher.pad, dtype=torch.long)
    targets = torch.full((len(seqs), width), -100, dtype=torch.long)
    kind = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, (s, kind_at) in enumerate(zip(seqs, kinds, strict=True)):
        suffix[r, : len(s)] = torch.tensor(s)
        for t, what in kind_at.items():
            targets[r, t] = s[t + 1]
            kind[r, t] = what
    return {
        "scenes": scenes, "cam_questions": cam_qs,
        "pixel_values": batcher.pixels(scenes), "suffix": suffix, "targets": targets, "kind": kind,
        "ground_rows": torch.tensor([g[0] for g in ground], dtype=torch.long),
        "ground_pos": torch.tensor([g[1] for g in ground], dtype=torch.long),
        "ground_masks": torch.stack([g[2] for g in ground]) if ground else torch.zeros(0, NUM_IMAGE_TOKENS),
    }


def caption_losses(model, batcher, batch: dict[str, Any], per_image: int, ground_layers: tuple[int, ...]):
    """(answer, eos, caption, grounding) losses, (answer accuracy, exact caption rate), and the
    image-prefix embeddings the CAM term reuses. The vision side runs without gradient."""
    inner = model.model
    with torch.no_grad():
        feats = image_features(model, batch["pixel_values"])
    b = feats.shape[0]
    prefix = torch.tensor(batcher.prefix_ids).unsqueeze(0).expand(b, -1)
    emb = inner.get_input_embeddings()(prefix)
    s0 = batcher.image_start
    emb = torch.cat([emb[:, :s0], feats, emb[:, s0 + NUM_IMAGE_TOKENS:]], dim=1)
    lm = inner.language_model
    cache = compat.output_cache(lm(inputs_embeds=emb, use_cache=True))
    cache.batch_repeat_interleave(per_image)
    suffix = batch["suffix"]
    p = emb.shape[1]
    pos = torch.arange(p, p + suffix.shape[1]).unsqueeze(0).expand(suffix.shape[0], -1)
    out = lm(input_ids=suffix, position_ids=pos, use_cache=True, output_attentions=bool(ground_layers),
             **{compat.cache_kwarg(lm): cache})
    logits = model.lm_head(out.last_hidden_state)
    targets, kind = batch["targets"], batch["kind"]
    ce = F.cross_entropy(logits.flatten(0, 1), targets.clamp_min(0).flatten(), reduction="none").view_as(kind)
    right = logits.argmax(-1) == targets

    def mean(what: int) -> torch.Tensor:
        sel = kind == what
        return (ce * sel).sum() / sel.sum().clamp_min(1)

    acc = right[kind == QA_ANSWER].float().mean()
    cap_rows = (kind == CAPTION).any(-1)
    exact = (right | (kind != CAPTION)).all(-1)[cap_rows].float().mean()
    ground = torch.zeros(())
    rows, qpos = batch["ground_rows"], batch["ground_pos"]
    if ground_layers and len(rows):
        for layer in ground_layers:
            att = out.attentions[layer][rows].mean(1)[torch.arange(len(rows)), qpos]
            on_image = att[:, s0:s0 + NUM_IMAGE_TOKENS]
            frac = (on_image * batch["ground_masks"]).sum(-1) / on_image.sum(-1).clamp_min(1e-9)
            ground = ground - torch.log(frac.clamp_min(1e-6)).mean() / len(ground_layers)
    return (mean(QA_ANSWER), mean(QA_EOS), mean(CAPTION), ground), (acc, exact), emb


def train_captions(model, processor, steps: int, lr: float, seed: int, images: int = 8,
                   questions: int = 6, captions: int = 4, cam_images: int = 2, cam_weight: float = 0.3,
                   ground_weight: float = 0.3, ground_layers: tuple[int, ...] = (4, 5),
                   cam_layers: tuple[int, ...] = (0, 1, 2, 3), warmup: int = 30, log_every: int = 10) -> None:
    """Stage 4 on `model` (in place): see the module docstring."""
    extend_vocabulary(model, len(processor.tokenizer), seed + 4)
    model.set_attn_implementation("eager")  # grounding reads attention probabilities
    model.train()
    for part in (model.model.vision_tower, model.model.multi_modal_projector):
        part.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.01},
         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.98))
    batcher = Batcher(processor)
    t0 = time.time()
    ema = None
    for step in range(steps):
        rng = np.random.default_rng([seed + 4, step])
        batch = caption_batch(rng, batcher, images, questions, captions)
        cur = lr * min(1.0, (step + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for g in opt.param_groups:
            g["lr"] = cur
        (ans, eos, cap, ground), (acc, exact), emb = caption_losses(
            model, batcher, batch, questions + captions, ground_layers)
        loss = ans + 0.2 * eos + cap + ground_weight * ground
        cam = torch.zeros(())
        if cam_images:
            scenes: list[Scene] = batch["scenes"][:cam_images]
            qs = batch["cam_questions"][:cam_images]
            masks = torch.stack([object_patches(sc, q) for sc, q in zip(scenes, qs, strict=True)])
            cam = cam_alignment_loss(model, batcher, emb[:cam_images], qs, masks, cam_layers)
            loss = loss + cam_weight * cam
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema = exact.item() if ema is None else 0.9 * ema + 0.1 * exact.item()
        if step % log_every == 0 or step == steps - 1:
            print(f"caption {step:5d} lr {cur:.2e} loss {loss.item():.3f} ans {ans.item():.3f} "
                  f"eos {eos.item():.3f} cap {cap.item():.3f} ground {ground.item():.3f} "
                  f"cam {cam.item():.3f} acc {acc.item():.3f} exact caption {exact.item():.3f} "
                  f"ema {ema:.3f} t {time.time() - t0:.0f}s", flush=True)
