"""Train the built-in toy LVLM from a seed on CPU and save it where flowtui loads it.

    python -m flowtui.toy.train [--steps N] [--seed S] [--out DIR]

Recipe (see MODEL_CARD.md), in five stages:

1. vision: the vision tower and projector alone learn an auxiliary per-patch objective
   (colour and shape under each patch, predicted from the projector output). The loss is
   foreground-weighted: background is ~90% of patches, and unweighted it drowns the shape
   signal (shape accuracy on object patches then stays near chance for thousands of steps);
2. joint: the whole model learns to answer ``Is there a {colour} {shape}?`` (with
   single-attribute questions as an early curriculum), the auxiliary loss kept on, several
   questions per image sharing one forward of the image prefix (a KV cache repeated per
   question), AdamW with warm-up and cosine decay. A grounding term asks the answer query's
   attention over the image, at two middle layers, to sit on the asked object (what
   referring-expression data teaches real LVLMs);
3. explanation prior: a short last stage adds a CAM-alignment term: the LLaVA-CAM of shallow
   layers, computed exactly as flowtui computes it (raw answer logit, ReLU'd gradient weights
   averaged over image positions), should put its mass on the asked object. It needs a
   second-order backward, hence a short stage. Without it the CAM of a model this small
   lands on *an* object, not the asked one (see MODEL_CARD.md);
4. captions (train_captions.py): the vocabulary grows by the caption words and the language
   model learns to answer "Describe the image." with every object and its colour, in a fixed
   order, while yes/no questions, grounding and a little of stage 3's term carry on.
   ``--from DIR`` starts it from a saved stage-3 model (the release before captions is what
   stages 1-3 give from seed 0) instead of running stages 1-3 again;
5. caption polish: stage 4 again with a fresh optimiser, new data and a lower learning rate.

The auxiliary head and the grounding and CAM terms are training devices only: nothing of
them is saved, and only the LlavaForConditionalGeneration answers questions.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from flowtui.engine import compat

from . import WEIGHTS_DIR, questions
from .build import (
    BASE_VOCAB_SIZE,
    GRID,
    MAX_CAPTION_TOKENS,
    NUM_IMAGE_TOKENS,
    build_model,
    build_processor,
)
from .scenes import (
    COLOURS,
    SHAPES,
    patch_labels,
    render_scene,
    sample_attribute_question,
    sample_question,
)
from .train_captions import train_captions
from .training import Batcher, cam_alignment_loss, image_features, object_patches, random_size


def sample_batch(
    rng: np.random.Generator, batcher: Batcher, n_images: int, n_questions: int, p_attr: float
) -> dict[str, Any]:
    """A batch of tensors as `Batcher.make` builds them, plus the scenes (for the CAM term)."""
    scenes = [render_scene(rng, size=random_size(rng)) for _ in range(n_images)]
    questions = []
    for sc in scenes:
        qs = []
        for j in range(n_questions):
            yes = j % 2 == 0  # balanced Yes/No inside every image's question set
            if rng.random() < p_attr:
                qs.append(sample_attribute_question(rng, sc, yes=yes))
            else:
                qs.append(sample_question(rng, sc, yes=yes))
        questions.append(qs)
    batch: dict[str, Any] = batcher.make(scenes, questions)
    batch["scenes"] = scenes
    return batch


# Background patches weigh 0.1 in the auxiliary loss, object patches 1.
COLOUR_WEIGHTS = torch.tensor([0.1] + [1.0] * len(COLOURS))
SHAPE_WEIGHTS = torch.tensor([0.1] + [1.0] * len(SHAPES))


def aux_losses(aux_head, feats, colour_labels, shape_labels) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground-weighted per-patch colour + shape loss, and shape accuracy on object patches."""
    col_logits, shp_logits = aux_head(feats)
    loss = F.cross_entropy(
        col_logits.flatten(0, 1), colour_labels.flatten(), weight=COLOUR_WEIGHTS
    ) + F.cross_entropy(shp_logits.flatten(0, 1), shape_labels.flatten(), weight=SHAPE_WEIGHTS)
    fg = shape_labels > 0
    return loss, (shp_logits.argmax(-1)[fg] == shape_labels[fg]).float().mean()


