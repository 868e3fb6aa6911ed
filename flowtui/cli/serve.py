"""`flowtui serve`: the model's side of a remote session (the explorer runs elsewhere)."""

from __future__ import annotations

import argparse

from flowtui.cli.common import Parser, positive_int

HELP = "serve the engine to a remote explorer: --stdio (what ssh runs) or --daemon (warm models)"

DESCRIPTION = """\
Serve flowtui's engine over its protocol (docs/remote.md) to an explorer on another machine.

--stdio speaks on stdin/stdout: the explorer runs `ssh -T HOST flowtui serve --stdio` itself
(`flowtui IMAGE QUESTION --remote HOST`); you do not normally type it. If a daemon of yours is
running, it relays to it, so the model is already loaded.

--daemon keeps loaded models in one process, behind a Unix socket only you can open
($FLOWTUI_SOCKET, default <tmp>/flowtui-<uid>/daemon.sock). It runs in the foreground until
Ctrl+C or SIGTERM: start it in tmux/screen, or `nohup flowtui serve --daemon &`.
"""


def build_parser(prog: str = "flowtui serve") -> argparse.ArgumentParser:
    p = Parser(prog=prog, description=DESCRIPTION,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--stdio", action="store_true",
                      help="one session on stdin/stdout (logs on stderr)")
    mode.add_argument("--daemon", action="store_true",
                      help="keep models warm for every session, behind an owner-only socket")
    p.add_argument("--socket", metavar="PATH", default=None,
                   help="the daemon's socket (default: $FLOWTUI_SOCKET or "
                        "<tmp>/flowtui-<uid>/daemon.sock)")
    p.add_argument("--no-relay", action="store_true",
                   help="with --stdio: load the model here even if a daemon runs")
    p.add_argument("--max-models", type=positive_int, default=1, metavar="N",
                   help="with --daemon: models kept loaded at once (default: 1)")
    return p


def run(argv: list[str], prog: str = "flowtui serve") -> int:
    args = build_parser(prog).parse_args(argv)
    from flowtui.remote import server

    if args.stdio:
        return server.serve_stdio(socket_path=args.socket, relay=not args.no_relay)
    return server.serve_daemon(socket_path=args.socket, max_models=args.max_models)
