"""Pieces every subcommand shares: one-line argparse errors, model options, progress, output."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import NoReturn, TextIO

from flowtui.textsafe import visible

EXIT_BAD_INPUT = 2

THEME_HELP = ("explorer theme: flowtui-dark (default), flowtui-light, flowtui-high-contrast, "
              "any Textual theme (nord, gruvbox, ...), or your own JSON/TOML file in "
              "$XDG_CONFIG_HOME/flowtui/themes/ (~/.config/flowtui/themes/)")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, like every other flowtui error."""

    def error(self, message: str) -> NoReturn:
        from flowtui.engine.errors import InputError

        raise InputError(f"{message} (see {self.prog} --help)")


def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", "-m", metavar="M", default=None,
                   help="local model folder, cached hub id, or flowtui-toy (the built-in toy "
                        "model, the default of the analyze command)")
    g.add_argument("--device", default="auto", metavar="D",
                   help="auto | cpu | cuda | cuda:N (default: auto = a GPU if visible)")
    g.add_argument("--dtype", default="auto", metavar="T",
                   choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto | float32 | bfloat16 | float16 (auto: bf16 on a GPU that has it, "
                        "else fp16; float32 on CPU)")
    g.add_argument("--quantize", choices=["4bit", "8bit"], default=None,
                   help="load 4/8-bit with bitsandbytes (pip install 'flowtui[quant]')")
    g.add_argument("--trust-remote-code", action="store_true",
                   help="allow a model's own Python code from its folder (only if you trust it)")


def add_pixel_options(p: argparse.ArgumentParser) -> None:
    """--pixels and --map-style, for every command that opens a map (render/terminal.py)."""
    from flowtui.render.overlay import MAP_STYLES
    from flowtui.render.terminal import PIXEL_CHOICES

    g = p.add_argument_group("map pixels")
    g.add_argument("--pixels", choices=PIXEL_CHOICES, default="auto",
                   help="draw the map with the kitty graphics protocol, Sixel, iTerm inline "
                        "images or half-blocks (default auto: ask the terminal at start, "
                        "half-blocks if it does not answer within 0.5 s)")
    g.add_argument("--map-style", choices=MAP_STYLES, default="regions",
                   help="at real pixels: each token's value over its region (default), or "
                        "smooth, the token map upsampled bilinearly as in the paper's figures "
                        "(key b switches)")


def pixel_settings(args: argparse.Namespace) -> dict:
    """The app's graphics and map style from --pixels/--map-style: the terminal is probed
    here, before the app takes the screen (a probe needs the terminal's answers, which Textual
    would read as keys)."""
    from flowtui.render.terminal import detect

    graphics = detect(args.pixels)
    if graphics.pixels:
        from flowtui.ui.widgets.pixel_view import prepare

        prepare()
    return {"graphics": graphics, "map_style": args.map_style}


def add_remote_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("remote (the model on another machine; the explorer stays here)")
    g.add_argument("--remote", metavar="[USER@]HOST", default=None,
                   help="run the model on HOST: flowtui starts `ssh -T HOST CMD serve --stdio` "
                        "with your ssh (its config, agent and jump hosts apply; "
                        "$FLOWTUI_SSH_COMMAND replaces `ssh`, e.g. 'ssh -F ./cfg -i key')")
    g.add_argument("--remote-cmd", metavar="CMD", default=None,
                   help="how to run flowtui on HOST (default: flowtui; e.g. ~/venv/bin/flowtui)")


def int_at_least(minimum: int, what: str, bound_message: str):
    """An argparse type: an integer >= minimum, with a one-line message otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{bound_message}, got {text!r}")
        return value

    return parse


positive_int = int_at_least(1, "a positive integer", "expected a positive integer")
layer_number = int_at_least(0, "a layer number", "a layer number is >= 0")
keep_count = int_at_least(0, "a number of image tokens", "a number of image tokens is >= 0")


def supported_model_types() -> str:
    """The model types the family modules declare, read from their source: `--help` stays
    fast because it imports neither torch nor transformers."""
    import ast

    folder = Path(__file__).resolve().parents[1] / "engine" / "families"
    types: set[str] = set()
    for path in folder.glob("*.py"):
        if path.name.startswith("_") or path.name == "base.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "model_types" for t in node.targets
            ):
                try:
                    types.update(ast.literal_eval(node.value))
                except ValueError:
                    continue
    return ", ".join(sorted(types))


def say(text: str, file: TextIO | None = None) -> None:
    """Print text that holds strings from outside (questions, answers, tokens, names, paths),
    line by line with control characters and escape sequences made visible."""
    print("\n".join(visible(line) for line in str(text).split("\n")), file=file or sys.stdout)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    """The one error line (messages quote file names and inputs: made visible)."""
    print(f"flowtui: error: {visible(message)}", file=sys.stderr)
    return code


class StderrProgress:
    """Progress lines on stderr: one per stage, overwritten in place on a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last_stage = ""
        self.start = time.perf_counter()

    def __call__(self, p) -> None:
        count = f" {p.done}/{p.total}" if p.total > 1 else ""
        line = f"[{time.perf_counter() - self.start:6.1f}s] {p.stage}{count} {p.message}".rstrip()
        line = visible(line)  # the message is the answer so far: model output
        if self.tty:
            sys.stderr.write("\r\033[K" + line[:200])
            sys.stderr.flush()
        elif p.stage != self.last_stage or p.stage == "sweep":
            print(line[:200], file=sys.stderr)
        self.last_stage = p.stage

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def default_snapshot_path(image: str | Path, folder: Path | None = None) -> Path:
    stem = Path(image).stem or "session"
    return (folder or Path.cwd()) / f"{stem}-{datetime.now():%Y%m%d-%H%M%S}.flowtui"


def check_out(out: Path, inputs: Sequence[str | Path] = ()) -> None:
    """Before any model time: --out must be writable and must not replace the input image or
    any file that is not a snapshot (the same check the write itself makes)."""
    from flowtui.engine.errors import InputError
    from flowtui.engine.snapshot import check_target

    if out.is_dir():
        raise InputError(f"--out {out} is a directory; give a file name")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"--out {out}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise InputError(f"--out {out}: folder {parent} is not writable")
    check_target(out, inputs)


def summary(a, path: Path | None = None) -> str:
    lines = [
        f"model:    {a.model.name} ({a.model.family}, {a.model.num_layers} layers, "
        f"{a.model.dtype} on {a.model.device})",
        f"question: {a.question}",
        f"answer:   {a.answer}",
    ]
    peak = int(a.shares[:, 1].argmax())
    lines.append(f"image share: peak {a.shares[peak, 1]:.3f} at layer {peak}, "
                 f"mean {a.shares[:, 1].mean():.3f}")
    if len(a.views) > 1:
        counts = ", ".join(f"{v} {int((a.token_views == i).sum())}" for i, v in enumerate(a.views))
        lines.append(f"image tokens: {a.num_features} ({counts})")
    for run in a.truncations:
        how = run.strategy if run.strategy == "all" else f"{run.strategy}-{run.keep}"
        lines.append(f"truncate K={run.layer} ({how}): {run.answer!r} "
                     f"({'same' if run.same else 'changed'}; baseline log-prob "
                     f"{run.baseline_logprob:.3f})")
    if a.sweep_same is not None:
        cliff = a.cliff_layer
        lines.append(f"cliff layer: {cliff if cliff is not None else 'none (K = L differs)'}")
    if a.lens is not None:
        lines.append(lens_line(a))
    lines += [f"note:     {n}" for n in a.notes]
    if a.checks:
        failed = a.failed_checks
        lines.append(f"checks:   {len(a.checks) - len(failed)} of {len(a.checks)} self-checks "
                     "passed" + (f"; FAILED: {', '.join(c.name for c in failed)}" if failed
                                 else ""))
    if path is not None:
        lines.append(f"wrote:    {path}")
    return "\n".join(visible(line) for line in lines)


def lens_line(a) -> str:
    """The lens in one line: where the word is most probable on the image, and the first layer
    at which it is any image token's top word."""
    import numpy as np

    lens = a.lens
    mean = lens.word_prob.mean(axis=1)
    peak = int(mean.argmax())
    first = lens.first_top_layer(np.arange(a.num_features))
    where = f"top word of some image token from layer {first}" if first is not None else \
        "never any image token's top word"
    return (f"lens:     {lens.word!r} mean prob over image tokens peaks at layer {peak} "
            f"({mean[peak]:.3f}); {where}")


def summary_json(a, path: Path | None = None, per_token: bool = False) -> dict:
    """What `--headless --json` prints: the summary's facts as JSON, and with `per_token`
    every answer token on its own (docs/definitions.md, "Per-token quantities"): its piece,
    `token_shares` [T][L][4], `token_attention` and `token_cam` [T][L][N] (N in the order of
    the snapshot's cam_tokens; token_cam null where it was not computed)."""
    s, e = a.groups["output"][0] if a.groups["output"] else (0, 0)
    out = {
        "model": {"name": a.model.name, "family": a.model.family,
                  "num_layers": a.model.num_layers, "num_heads": a.model.num_heads,
                  "dtype": a.model.dtype, "device": a.model.device},
        "question": a.question,
        "answer": a.answer,
        "answer_token_ids": [int(t) for t in a.answer_token_ids],
        "answer_tokens": list(a.tokens[s:e]),
        "answer_logprobs": a.answer_logprobs.tolist(),
        "groups": ["system", "image", "user", "output"],
        "shares": a.shares.tolist(),
        "truncations": [{"layer": r.layer, "strategy": r.strategy, "keep": r.keep,
                         "answer": r.answer, "same": r.same,
                         "baseline_logprob": r.baseline_logprob} for r in a.truncations],
        "cliff_layer": a.cliff_layer,
        "checks": {c.name: bool(c.passed) for c in a.checks},
        "notes": list(a.notes),
        "snapshot": None if path is None else str(path),
    }
    if per_token:
        out["per_token"] = {
            "token_shares": None if a.token_shares is None else a.token_shares.tolist(),
            "token_attention": (None if a.token_attention is None
                                else a.token_attention.tolist()),
            "token_cam": None if a.token_cam is None else a.token_cam.tolist(),
        }
    return out


def quiet_log(_line: str) -> None:
    """For the explorer: a remote server's log lines never go to stderr, which would draw over
    the screen; the explorer shows them itself once connected."""


class RemoteFactory:
    """Connects to the engine on --remote HOST (in a UI worker, or at once). `location` says
    where the model runs before it is reached; server logs go to `on_log` (None: stderr)."""

    def __init__(self, args, on_log=None) -> None:
        self.args = args
        self.location = args.remote
        self.on_log = on_log

    def __call__(self, progress=None):
        from flowtui.remote.client import connect

        a = self.args
        return connect(a.remote, a.model, device=a.device, dtype=a.dtype, quantize=a.quantize,
                       trust_remote_code=a.trust_remote_code, remote_cmd=a.remote_cmd,
                       progress=progress, on_log=self.on_log)


def engine_factory(args, on_log=None):
    """A callable that loads the engine the options name (in a UI worker, or at once); with
    --remote, one that connects to it."""
    if getattr(args, "remote", None):
        return RemoteFactory(args, on_log)

    def factory(progress=None):
        from flowtui.engine import load_engine

        return load_engine(args.model, device=args.device, dtype=args.dtype,
                           trust_remote_code=args.trust_remote_code, quantize=args.quantize,
                           progress=progress)

    return factory


def check_theme(theme: str | None) -> None:
    if theme is None:
        return
    from flowtui.engine.errors import InputError
    from flowtui.ui.themes import available_themes

    names = available_themes()
    if theme not in names:
        raise InputError(f"unknown theme {theme!r}; available: {', '.join(names)}")


def check_model_options(args) -> None:
    """Fail on a bad --device/--dtype/--model before any model time is spent. With --remote
    the model and devices are the remote machine's: it checks them itself."""
    from flowtui.engine.errors import InputError

    if getattr(args, "remote_cmd", None) and not getattr(args, "remote", None):
        raise InputError("--remote-cmd needs --remote HOST")
    if getattr(args, "remote", None):
        from flowtui.remote.connection import ssh_argv

        ssh_argv(args.remote, args.remote_cmd or "flowtui")  # a bad host name fails here
        return
    from flowtui.engine.loading import check_placement, resolve_model_path

    check_placement(args.device, args.dtype)
    resolve_model_path(args.model)
