"""The `flowtui` command: the explorer, headless export, and reopening snapshots."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import NoReturn

from flowtui import __version__

EXIT_BAD_INPUT = 2

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
  flowtui photo.jpg "Is there a horse?" --headless --sweep --out horse.flowtui
  flowtui open horse.flowtui                                    reopen a snapshot, no model needed
  flowtui open horse.flowtui --model llava-hf/llava-1.5-7b-hf   ... with reruns enabled

models: --model takes a local transformers folder or a hub id already in the local Hugging Face
cache; flowtui never downloads at run time. Supported families: LLaVA (LlavaForConditionalGeneration).
exit codes: 0 ok, 2 bad input (one line on stderr), 130 interrupted.
"""


THEME_HELP = ("explorer theme: flowtui-dark (default), flowtui-light, flowtui-high-contrast, "
              "any Textual theme (nord, gruvbox, ...), or your own JSON/TOML file in "
              "$XDG_CONFIG_HOME/flowtui/themes/ (~/.config/flowtui/themes/)")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, like every other flowtui error."""

    def error(self, message: str) -> NoReturn:
        from flowtui.engine.errors import InputError

        raise InputError(f"{message} (see {self.prog} --help)")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", "-m", metavar="M", default=None,
                   help="local model folder or cached hub id (default: the built-in toy model)")
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


def _int_at_least(minimum: int, what: str, bound_message: str):
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


_positive_int = _int_at_least(1, "a positive integer", "expected a positive integer")
_layer = _int_at_least(0, "a layer number", "a layer number is >= 0")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="flowtui", description=DESCRIPTION, epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", help="the image (any format Pillow reads)")
    p.add_argument("question", help="the question to ask about it, in quotes")
    p.add_argument("--version", action="version", version=f"flowtui {__version__}")
    p.add_argument("--max-new-tokens", type=_positive_int, default=32, metavar="N",
                   help="longest answer to generate (default: 32)")
    _add_model_options(p)
    ui = p.add_argument_group("explorer")
    ui.add_argument("--theme", default=None, help=THEME_HELP)
    h = p.add_argument_group("headless (no UI: analyze, write a snapshot, print a summary)")
    h.add_argument("--headless", action="store_true", help="run without the explorer")
    h.add_argument("--out", "-o", metavar="FILE", default=None,
                   help="snapshot to write (default: <image-stem>-<yyyymmdd-hhmmss>.flowtui)")
    h.add_argument("--sweep", action="store_true",
                   help="also truncate at every layer K = 0..L and find the cliff layer")
    h.add_argument("--truncate", type=_layer, action="append", metavar="K", default=[],
                   help="also rerun with the image cut off from layer K (repeatable)")
    h.add_argument("--strategy", choices=["all", "top", "random"], default="all",
                   help="which image tokens --truncate hides: all, or all but the top/random R")
    h.add_argument("--keep", type=int, metavar="R", default=None,
                   help="image tokens kept by --strategy top/random")
    h.add_argument("--seed", type=int, default=0, help="seed for --strategy random")
    return p


def build_open_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="flowtui open", description="Reopen a .flowtui snapshot in the explorer. "
                "No model is needed; pass --model to enable truncation reruns.")
    p.add_argument("snapshot", help="a .flowtui file")
    _add_model_options(p)
    p.add_argument("--theme", default=None, help=THEME_HELP)
    p.add_argument("--summary", action="store_true",
                   help="print the snapshot's summary instead of opening the explorer")
    return p


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"flowtui: error: {message}", file=sys.stderr)
    return code


class _StderrProgress:
    """Progress lines on stderr: one per stage, overwritten in place on a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last_stage = ""
        self.start = time.perf_counter()

    def __call__(self, p) -> None:
        count = f" {p.done}/{p.total}" if p.total > 1 else ""
        line = f"[{time.perf_counter() - self.start:6.1f}s] {p.stage}{count} {p.message}".rstrip()
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


def _check_out(out: Path) -> None:
    from flowtui.engine.errors import InputError

    if out.is_dir():
        raise InputError(f"--out {out} is a directory; give a file name")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"--out {out}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise InputError(f"--out {out}: folder {parent} is not writable")


