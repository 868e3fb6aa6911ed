"""`flowtui open FILE`: reopen a snapshot in the explorer (or print its summary)."""

from __future__ import annotations

import argparse

from flowtui.cli.common import (
    THEME_HELP,
    Parser,
    add_model_options,
    check_model_options,
    check_theme,
    engine_factory,
    summary,
)

HELP = "reopen a .flowtui snapshot (no model needed; --model enables reruns)"


def build_parser(prog: str = "flowtui open") -> argparse.ArgumentParser:
    p = Parser(prog=prog, description="Reopen a .flowtui snapshot in the explorer. No model is "
               "needed to look at it; pass --model to enable truncation reruns and sweeps. "
               "Snapshots made with the built-in toy model (flowtui-toy) rerun with no flag.")
    p.add_argument("snapshot", help="a .flowtui file")
    add_model_options(p)
    p.add_argument("--theme", default=None, help=THEME_HELP)
    p.add_argument("--summary", action="store_true",
                   help="print the snapshot's summary instead of opening the explorer")
    return p


def run(argv: list[str], prog: str = "flowtui open") -> int:
    args = build_parser(prog).parse_args(argv)
    from flowtui.engine.snapshot import load_snapshot

    analysis = load_snapshot(args.snapshot)
    if args.summary:
        print(summary(analysis))
        return 0
    check_theme(args.theme)
    from flowtui.engine.loading import TOY_NAME

    if args.model is None and analysis.model.name == TOY_NAME:
        args.model = TOY_NAME  # the built-in model is always at hand: reruns just work
    if args.model is not None:
        check_model_options(args)
    from flowtui.ui.app import run_explorer

    return run_explorer(
        analysis=analysis,
        engine_factory=engine_factory(args) if args.model is not None else None,
        theme=args.theme,
        snapshot_path=args.snapshot,
    )