def pretrain_vision(model, aux_head, processor, steps: int, lr: float, seed: int, images: int = 16,
                    log_every: int = 100) -> None:
    """Stage 1: the vision tower and projector learn per-patch colour and shape."""
    params = (list(model.model.vision_tower.parameters())
              + list(model.model.multi_modal_projector.parameters()) + list(aux_head.parameters()))
    opt = torch.optim.AdamW(params, lr=lr)
    t0 = time.time()
    for step in range(steps):
        rng = np.random.default_rng([seed + 1, step])
        scenes = [render_scene(rng, size=random_size(rng)) for _ in range(images)]
        pixels = processor.image_processor([s.image for s in scenes], return_tensors="pt")["pixel_values"]
        labels = [patch_labels(s, GRID) for s in scenes]
        colours = torch.from_numpy(np.stack([c for c, _ in labels]).reshape(images, -1))
        shapes = torch.from_numpy(np.stack([s for _, s in labels]).reshape(images, -1))
        loss, fg_acc = aux_losses(aux_head, image_features(model, pixels), colours, shapes)
        warm = min(1.0, (step + 1) / 50)
        for g in opt.param_groups:
            g["lr"] = lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            print(f"vision {step:5d} aux {loss.item():.3f} object-patch shape acc "
                  f"{fg_acc.item():.3f} t {time.time() - t0:.0f}s", flush=True)


def forward_losses(model, aux_head, batcher: Batcher, batch: dict[str, torch.Tensor], n_questions: int,
                   ground_layers: tuple[int, ...] = ()):
    """Answer, EOS, auxiliary per-patch and grounding losses (+ accuracies) for one batch.

    Also returns the image-prefix embeddings, which the CAM term reuses.
    """
    inner = model.model
    feats = image_features(model, batch["pixel_values"])  # [B, 144, D]
    b = feats.shape[0]
    prefix = torch.tensor(batcher.prefix_ids).unsqueeze(0).expand(b, -1)
    emb = inner.get_input_embeddings()(prefix)
    s0 = batcher.image_start
    emb = torch.cat([emb[:, :s0], feats, emb[:, s0 + NUM_IMAGE_TOKENS:]], dim=1)
    lm = inner.language_model
    out = lm(inputs_embeds=emb, use_cache=True)
    cache = compat.output_cache(out)
    cache.batch_repeat_interleave(n_questions)  # share the image prefix across questions
    suffix = batch["suffix"]
    p = emb.shape[1]
    pos = torch.arange(p, p + suffix.shape[1]).unsqueeze(0).expand(suffix.shape[0], -1)
    out = lm(input_ids=suffix, position_ids=pos, use_cache=True,
             output_attentions=bool(ground_layers), **{compat.cache_kwarg(lm): cache})
    hidden = out.last_hidden_state
    rows = torch.arange(suffix.shape[0]).unsqueeze(1)
    h = hidden[rows, batch["where"]]  # [BQ, 2, D]
    logits = model.lm_head(h)
    tgt = batch["targets"]
    answer_loss = F.cross_entropy(logits[:, 0], tgt[:, 0])
    eos_loss = F.cross_entropy(logits[:, 1], tgt[:, 1])
    acc = (logits[:, 0].argmax(-1) == tgt[:, 0]).float().mean()

    aux_loss, aux_acc = aux_losses(aux_head, feats, batch["colour_labels"], batch["shape_labels"])
    ground_loss = torch.zeros(())
    sel = batch["grounded"]
    if ground_layers and len(sel):
        query = batch["where"][sel, 0]  # the position that predicts the answer
        for layer in ground_layers:
            att = out.attentions[layer][sel].mean(1)[torch.arange(len(sel)), query]
            on_image = att[:, s0:s0 + NUM_IMAGE_TOKENS]  # keys are absolute positions (cache first)
            frac = (on_image * batch["object_masks"]).sum(-1) / on_image.sum(-1).clamp_min(1e-9)
            ground_loss = ground_loss - torch.log(frac.clamp_min(1e-6)).mean() / len(ground_layers)
    return answer_loss, eos_loss, aux_loss, ground_loss, acc, aux_acc, emb


