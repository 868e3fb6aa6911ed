"""`flowtui [analyze] IMAGE QUESTION`: the explorer, or a headless run that writes a snapshot."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from flowtui.cli import knockout_opts
from flowtui.cli.common import (
    THEME_HELP,
    Parser,
    StderrProgress,
    add_model_options,
    add_pixel_options,
    add_remote_options,
    check_model_options,
    check_out,
    check_theme,
    default_snapshot_path,
    engine_factory,
    keep_count,
    layer_number,
    pixel_settings,
    positive_int,
    quiet_log,
    summary,
    summary_json,
    supported_model_types,
)
from flowtui.textsafe import visible
from flowtui.version import __version__

HELP = "analyse an image + question in the explorer or headless (the default command)"

DESCRIPTION = """\
Explore the information flow inside a vision-language model: per-layer attention shares by
token group (system / image / user / output), LLaVA-CAM heatmaps over the image, and
truncation of the image from layer K onward to find the cliff layer.

With no --model, flowtui uses its built-in toy LVLM (trained on shape scenes; try
`flowtui sample_images/toy_scene_1.png "Is there a red circle?"`).
"""

EPILOG = """\
examples:
  flowtui photo.jpg "Is there a horse?"                         open the explorer
  flowtui photo.jpg "Is there a horse?" --model llava-hf/llava-1.5-7b-hf
  flowtui photo.jpg "Is there a horse?" --model Qwen/Qwen2.5-VL-7B-Instruct --device cuda
  flowtui photo.jpg "Is there a horse?" --headless --sweep --out horse.flowtui
  flowtui photo.jpg "Is there a horse?" --headless --lens     the logit lens into the snapshot
  flowtui photo.jpg "Is there a horse?" --headless --knockout image->last,question->last --json
                                            knockout sweeps of windows, reported as JSON
  flowtui open horse.flowtui                                    reopen a snapshot, no model needed
  flowtui photo.jpg "Is there a horse?" --remote gpu-box --model llava-hf/llava-1.5-7b-hf
                                            the explorer here, the model on gpu-box over ssh

models: --model takes a local transformers folder or a hub id already in the local Hugging Face
cache; flowtui never downloads at run time. Supported model types: {families}.
self-checks: every analysis checks that flowtui's reruns reproduce the model's own pass (the
answer is the argmax, a rerun with nothing cut gives the same logits, cached decoding agrees,
shares sum to 1, all finite); failed checks are kept in the snapshot, shown in the explorer,
and a headless run exits 3 after writing its snapshot. --no-self-check skips them.

