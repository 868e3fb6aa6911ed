"""Headless attention knockout: `--knockout FLOWS` with `--window W` or `--layers A:B`, its
lines in the summary and its part of the `--json` report (docs/definitions.md, "Knockout
positions and flows")."""

from __future__ import annotations

import argparse

from flowtui.cli.common import positive_int

FLOWS_HELP = ("comma-separated flows SRC->DST over the positions system, image, question, last, "
              "answer (SRC before DST, or last->last); `+` joins edges knocked out together, "
              "e.g. image->question,image->last,question->last,last->last")


def add_options(h: argparse._ArgumentGroup) -> None:
    h.add_argument("--knockout", metavar="FLOWS", default=None,
                   help="also knock out attention along each flow: " + FLOWS_HELP)
    h.add_argument("--window", type=positive_int, metavar="W", default=None,
                   help="--knockout in a window of W layers centred on each layer (default: "
                        "max(1, round(9·L/32)), the paper's 9 of 32)")
    h.add_argument("--layers", metavar="A:B", default=None,
                   help="--knockout once, in layers A..B-1, instead of a sweep of windows")
    h.add_argument("--knockout-answers", action="store_true",
                   help="--knockout also decodes the greedy answer under each knockout")


DEFAULTS = {"knockout": None, "window": None, "layers": None, "knockout_answers": False}


def validate(args) -> None:
    """What can be checked before the model loads."""
    from flowtui.engine.errors import InputError
    from flowtui.engine.knockout_flows import parse_flows, parse_layers

    if args.knockout is None:
        given = [f"--{o.replace('_', '-')}" for o in ("window", "layers", "knockout_answers")
                 if getattr(args, o) != DEFAULTS[o]]
        if given:
            raise InputError(f"{', '.join(given)}: only with --knockout FLOWS")
        return
    parse_flows(args.knockout)
    if args.window is not None and args.layers is not None:
        raise InputError("--window and --layers: give one (a sweep of windows, or one range)")
    if args.layers is not None:
        parse_layers(args.layers)


def check_against(engine, args) -> None:
    """The bounds that need the model's depth, checked before it generates anything."""
    from flowtui.engine.errors import InputError
    from flowtui.engine.knockout_flows import parse_layers

    L = engine.info.num_layers
    if args.knockout is None:
        return
    if args.layers is not None:
        parse_layers(args.layers, L)
    if args.window is not None and args.window > L:
        raise InputError(f"--window {args.window}: the knockout window must be 1..{L} layers "
                         f"({engine.info.name} has {L})")


def run(engine, a, args, progress) -> None:
    if args.knockout is not None:
        engine.knockout(a, args.knockout, window=args.window, layers=args.layers,
                        greedy=args.knockout_answers, progress=progress)


def summary_lines(a) -> list[str]:
    k = a.knockout
    if k is None:
        return []
    lines = [f"knockout: {k.describe_layers()}, baseline p(first token) "
             f"{k.baseline_first_prob:.4f}"]
    for f, name in enumerate(k.flows):
        worst = int(k.rel_change[f].argmin())
        where = (f"layers {k.layers[0]}..{k.layers[1] - 1}" if k.layers is not None
                 else f"window at layer {worst}")
        lines.append(f"  {name}: min change {k.rel_change[f, worst]:+.1f}% ({where}); "
                     f"answer log-prob {k.logprob[f, worst]:.3f}")
    return lines


def as_json(a) -> dict | None:
    """The knockout for the --json report: the manifest's fields plus the arrays as lists."""
    from flowtui.engine.knockout_codec import encode

    meta, arrays = encode(a.knockout)
    if meta is None:
        return None
    short = {"knockout_first_prob": "first_prob", "knockout_rel_change": "rel_change",
             "knockout_logprob": "logprob"}
    return {**meta, **{short[n]: arr.tolist() for n, arr in arrays.items()}}