class AuxHead(torch.nn.Module):
    """Per-patch colour/shape classifier on the projector output (training only)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.colour = torch.nn.Linear(dim, 1 + len(COLOURS))
        self.shape = torch.nn.Linear(dim, 1 + len(SHAPES))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.colour(x), self.shape(x)


CAPTION_STEPS = 500
POLISH_STEPS = 600
POLISH_SEED = 100  # stage 5 draws from (seed + 100 + 4, step): data stage 4 never saw


def _layers(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vision-steps", type=int, default=1200, help="stage 1 steps")
    ap.add_argument("--vision-lr", type=float, default=2e-3)
    ap.add_argument("--steps", type=int, default=2400, help="stage 2 (joint) steps")
    ap.add_argument("--cam-steps", type=int, default=300, help="stage 3 (explanation prior) steps")
    ap.add_argument("--images", type=int, default=16, help="images per batch")
    ap.add_argument("--questions", type=int, default=12, help="questions per image")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--cam-lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--aux-weight", type=float, default=0.5)
    ap.add_argument("--ground-weight", type=float, default=0.3)
    ap.add_argument("--ground-layers", type=_layers, default=(4, 5),
                    help="layers whose answer-query attention is grounded (comma list)")
    ap.add_argument("--cam-weight", type=float, default=0.3)
    ap.add_argument("--cam-layers", type=_layers, default=(0, 1, 2, 3),
                    help="layers whose CAM the stage-3 term aligns (comma list)")
    ap.add_argument("--caption-steps", type=int, default=CAPTION_STEPS, help="stage 4 (captions) steps")
    ap.add_argument("--caption-lr", type=float, default=1e-3)
    ap.add_argument("--caption-images", type=int, default=8, help="stage 4 images per batch")
    ap.add_argument("--polish-steps", type=int, default=POLISH_STEPS,
                    help="stage 5: stage 4 again, fresh data and optimiser, lower lr")
    ap.add_argument("--polish-lr", type=float, default=3e-4)
    ap.add_argument("--from", dest="from_dir", type=Path, default=None,
                    help="run stage 4 only, from this saved stage-3 model")
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--ckpt", type=Path, default=Path("/tmp/flowtui-toy-ckpt.pt"))
    ap.add_argument("--ckpt-every", type=int, default=100)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=10)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start = time.time()
    if args.from_dir is not None:
        from transformers import LlavaForConditionalGeneration

        model = LlavaForConditionalGeneration.from_pretrained(args.from_dir, dtype=torch.float32)
        processor = build_processor()
    else:
        model, processor = train_stages_1_to_3(args)
    t4 = time.time()
    train_captions(model, processor, args.caption_steps, args.caption_lr, args.seed,
                   images=args.caption_images, log_every=args.log_every)
    print(f"stage 4 took {(time.time() - t4) / 60:.1f} min", flush=True)
    if args.polish_steps:
        t5 = time.time()
        train_captions(model, processor, args.polish_steps, args.polish_lr, args.seed + POLISH_SEED,
                       images=args.caption_images, log_every=args.log_every)
        print(f"stage 5 took {(time.time() - t5) / 60:.1f} min", flush=True)
    elapsed = time.time() - t_start
    model.eval()
    model.set_attn_implementation("sdpa")
    model.generation_config.max_new_tokens = MAX_CAPTION_TOKENS
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    questions.write(args.out)  # the forms it answers: the engine notes any other question
    print(f"trained in {elapsed / 60:.1f} min; saved to {args.out}", flush=True)


def train_stages_1_to_3(args: argparse.Namespace):
    """Stages 1-3 from the seed: the release before captions. Returns (model, processor)."""
    # The base vocabulary keeps the seed's initialisation of that release.
    model, processor = build_model(seed=args.seed, vocab_size=BASE_VOCAB_SIZE)
    # The grounding term reads attention probabilities, which only eager attention returns.
    model.set_attn_implementation("eager")
    model.train()
    aux_head = AuxHead(model.config.get_text_config().hidden_size)
    params = list(model.parameters()) + list(aux_head.parameters())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.98),
    )
    batcher = Batcher(processor)
    start = 0
    # One generator per step, derived from (seed, step): a resumed run sees the same data.
    if args.resume and args.ckpt.exists():
        state = torch.load(args.ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        aux_head.load_state_dict(state["aux"])
        opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["torch_rng"])
        start = state["step"]
        print(f"resumed from step {start}", flush=True)
    else:
        pretrain_vision(model, aux_head, processor, args.vision_steps, args.vision_lr, args.seed)

    t0 = time.time()
    ema = None
    total = args.steps + args.cam_steps
    for step in range(start, total):
        rng = np.random.default_rng([args.seed + 2, step])
        # Curriculum: single-attribute questions dominate early, then taper off.
        p_attr = max(0.1, 0.5 * (1 - step / (0.3 * args.steps)))
        batch = sample_batch(rng, batcher, args.images, args.questions, p_attr)
        explain = step >= args.steps  # stage 3
        if explain:
            lr = lr_at(step - args.steps, args.cam_steps, args.cam_lr, 20)
        else:
            lr = lr_at(step, args.steps, args.lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        ans, eos, aux, ground, acc, aux_acc, emb = forward_losses(
            model, aux_head, batcher, batch, args.questions, args.ground_layers)
        loss = ans + 0.2 * eos + args.aux_weight * aux + args.ground_weight * ground
        cam = torch.zeros(())
        if explain:
            cam_rng = np.random.default_rng([args.seed + 3, step])
            scenes = batch["scenes"]
            qs = [sample_question(cam_rng, sc, yes=True) for sc in scenes]
            masks = torch.stack([object_patches(sc, q) for sc, q in zip(scenes, qs, strict=True)])
            cam = cam_alignment_loss(model, batcher, emb, qs, masks, args.cam_layers)
            loss = loss + args.cam_weight * cam
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema = acc.item() if ema is None else 0.9 * ema + 0.1 * acc.item()
        if step % args.log_every == 0 or step == total - 1:
            print(
                f"{'explain' if explain else 'joint'} {step:5d} lr {lr:.2e} loss {loss.item():.3f} "
                f"ans {ans.item():.3f} eos {eos.item():.3f} aux {aux.item():.3f} "
                f"ground {ground.item():.3f} cam {cam.item():.3f} acc {acc.item():.3f} ema {ema:.3f} "
                f"object-patch shape acc {aux_acc.item():.3f} p_attr {p_attr:.2f} t {time.time() - t0:.0f}s",
                flush=True,
            )
        if (step + 1) % args.ckpt_every == 0 or step + 1 in (args.steps, total):
            state = {"model": model.state_dict(), "aux": aux_head.state_dict(), "opt": opt.state_dict(),
                     "torch_rng": torch.get_rng_state(), "step": step + 1}
            torch.save(state, args.ckpt)
            if step + 1 == args.steps:  # kept apart, so stage 3 can be redone with --resume
                torch.save(state, args.ckpt.with_name(args.ckpt.stem + "-joint.pt"))
    return model, processor


if __name__ == "__main__":
    main()