def _summary(a, path: Path | None = None) -> str:
    lines = [
        f"model:    {a.model.name} ({a.model.family}, {a.model.num_layers} layers, "
        f"{a.model.dtype} on {a.model.device})",
        f"question: {a.question}",
        f"answer:   {a.answer}",
    ]
    peak = int(a.shares[:, 1].argmax())
    lines.append(f"image share: peak {a.shares[peak, 1]:.3f} at layer {peak}, "
                 f"mean {a.shares[:, 1].mean():.3f}")
    for run in a.truncations:
        how = run.strategy if run.strategy == "all" else f"{run.strategy}-{run.keep}"
        lines.append(f"truncate K={run.layer} ({how}): {run.answer!r} "
                     f"({'same' if run.same else 'changed'}; baseline log-prob "
                     f"{run.baseline_logprob:.3f})")
    if a.sweep_same is not None:
        cliff = a.cliff_layer
        lines.append(f"cliff layer: {cliff if cliff is not None else 'none (K = L differs)'}")
    if path is not None:
        lines.append(f"wrote:    {path}")
    return "\n".join(lines)


def _engine_factory(args):
    def factory(progress=None):
        from flowtui.engine import load_engine

        return load_engine(args.model, device=args.device, dtype=args.dtype,
                           trust_remote_code=args.trust_remote_code, quantize=args.quantize,
                           progress=progress)

    return factory


def _run_headless(args) -> int:
    # The image was already checked by _validate_live, before any model time is spent.
    out = Path(args.out) if args.out else default_snapshot_path(args.image)
    _check_out(out)
    progress = _StderrProgress()
    engine = _engine_factory(args)(progress)
    from flowtui.engine.errors import InputError

    for k in args.truncate:
        if k > engine.info.num_layers:
            progress.done()
            raise InputError(f"--truncate {k}: {engine.info.name} has layers 0..{engine.info.num_layers}")
    try:
        a = engine.analyze(args.image, args.question, max_new_tokens=args.max_new_tokens,
                           progress=progress)
        for k in args.truncate:
            engine.truncate(a, k, strategy=args.strategy, keep=args.keep, seed=args.seed,
                            progress=progress)
        if args.sweep:
            engine.sweep(a, progress=progress)
    finally:
        progress.done()
    a.save(out)
    print(_summary(a, out))
    return 0


def _validate_live(args) -> None:
    from flowtui.engine.errors import InputError
    from flowtui.engine.images import load_image
    from flowtui.engine.loading import resolve_model_path, resolve_placement

    if not args.question.strip():
        raise InputError("the question is empty")
    load_image(args.image)
    resolve_placement(args.device, args.dtype)
    resolve_model_path(args.model)
    if args.strategy != "all" and args.keep is None and args.truncate:
        raise InputError(f"--strategy {args.strategy} needs --keep R")


def _check_theme(theme: str | None) -> None:
    if theme is None:
        return
    from flowtui.engine.errors import InputError
    from flowtui.ui.themes import available_themes

    names = available_themes()
    if theme not in names:
        raise InputError(f"unknown theme {theme!r}; available: {', '.join(names)}")


def _main(argv: Sequence[str]) -> int:
    if argv and argv[0] == "open":
        args = build_open_parser().parse_args(argv[1:])
        from flowtui.engine.snapshot import load_snapshot

        analysis = load_snapshot(args.snapshot)
        if args.summary:
            print(_summary(analysis))
            return 0
        _check_theme(args.theme)
        if args.model is not None:
            from flowtui.engine.loading import resolve_model_path, resolve_placement

            resolve_placement(args.device, args.dtype)
            resolve_model_path(args.model)
        from flowtui.ui.app import run_explorer

        return run_explorer(
            analysis=analysis,
            engine_factory=_engine_factory(args) if args.model is not None else None,
            theme=args.theme,
            snapshot_path=args.snapshot,
        )
    args = build_parser().parse_args(argv)
    _validate_live(args)
    if args.headless:
        return _run_headless(args)
    _check_theme(args.theme)
    from flowtui.ui.app import run_explorer

    return run_explorer(
        image=args.image,
        question=args.question,
        engine_factory=_engine_factory(args),
        max_new_tokens=args.max_new_tokens,
        theme=args.theme,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. Every expected failure is one line on stderr and exit code 2."""
    from flowtui.engine.errors import Cancelled, FlowtuiError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except Cancelled as exc:
        return _fail(str(exc), 130)
    except FlowtuiError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except MemoryError:
        return _fail("out of memory; try a smaller model, --dtype bfloat16 or --quantize 4bit", 1)
    except Exception as exc:  # noqa: BLE001 - the promise is no tracebacks for users
        if os.environ.get("FLOWTUI_DEBUG"):
            raise
        kind = type(exc).__name__
        if "OutOfMemory" in kind:
            return _fail("out of GPU memory; try --dtype bfloat16, --quantize 4bit or a "
                         "shorter --max-new-tokens", 1)
        first = (str(exc).splitlines() or [""])[0]
        return _fail(f"unexpected {kind}: {first} (set FLOWTUI_DEBUG=1 for the traceback)", 1)


if __name__ == "__main__":
    sys.exit(main())