exit codes: 0 ok, 2 bad input (one line on stderr), 3 a self-check failed (the snapshot is
written; its numbers may be wrong), 130 interrupted.
"""


def build_parser(prog: str = "flowtui") -> argparse.ArgumentParser:
    p = Parser(prog=prog, description=DESCRIPTION,
               epilog=EPILOG.format(families=supported_model_types()),
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", help="the image (any format Pillow reads)")
    p.add_argument("question", help="the question to ask about it, in quotes")
    p.add_argument("--version", action="version", version=f"flowtui {__version__}")
    p.add_argument("--max-new-tokens", type=positive_int, default=32, metavar="N",
                   help="longest answer to generate (default: 32)")
    p.add_argument("--no-self-check", dest="self_check", action="store_false",
                   help="skip the self-checks that run with every analysis (a few %% of its time)")
    add_model_options(p)
    add_remote_options(p)
    ui = p.add_argument_group("explorer")
    ui.add_argument("--theme", default=None, help=THEME_HELP)
    ui.add_argument("--no-per-token", dest="explorer_per_token", action="store_false",
                    help="skip each answer token's own LLaVA-CAM (batched backwards over the "
                         "answer): the token cursor (, .) then shows per-token shares and "
                         "attention, and the whole answer's CAM")
    add_pixel_options(p)
    h = p.add_argument_group("headless (no UI: analyze, write a snapshot, print a summary)")
    h.add_argument("--headless", action="store_true", help="run without the explorer")
    h.add_argument("--out", "-o", metavar="FILE", default=None,
                   help="snapshot to write (default: <image-stem>-<yyyymmdd-hhmmss>.flowtui)")
    h.add_argument("--sweep", action="store_true",
                   help="also truncate at every layer K = 0..L and find the cliff layer")
    h.add_argument("--truncate", type=layer_number, action="append", metavar="K", default=[],
                   help="also rerun with the image cut off from layer K (repeatable)")
    h.add_argument("--strategy", choices=["all", "top", "random"], default="all",
                   help="which image tokens --truncate hides: all, or all but the top/random R")
    h.add_argument("--keep", type=keep_count, metavar="R", default=None,
                   help="image tokens kept by --strategy top/random (at most the image's "
                        "token count)")
    h.add_argument("--seed", type=int, default=0, help="seed for --strategy random")
    h.add_argument("--lens", action="store_true",
                   help="also read every layer's image tokens through the logit lens (top-5 "
                        "words, and the answer's first token's probability) into the snapshot")
    h.add_argument("--per-token", action="store_true",
                   help="also analyse every answer token on its own: its shares, attention on "
                        "each image token and LLaVA-CAM (token_shares [T, L, 4], "
                        "token_attention and token_cam [T, L, N] in the snapshot, and in the "
                        "--json output)")
    knockout_opts.add_options(h)
    h.add_argument("--json", action="store_true",
                   help="print the summary as one JSON object instead of text (with the "
                        "per-token and knockout arrays where asked)")
    return p


# Options only a headless run uses, with their defaults: given to the explorer they would do
# nothing.
HEADLESS_ONLY: dict[str, Any] = {"out": None, "sweep": False, "truncate": [], "strategy": "all",
                                 "keep": None, "seed": 0, "lens": False, "per_token": False,
                                 "json": False, **knockout_opts.DEFAULTS}


def _validate(args) -> None:
    """Everything that can be checked before the model loads (the --keep bound needs the
    model's processor: _run_headless checks it before generating)."""
    from flowtui.engine.errors import InputError
    from flowtui.engine.images import load_image

    if not args.question.strip():
        raise InputError("the question is empty")
    load_image(args.image)
    if not args.headless:
        given = [f"--{o.replace('_', '-')}" for o, default in HEADLESS_ONLY.items() if getattr(args, o) != default]
        if given:
            raise InputError(f"{', '.join(given)}: only for --headless runs (the explorer "
                             "exports snapshots with e and truncates with t, and follows each "
                             "answer token with , and .)")
    elif not args.explorer_per_token:
        raise InputError("--no-per-token: only for the explorer (a headless run computes "
                         "per-token CAMs only with --per-token)")
    check_model_options(args)
    knockout_opts.validate(args)
    if args.keep is not None and args.strategy == "all":
        raise InputError("--keep R needs --strategy top or random (all hides every image token)")
    if args.strategy != "all" and not args.truncate:
        raise InputError(f"--strategy {args.strategy} applies to --truncate K; give one "
                         "(the sweep always hides every image token)")
    if args.strategy != "all" and args.keep is None:
        raise InputError(f"--strategy {args.strategy} needs --keep R")


def _run_headless(args) -> int:
    # The image was already checked by _validate, before any model time is spent.
    out = Path(args.out) if args.out else default_snapshot_path(args.image)
    check_out(out, inputs=[args.image])
    progress = StderrProgress()
    engine = engine_factory(args)(progress)
    from flowtui.engine.errors import InputError

    try:
        for k in args.truncate:
            if k > engine.info.num_layers:
                raise InputError(
                    f"--truncate {k}: {engine.info.name} has layers 0..{engine.info.num_layers}"
                )
        if args.keep is not None:
            _check_keep(engine, args.image, args.keep)
        knockout_opts.check_against(engine, args)
        a = engine.analyze(args.image, args.question, max_new_tokens=args.max_new_tokens,
                           progress=progress, self_check=args.self_check,
                           per_token=args.per_token)
        for k in args.truncate:
            engine.truncate(a, k, strategy=args.strategy, keep=args.keep, seed=args.seed,
                            progress=progress)
        if args.sweep:
            engine.sweep(a, progress=progress)
        if args.lens:
            engine.lens(a, progress=progress)
        knockout_opts.run(engine, a, args, progress)
    finally:
        progress.done()
        engine.close()  # a remote engine: end the ssh session
    a.save(out, inputs=[args.image])
    if args.json:
        report = summary_json(a, out, args.per_token)
        report["knockout"] = knockout_opts.as_json(a)
        print(json.dumps(report))
    else:
        print(summary(a, out) + "".join("\n" + visible(line)
                                        for line in knockout_opts.summary_lines(a)))
    if a.failed_checks:
        # Written first: the snapshot keeps the evidence. Exit 3, not 2: the input was fine.
        failed = "; ".join(c.describe() for c in a.failed_checks)
        print(visible(f"flowtui: self-check failed: {failed}"), file=sys.stderr)
        return 3
    return 0


def _check_keep(engine, image: str, keep: int) -> None:
    """--keep R against the image's token count, from the processor alone: before the model
    generates anything. An engine that cannot tell (None: an older remote server) checks it in
    truncate."""
    from flowtui.engine.errors import InputError

    n = engine.count_image_tokens(image)
    if n is not None and keep > n:
        raise InputError(f"--keep {keep}: {engine.info.name} sees this image as {n} image "
                         f"tokens; keep at most {n}")


def run(argv: list[str], prog: str = "flowtui") -> int:
    args = build_parser(prog).parse_args(argv)
    _validate(args)
    if args.headless:
        return _run_headless(args)
    check_theme(args.theme)
    from flowtui.ui.app import run_explorer

    return run_explorer(
        image=args.image,
        question=args.question,
        engine_factory=engine_factory(args, on_log=quiet_log),
        max_new_tokens=args.max_new_tokens,
        theme=args.theme,
        self_check=args.self_check,
        per_token=args.explorer_per_token,
        **pixel_settings(args),
    )
