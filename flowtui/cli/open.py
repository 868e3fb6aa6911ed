"""`flowtui open FILE`: reopen a snapshot in the explorer (or print its summary)."""

from __future__ import annotations

import argparse

from flowtui.cli.common import (
    THEME_HELP,
    Parser,
    add_model_options,
    add_pixel_options,
    add_remote_options,
    check_model_options,
    check_theme,
    engine_factory,
    pixel_settings,
    quiet_log,
    summary,
)

HELP = "reopen a .flowtui snapshot (no model needed; --model enables reruns)"


def build_parser(prog: str = "flowtui open") -> argparse.ArgumentParser:
    p = Parser(prog=prog, description="Reopen a .flowtui snapshot in the explorer. No model is "
               "needed to look at it; pass --model to enable truncation reruns and sweeps. "
               "Snapshots made with the built-in toy model (flowtui-toy) rerun with no flag.")
    p.add_argument("snapshot", help="a .flowtui file")
    add_model_options(p)
    add_remote_options(p)
    p.add_argument("--theme", default=None, help=THEME_HELP)
    add_pixel_options(p)
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

    if args.model is None and args.remote is None and analysis.model.name == TOY_NAME:
        args.model = TOY_NAME  # the built-in model is always at hand: reruns just work
    # A remote engine is enabled by --remote alone (the remote default is the toy model).
    reruns = args.model is not None or args.remote is not None
    if reruns or args.remote_cmd:
        check_model_options(args)
    from flowtui.ui.app import run_explorer

    return run_explorer(
        analysis=analysis,
        engine_factory=engine_factory(args, on_log=quiet_log) if reruns else None,
        theme=args.theme,
        snapshot_path=args.snapshot,
        **pixel_settings(args),
    )
