"""`flowtui web IMAGE QUESTION | open SNAPSHOT | dataset RUN`: the explorer in a browser."""

from __future__ import annotations

import argparse
from pathlib import Path

from flowtui.cli.common import (
    THEME_HELP,
    Parser,
    add_model_options,
    check_model_options,
    check_theme,
    positive_int,
)

HELP = "the explorer in a browser tab: web IMAGE QUESTION, web open SNAPSHOT, web dataset RUN"

DESCRIPTION = """\
Serve the explorer to a web browser (textual-serve): each tab runs its own explorer, and every
tab's model calls go to one engine process that this command starts and stops, so the model is
loaded once and stays warm (a second tab answers in the time of an analysis, not of a load).

  flowtui web IMAGE QUESTION [options]     analyse, as `flowtui IMAGE QUESTION`
  flowtui web open SNAPSHOT [options]      reopen a snapshot, as `flowtui open`
  flowtui web dataset RUN [options]        browse a dataset run, as `flowtui dataset show`

It prints the address to open: http://127.0.0.1:PORT/TOKEN/. The random token is the key: a
request without it is refused. It listens on 127.0.0.1 unless --host says otherwise; from your
own machine, forward the port over ssh (ssh -N -L PORT:127.0.0.1:PORT GPU-BOX) and open the same
address there. The map
is drawn in half-blocks (the page's terminal, xterm.js, shows no inline images). Snapshots and
exports are written on this machine, in the folder flowtui web runs in. Ctrl+C stops the
server, its tabs and its engine.
"""

EPILOG = """\
examples:
  flowtui web sample_images/toy_scene_1.png "Is there a red circle?"
  flowtui web photo.jpg "Is there a horse?" --model llava-hf/llava-1.5-7b-hf --port 8710
  flowtui web open horse.flowtui --model llava-hf/llava-1.5-7b-hf
  flowtui web dataset pope-llava --run-model
"""

DEFAULT_PORT = 8710


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, got {text!r}")
    return value


def _add_web_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("web server")
    g.add_argument("--host", default="127.0.0.1", metavar="ADDR",
                   help="address to listen on (default: 127.0.0.1, this machine only; "
                        "0.0.0.0 lets anyone with the URL in)")
    g.add_argument("--port", type=port_number, default=DEFAULT_PORT, metavar="N",
                   help=f"port to listen on (default: {DEFAULT_PORT}; 0: any free port)")
    p.add_argument("--theme", default=None, help=THEME_HELP)


def _parser(prog: str, usage: str | None = None) -> Parser:
    return Parser(prog=prog, usage=usage, description=DESCRIPTION, epilog=EPILOG,
                  formatter_class=argparse.RawDescriptionHelpFormatter)


def live_parser(prog: str) -> argparse.ArgumentParser:
    p = _parser(prog, usage=f"{prog} IMAGE QUESTION [options] | {prog} open SNAPSHOT [options] "
                f"| {prog} dataset RUN [options]")
    p.add_argument("image", help="the image (any format Pillow reads)")
    p.add_argument("question", help="the question to ask about it, in quotes")
    p.add_argument("--max-new-tokens", type=positive_int, default=32, metavar="N",
                   help="longest answer to generate (default: 32)")
    p.add_argument("--no-self-check", dest="self_check", action="store_false",
                   help="skip the self-checks that run with every analysis")
    add_model_options(p)
    _add_web_options(p)
    return p


def open_parser(prog: str) -> argparse.ArgumentParser:
    p = _parser(prog)
    p.add_argument("snapshot", help="a .flowtui file (toy-model snapshots rerun with no flag; "
                                    "others with --model)")
    add_model_options(p)
    _add_web_options(p)
    return p


def dataset_parser(prog: str) -> argparse.ArgumentParser:
    p = _parser(prog)
    p.add_argument("run_dir", help="a results folder written by `flowtui dataset run`")
    add_model_options(p)
    p.add_argument("--run-model", action="store_true",
                   help="analyse samples with the model the run used (its config.json)")
    _add_web_options(p)
    return p


def _model(args) -> dict:
    return {"model": args.model, "device": args.device, "dtype": args.dtype,
            "quantize": args.quantize, "trust_remote_code": args.trust_remote_code}


def _live(argv: list[str], prog: str) -> tuple[dict, dict | None, argparse.Namespace]:
    from flowtui.engine.errors import InputError
    from flowtui.engine.images import load_image

    args = live_parser(prog).parse_args(argv)
    if not args.question.strip():
        raise InputError("the question is empty")
    load_image(args.image)
    check_model_options(args)
    spec = {"mode": "live", "image": str(Path(args.image).resolve()), "question": args.question,
            "max_new_tokens": args.max_new_tokens, "self_check": args.self_check}
    return spec, _model(args), args


def _open(argv: list[str], prog: str) -> tuple[dict, dict | None, argparse.Namespace]:
    from flowtui.engine.loading import TOY_NAME
    from flowtui.engine.snapshot import load_snapshot

    args = open_parser(prog).parse_args(argv)
    analysis = load_snapshot(args.snapshot)
    if args.model is None and analysis.model.name == TOY_NAME:
        args.model = TOY_NAME  # as `flowtui open`: the built-in model reruns its snapshots
    model = None
    if args.model is not None:
        check_model_options(args)
        model = _model(args)
    return {"mode": "open", "snapshot": str(Path(args.snapshot).resolve())}, model, args


def _dataset(argv: list[str], prog: str) -> tuple[dict, dict | None, argparse.Namespace]:
    from flowtui.dataset.browse import RunView
    from flowtui.engine.errors import InputError

    args = dataset_parser(prog).parse_args(argv)
    run = RunView.load(Path(args.run_dir))
    if args.run_model:  # as `flowtui dataset show --run-model`
        if args.model is not None:
            raise InputError("give --model or --run-model, not both")
        args.model = run.config.model.get("arg")
        if args.dtype == "auto":
            args.dtype = run.config.model.get("dtype") or "auto"
    model = None
    if args.run_model or args.model is not None:
        check_model_options(args)
        model = _model(args)
    return {"mode": "dataset", "run_dir": str(Path(args.run_dir).resolve())}, model, args


MODES = {"open": _open, "dataset": _dataset}


def run(argv: list[str], prog: str = "flowtui web") -> int:
    if argv and argv[0] in MODES:
        spec, model, args = MODES[argv[0]](argv[1:], f"{prog} {argv[0]}")
    else:
        spec, model, args = _live(argv, prog)
    check_theme(args.theme)
    spec["theme"] = args.theme
    from flowtui.web.run import serve_web

    return serve_web(spec, host=args.host, port=args.port, model=model)
