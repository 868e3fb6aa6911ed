"""The `flowtui` command: subcommands, each with its own --help; `flowtui IMAGE QUESTION` is
the default (`analyze`).

A subcommand is a module here with `HELP` (one line) and `run(argv, prog) -> int`; add it to
COMMANDS. Every expected failure is one line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from flowtui.cli.common import fail
from flowtui.textsafe import visible
from flowtui.version import __version__

# Commands that may load a model (and so warn about an untested torch or transformers).
LOADS_MODELS = {"analyze", "dataset", "serve", "web"}

# name -> module under flowtui.cli; the first is the default command.
COMMANDS: dict[str, str] = {"analyze": "analyze", "open": "open", "compare": "compare",
                           "dataset": "dataset", "serve": "serve", "web": "web",
                           "doctor": "doctor"}

USAGE = """\
usage: flowtui IMAGE QUESTION [options]      analyse in the explorer (or --headless)
       flowtui COMMAND [options]

Explore the information flow inside a vision-language model: attention shares per layer by
token group, LLaVA-CAM heatmaps over the image, and truncation of the image from layer K to
find the cliff layer.

commands:
{commands}

New here, or on a new machine? `flowtui doctor` checks the install and self-tests every family.

`flowtui COMMAND --help` explains each; `flowtui IMAGE QUESTION` is `flowtui analyze IMAGE
QUESTION`. Try the built-in toy model:
  flowtui sample_images/toy_scene_1.png "Is there a red circle?"

exit codes: 0 ok, 2 bad input (one line on stderr), 3 a self-check failed (see `flowtui analyze
--help`), 130 interrupted.
"""


def _module(name: str):
    return importlib.import_module(f"flowtui.cli.{COMMANDS[name]}")


def usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [f"  {n:<{width}}  {_module(n).HELP}" for n in COMMANDS]
    return USAGE.format(commands="\n".join(lines))


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"flowtui {__version__}")
        return 0
    name = argv[0] if argv[0] in COMMANDS else "analyze"
    rest = argv[1:] if argv[0] in COMMANDS else argv
    if name in LOADS_MODELS and not {"-h", "--help"} & set(rest):
        from flowtui import versions

        # One line before any model time: numbers from an untested release may be wrong.
        versions.warn_untested(lambda line: print(f"flowtui: warning: {visible(line)}",
                                                  file=sys.stderr))
    return _module(name).run(rest, prog="flowtui" if rest is argv else f"flowtui {name}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. Every expected failure is one line on stderr and exit code 2."""
    from flowtui.engine.errors import Cancelled, FlowtuiError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except Cancelled as exc:
        return fail(str(exc), 130)
    except FlowtuiError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except MemoryError:
        return fail("out of memory; try a smaller model, --dtype bfloat16 or --quantize 4bit", 1)
    except Exception as exc:  # noqa: BLE001 - the promise is no tracebacks for users
        if os.environ.get("FLOWTUI_DEBUG"):
            raise
        kind = type(exc).__name__
        if "OutOfMemory" in kind:
            return fail("out of GPU memory; try --dtype bfloat16, --quantize 4bit or a "
                        "shorter --max-new-tokens", 1)
        first = (str(exc).splitlines() or [""])[0]
        return fail(f"unexpected {kind}: {first} (set FLOWTUI_DEBUG=1 for the traceback)", 1)


if __name__ == "__main__":
    sys.exit(main())
