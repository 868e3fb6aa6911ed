"""`flowtui doctor`: is this install (or the GPU box's) able to give right numbers?"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, cast

from flowtui.cli.common import Parser, fail, say

if TYPE_CHECKING:
    from flowtui.selftest.checks import Item

HELP = ("check Python, torch, packages, ssh, colours, graphics, and self-test every family on "
        "tiny models")

DESCRIPTION = """\
Check what flowtui depends on, then self-test it: Python; torch (build, CUDA, devices);
transformers, accelerate and Textual against the versions flowtui is tested with; ssh and the
daemon's socket (for --remote); the colour system and the graphics protocol (kitty, Sixel, iTerm
or half-blocks) the explorer would use in this terminal; and,
for every supported family, a tiny random model built from its config (no download) analysed and
swept through flowtui's own code path, every K checked against an independent eager reference
(greedy answers, and the baseline answer's log-prob to 1e-3) and the attention shares against
eager output_attentions.

--remote HOST runs `flowtui doctor --json` on HOST over your ssh and shows its table with this
machine's ssh and colour checks.

exit codes: 0 all well (warnings allowed), 1 a check failed (each failure named on stderr),
2 bad input.
"""

# Checks of the far side that concern this machine instead: the explorer, and ssh, run here.
LOCAL_ONLY = ("colours", "graphics", "ssh")
# The self-test's progress lines (checks.selftest), relayed from a remote doctor.
PROGRESS = re.compile(r"^\[ *\d+\.\ds\] self-test ")
COLOR_SYSTEMS = ("auto", "standard", "256", "truecolor", "windows")


def build_parser(prog: str = "flowtui doctor") -> argparse.ArgumentParser:
    p = Parser(prog=prog, description=DESCRIPTION,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true",
                   help="print the results as JSON on stdout (progress stays on stderr)")
    p.add_argument("--families", metavar="A,B", default=None,
                   help="self-test only these families (default: all; names as in `flowtui "
                        "doctor --list-families`)")
    p.add_argument("--list-families", action="store_true",
                   help="print the families the self-test knows and exit")
    p.add_argument("--no-self-test", action="store_true",
                   help="the quick checks only (seconds)")
    g = p.add_argument_group("remote")
    g.add_argument("--remote", metavar="[USER@]HOST", default=None,
                   help="run the doctor on HOST: `ssh -T HOST CMD doctor --json` with your ssh "
                        "($FLOWTUI_SSH_COMMAND replaces `ssh`)")
    g.add_argument("--remote-cmd", metavar="CMD", default=None,
                   help="how to run flowtui on HOST (default: flowtui; e.g. ~/venv/bin/flowtui)")
    return p


def run(argv: list[str], prog: str = "flowtui doctor") -> int:
    from flowtui.engine.errors import InputError
    from flowtui.selftest import checks

    args = build_parser(prog).parse_args(argv)
    if args.remote_cmd and not args.remote:
        raise InputError("--remote-cmd needs --remote HOST")
    if args.families is not None and args.no_self_test:
        raise InputError("--families and --no-self-test contradict each other")
    names = _families(args.families) if args.families is not None else None
    if args.list_families:
        print("\n".join(checks.families()))
        return 0
    start = time.perf_counter()
    if args.remote:
        return _remote(args, names, start)
    # The self-test builds its models from code: nothing may reach a hub, even by accident.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    items = [*checks.environment_items(), colour_item(), graphics_item()]
    if not args.no_self_test:
        from flowtui.engine.loading import quiet_transformers

        quiet_transformers()
        items += checks.selftest(names, say=_progress)
    host = socket.gethostname()
    return _report([(f"flowtui doctor on {host}", items)], start, args.json, host=host)


def _families(text: str) -> list[str]:
    from flowtui.engine.errors import InputError
    from flowtui.selftest import checks

    known = checks.families()
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise InputError("--families is empty; give names such as llava,qwen2_vl")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} "
                         f"{', '.join(map(repr, unknown))}; known: {', '.join(known)}")
    return list(dict.fromkeys(names))


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def colour_item() -> Item:
    """The colour system the explorer would get here, decided as Textual's App decides it (a
    Rich Console forced to a terminal, $TEXTUAL_COLOR_SYSTEM or auto, NO_COLOR taken out),
    without starting an app."""
    import io

    from rich.console import Console

    from flowtui.selftest.checks import FAIL, OK, WARN, Item

    env = dict(os.environ)
    no_color = env.pop("NO_COLOR", None) is not None
    forced = env.get("TEXTUAL_COLOR_SYSTEM")
    wanted = forced or "auto"
    facts = ", ".join(f"{k}={env[k]!r}" for k in ("TERM", "COLORTERM", "TEXTUAL_COLOR_SYSTEM")
                      if k in env) or "TERM and COLORTERM unset"
    if wanted not in COLOR_SYSTEMS:
        msg = (f"TEXTUAL_COLOR_SYSTEM={wanted!r} is not one of {', '.join(COLOR_SYSTEMS)}: the "
               "explorer will not start")
        return Item("terminal", "colours", FAIL, msg, failures=[msg])
    # `wanted` is one of COLOR_SYSTEMS, rich's Literal names (just above)
    system = Console(color_system=cast(Any, wanted), file=io.StringIO(), force_terminal=True,
                     legacy_windows=False, _environ=env).color_system
    data = {"color_system": system, "no_color": no_color, "forced": forced}
    if no_color:
        return Item("terminal", "colours", WARN, f"NO_COLOR is set: the explorer draws in "
                    f"monochrome, and heatmaps lose their meaning ({facts})", data=data)
    if system == "truecolor":
        how = "TEXTUAL_COLOR_SYSTEM" if forced else "COLORTERM" if \
            env.get("COLORTERM", "").lower() in ("truecolor", "24bit") else "detected"
        return Item("terminal", "colours", OK, f"truecolor ({how}; {facts})", data=data)
    if system is None:
        return Item("terminal", "colours", WARN, f"no colours: TERM says a dumb terminal "
                    f"({facts}); set TERM, or TEXTUAL_COLOR_SYSTEM=truecolor", data=data)
    return Item("terminal", "colours", WARN, f"{system} colours ({facts}): heatmaps are banded. "
                "If the terminal does true colour (most do), export COLORTERM=truecolor or "
                "TEXTUAL_COLOR_SYSTEM=truecolor (over ssh: README, Over SSH)", data=data)


def graphics_item() -> Item:
    """The protocol the explorer's map would be drawn with here (--pixels auto), probed on this
    terminal as the explorer probes it at start (render/terminal.py)."""
    from flowtui.render.terminal import detect
    from flowtui.selftest.checks import OK, WARN, Item

    g = detect("auto")
    data = {"protocol": g.protocol, "reason": g.reason, "tmux": g.tmux}
    if g.pixels:
        return Item("terminal", "graphics", OK, f"real pixels: {g.describe()}", data=data)
    if g.reason == "not a terminal":
        return Item("terminal", "graphics", OK, "not asked (stdout is not a terminal): the "
                    "explorer asks when it starts; --pixels overrides", data=data)
    if g.tmux or "no answer" in g.reason:
        return Item("terminal", "graphics", WARN, f"half-blocks: {g.reason} (README, Real "
                    "pixels; --pixels overrides)", data=data)
    return Item("terminal", "graphics", OK, f"half-blocks: {g.reason} (kitty, WezTerm, foot, "
                "iTerm2 and others show real pixels)", data=data)


# --- output -------------------------------------------------------------------------------------
SECTIONS = ("python", "packages", "torch", "remote", "terminal", "self-test")
MARKS = {"ok": "ok", "warn": "WARN", "fail": "FAIL"}


def table(items: list[Item], title: str | None = None) -> str:
    """Plain text, one line per item, grouped by section."""
    width = max([len(it.name) for it in items] + [8])
    lines = [title] if title else []
    order = {s: i for i, s in enumerate(SECTIONS)}
    for section in sorted({it.section for it in items}, key=lambda s: order.get(s, 99)):
        lines.append(f"{section}")
        for it in (i for i in items if i.section == section):
            took = f"  [{it.seconds:.1f}s]" if it.seconds is not None else ""
            lines.append(f"  {MARKS.get(it.status, it.status):<4}  {it.name:<{width}}  "
                         f"{it.detail}{took}")
    return "\n".join(lines)


def _report(parts: list[tuple[str, list[Item]]], start: float, as_json: bool, host: str,
            remote: dict | None = None) -> int:
    """Print the tables (or the JSON) and one error line per failure; the exit code."""
    from flowtui.selftest.checks import failures
    from flowtui.version import __version__

    items = [it for _title, group in parts for it in group]
    failed = failures(items)
    seconds = round(time.perf_counter() - start, 2)
    if as_json:
        out: dict[str, Any] = {"format": "flowtui.doctor", "version": 1, "flowtui": __version__,
                               "host": host, "ok": not failed, "seconds": seconds,
                               "failures": failed, "items": [it.to_json() for it in items]}
        if remote is not None:
            out["remote"] = remote
        print(json.dumps(out, indent=2))
    else:
        say("\n\n".join(table(group, title) for title, group in parts if group))
        counts = {s: sum(it.status == s for it in items) for s in MARKS}
        say(f"\n{counts['ok']} ok, {counts['warn']} warnings, {counts['fail']} failed "
            f"in {seconds:.1f}s")
    for line in failed:
        fail(line, 1)
    return 1 if failed else 0


# --- remote -------------------------------------------------------------------------------------
def remote_argv(host: str, remote_cmd: str, args: list[str]) -> list[str]:
    """`ssh -T -o BatchMode=yes HOST 'CMD doctor --json …'`, with --remote's checks of the host
    name and FLOWTUI_SSH_COMMAND."""
    from flowtui.remote.connection import ssh_argv

    argv = ssh_argv(host, remote_cmd)
    return [*argv[:-1], " ".join([remote_cmd, "doctor", "--json", *map(shlex.quote, args)])]


def _remote(args, names: list[str] | None, start: float) -> int:
    from flowtui.selftest.checks import FAIL, Item, ssh_item

    cmd = args.remote_cmd or "flowtui"
    extra = ["--no-self-test"] if args.no_self_test else []
    if names is not None:
        extra += ["--families", ",".join(names)]
    argv = remote_argv(args.remote, cmd, extra)
    local = [ssh_item(), colour_item(), graphics_item()]
    for it in local:
        it.name = f"{it.name} (here)"
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        return fail(f"cannot run {argv[0]!r}: {exc.strerror or exc} (install OpenSSH's client, "
                    "or set FLOWTUI_SSH_COMMAND)", 1)
    tail: list[str] = []

    def relay() -> None:
        # The far side's progress lines, live, tagged with the host; anything else (ssh's and
        # the shell's words) is kept to explain a failure in one line.
        assert proc.stderr is not None
        for raw in iter(proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if PROGRESS.match(line):
                say(f"[{args.remote}] {line}", file=sys.stderr)
            elif line:
                tail.append(line)
                del tail[:-20]

    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    try:
        assert proc.stdout is not None
        out = proc.stdout.read()  # not communicate(): the relay thread owns stderr
        proc.wait()
    except KeyboardInterrupt:
        proc.kill()
        raise
    reader.join(timeout=5)
    report = _parse(out)
    if report is None:
        return fail(_why(args.remote, cmd, proc.returncode, tail, out), 1)
    try:
        items = [Item.from_json(d) for d in report.get("items", [])
                 if d.get("name") not in LOCAL_ONLY]
    except (AttributeError, KeyError, TypeError, ValueError):
        return fail(f"flowtui doctor on {args.remote} (flowtui {report.get('flowtui')}) gave a "
                    "report this flowtui cannot read; install the same version on both sides", 1)
    for it in items:
        if it.status not in MARKS:
            it.status = FAIL
    info = {"host": report.get("host"), "flowtui": report.get("flowtui"),
            "seconds": report.get("seconds"), "exit": proc.returncode}
    there = f"{args.remote} ({report.get('host')})"
    return _report([(f"flowtui doctor on {there}", items), ("this machine", local)], start,
                   args.json, host=there, remote=info)


def _parse(out: bytes) -> dict | None:
    try:
        report = json.loads(out.decode("utf-8", "replace"))
    except ValueError:
        return None
    if not isinstance(report, dict) or report.get("format") != "flowtui.doctor":
        return None
    return report


def _why(host: str, cmd: str, code: int | None, tail: list[str], out: bytes) -> str:
    """One line: why the far side gave no report."""
    from flowtui.remote.connection import remote_exit_reason

    last = tail[-1] if tail else ""
    known = remote_exit_reason(host, cmd, code, last, "has no `doctor` command",
                               "install a newer flowtui there")
    if known is not None:
        return known
    printed = out.decode("utf-8", "replace").strip()[:120]
    detail = f": {last}" if last else f": it printed {printed!r}" if printed else ""
    return f"flowtui doctor on {host} gave no report (exit code {code}){detail}"
