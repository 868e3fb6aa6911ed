"""`flowtui compare A.flowtui B.flowtui`: two snapshots on one layer cursor, in the compare
screen, or headless (a table, JSON or a PNG)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flowtui.cli.common import (
    THEME_HELP,
    Parser,
    add_pixel_options,
    check_theme,
    pixel_settings,
    say,
)

HELP = "compare two .flowtui snapshots layer by layer: share differences, CAM correlation, cliffs"

EPILOG = """\
Layers: the same depth compares layer by layer; different depths by relative depth l/L (each
layer of the shallower model against the deeper model's layer of nearest l/L; cliffs as K/L).
Share difference = A - B per token group; CAM correlation = Pearson's r over the image tokens,
only where both snapshots have the same image tokens (same count, views and regions), and not
where a layer's map is constant.

With no --json, --png or --table this opens the compare screen in the terminal: both
questions and answers, one layer cursor (left/right), the shares of both with A - B, both maps
on one colour scale (m: CAM or attention) with the CAM correlation, both sweeps with both
cliffs; e exports the pair, p the figure, ? lists the keys, q quits. Where the output is not a
terminal (a pipe, a file) it prints the text table instead, as --table does.

examples:
  flowtui img.png "Is there a red circle?" --headless --sweep --out a.flowtui
  flowtui img.png "Is there a blue square?" --headless --sweep --out b.flowtui
  flowtui compare a.flowtui b.flowtui            # the compare screen
  flowtui compare a.flowtui b.flowtui --table    # the text table
  flowtui compare a.flowtui b.flowtui --json --png compare.png
"""


def build_parser(prog: str = "flowtui compare") -> argparse.ArgumentParser:
    p = Parser(prog=prog, description="Compare two snapshots (no model needed): per layer the "
               "attention-share difference A - B per token group and the Pearson correlation of "
               "the two LLaVA-CAMs, and both cliff layers.", epilog=EPILOG,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", metavar="A", help="a .flowtui snapshot")
    p.add_argument("b", metavar="B", help="another .flowtui snapshot")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (a, b, relative_depth, layers) instead of the table")
    p.add_argument("--table", action="store_true",
                   help="print the plain text table instead of opening the compare screen")
    p.add_argument("--theme", default=None, help=THEME_HELP)
    add_pixel_options(p)
    p.add_argument("--png", metavar="FILE", default=None,
                   help="also write a figure: both analyses' shares on one scale, their "
                        "difference per layer, the CAM correlation, both cliffs marked")
    return p


def run(argv: list[str], prog: str = "flowtui compare") -> int:
    args = build_parser(prog).parse_args(argv)
    from flowtui.compare import check_png_target, compare, format_table, save_png
    from flowtui.engine.snapshot import load_snapshot

    a, b = load_snapshot(args.a), load_snapshot(args.b)
    check_theme(args.theme)
    if args.png is not None:
        check_png_target(Path(args.png), (args.a, args.b))  # before any output
    c = compare(a, b, files=(args.a, args.b))
    if args.png is not None:
        save_png(c, args.png, (args.a, args.b))
    # The screen only where someone can see it: scripts and pipes keep the table.
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if not (args.json or args.table or args.png is not None) and interactive:
        from flowtui.ui.app import run_compare

        return run_compare(c, theme=args.theme, **pixel_settings(args))
    if args.json:
        print(json.dumps(c.to_json(), indent=1))  # ASCII: no raw control characters
    else:
        say(format_table(c))
        if args.png is not None:
            say(f"wrote {args.png}")
    return 0
