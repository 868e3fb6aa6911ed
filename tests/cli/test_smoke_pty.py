"""Smoke tests of every command as a user types it: the installed `flowtui` console script in a
real pseudo-terminal (100x30, TERM=xterm-256color), its screen read through a terminal emulator,
keys sent as a keyboard sends them, and a clean exit checked (exit status 0, the terminal's modes
restored, no traceback).

The Pilot tests drive the apps through `run_test()`; these catch what only a real start shows
(e.g. an attribute of the app hiding `App.run()`, which `run_test()` never calls).

Why pexpect + pyte rather than tmux: the child is ours (its exit status comes straight from
waitpid, with no shell wrapper or shared tmux server), every byte it writes is kept (so the
escape sequences that restore the terminal can be checked, and a traceback printed after the
alternate screen is left is still seen), the pty's termios can be read after the exit (raw mode
undone), and pyte is a pure-Python emulator that installs with pip (the `test` extra), so the
tests behave the same wherever pytest runs. `flowtui serve --stdio` is not typed here: it speaks
binary frames to ssh, and the --remote test runs it through a real sshd.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import sysconfig
import termios
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pyte
import pytest
from support import sshd_local
from support.remote_util import ROOT, remote_cmd, subprocess_env

import flowtui.cli

# Not in the fast lane (`-m "not slow"`): the real console script in a pseudo-terminal.
pytestmark = pytest.mark.slow

COLS, ROWS = 100, 30
SAMPLE = ROOT / "sample_images" / "toy_scene_1.png"
QUESTION = "Is there a red circle?"
ENTER, RIGHT, LEFT, CTRL_C = "\r", "\x1b[C", "\x1b[D", "\x03"

# Modes a full-screen app sets and must undo on exit: (sequence that sets, sequence that undoes).
MODES = [("\x1b[?1049h", "\x1b[?1049l"),  # alternate screen
         ("\x1b[?25l", "\x1b[?25h"),  # hidden cursor
         ("\x1b[?1000h", "\x1b[?1000l"), ("\x1b[?1003h", "\x1b[?1003l"),  # mouse reports
         ("\x1b[?1006h", "\x1b[?1006l"),
         ("\x1b[?2004h", "\x1b[?2004l"),  # bracketed paste
         ("\x1b[?1004h", "\x1b[?1004l"),  # focus events
         ("\x1b[?7l", "\x1b[?7h")]  # no line wrap


def flowtui_script() -> str:
    """The console script pip installed for this Python (what a user types): next to the
    interpreter in a virtual environment, else in its scripts folder or on PATH."""
    candidates = [Path(sys.executable).parent / "flowtui",
                  Path(sysconfig.get_path("scripts")) / "flowtui", shutil.which("flowtui")]
    for script in candidates:
        if script and Path(script).is_file():
            return str(script)
    pytest.fail(f"no flowtui console script (looked at {candidates}): pip install -e '.[test]'")


def term_env(**extra: str) -> dict[str, str]:
    env = subprocess_env(TERM="xterm-256color", LC_ALL="C.UTF-8", **extra)
    # Settings of whoever runs the tests would change what is drawn or how errors show; the
    # size comes from the pty alone.
    for name in [n for n in env if n.startswith("TEXTUAL_")] + [
            "COLORTERM", "NO_COLOR", "FLOWTUI_DEBUG", "COLUMNS", "LINES"]:
        env.pop(name, None)
    return env


class Term:
    """One command in a pseudo-terminal, its screen emulated by pyte."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()
        self._carry = b""
        self.status: int | None = None
        self.tty_sane: bool | None = None  # cooked mode back after the exit
        self.child = pexpect.spawn(flowtui_script(), args, cwd=str(cwd), env=env or term_env(),
                                   dimensions=(ROWS, COLS))

    def _feed(self, data: bytes, final: bool = False) -> None:
        self.raw.extend(data)
        # pyte knows CSI > (kitty keyboard push) but draws the final byte of CSI < (pop) as a
        # character: make it the same no-op. A sequence's start split across reads waits.
        data = (self._carry + data).replace(b"\x1b[<", b"\x1b[>")
        keep = 0 if final else 1 if data.endswith(b"\x1b") else 2 if data.endswith(b"\x1b[") else 0
        self._carry = data[len(data) - keep:] if keep else b""
        self.stream.feed(data[: len(data) - keep])

    def pump(self, seconds: float) -> bool:
        """Read for `seconds`; False once the command has closed the terminal."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                self._feed(self.child.read_nonblocking(65536, timeout=0.05))
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                self._feed(b"", final=True)
                return False
        return True

    @property
    def text(self) -> str:
        return "\n".join(self.screen.display)

    @property
    def output(self) -> str:
        """Everything written, escape sequences removed, as one string."""
        text = self.raw.decode("utf-8", "replace")
        return re.sub(r"\x1b(\[[0-9;?<>=$]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-B]|.)", "",
                      text).replace("\r\n", "\n")

    def report(self) -> str:
        screen = "\n".join(line.rstrip() for line in self.screen.display).strip("\n")
        return (f"flowtui {' '.join(self.args)}\n--- screen ---\n{screen}\n"
                f"--- output (tail) ---\n{self.output[-3000:]}")

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float = 60) -> None:
        """Until ready() holds for the screen; fails at once if the command ends first."""
        end = time.monotonic() + timeout
        while not ready():
            if not self.pump(0.2):
                self.finish()
                pytest.fail(f"exited ({self.status}) before {what} showed\n{self.report()}")
            if time.monotonic() > end:
                pytest.fail(f"{what} not on screen after {timeout}s\n{self.report()}")

    def wait_for(self, *needles: str, timeout: float = 60) -> None:
        """Until every needle is on screen."""
        self.wait_until(lambda: all(n in self.text for n in needles), repr(needles), timeout)

    def resize(self, cols: int, rows: int) -> None:
        """As a terminal window resized: the pty's size (SIGWINCH) and the emulator's."""
        self.screen.resize(rows, cols)
        self.child.setwinsize(rows, cols)

    def press(self, *keys: str) -> None:
        for key in keys:
            self.child.send(key)

    def finish(self, timeout: float = 60) -> int:
        """Wait for the command to end; its exit status (128+N for signal N)."""
        end = time.monotonic() + timeout
        while self.pump(0.2):
            if time.monotonic() > end:
                pytest.fail(f"still running {timeout}s later\n{self.report()}")
        if self.status is None:
            lflags = termios.tcgetattr(self.child.child_fd)[3]  # the pty's modes, after the exit
            self.tty_sane = bool(lflags & termios.ECHO and lflags & termios.ICANON
                                 and lflags & termios.ISIG)
            self.child.close()
            sig = self.child.signalstatus
            self.status = self.child.exitstatus if sig is None else 128 + sig
        return self.status

    def quit_cleanly(self, key: str = "q") -> None:
        """The app's quit key, then: exit 0, every terminal mode it set undone, cooked mode
        back, and nothing like a traceback written."""
        self.press(key)
        status = self.finish()
        assert status == 0, self.report()
        self.assert_restored()

    def assert_restored(self) -> None:
        raw = self.raw.decode("utf-8", "replace")
        assert MODES[0][0] in raw, f"never went full screen\n{self.report()}"
        for on, off in MODES:
            if on in raw:
                assert raw.rfind(on) < raw.rfind(off), f"{on!r} left set\n{self.report()}"
        assert self.tty_sane, "the terminal was left in raw mode (no echo or line editing)"
        assert "Traceback" not in self.output and "flowtui: error" not in self.output, \
            self.report()

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)


@pytest.fixture
def term(tmp_path) -> Iterator:
    """term(*args, cwd=..., env=...) starts `flowtui ARGS`; every one is killed at teardown."""
    started: list[Term] = []

    def start(*args: str | Path, cwd: Path = tmp_path, env: dict[str, str] | None = None) -> Term:
        t = Term([str(a) for a in args], cwd, env)
        started.append(t)
        return t

    yield start
    for t in started:
        t.close()


def run_to_end(*args: str | Path, cwd: Path, env: dict[str, str] | None = None,
               timeout: float = 120) -> Term:
    """A command that ends by itself (a headless one, a --help), run to its exit."""
    t = Term([str(a) for a in args], cwd, env)
    try:
        t.finish(timeout)
    finally:
        t.close()
    return t


@dataclass
class ToyRun:
    data: Path
    run_dir: Path
    toy: Term
    run: Term


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> ToyRun:
    """A small dataset run of the toy model, made as the README says (`dataset toy`, then
    `dataset run`), with snapshots so Enter opens a sample without a model."""
    d = tmp_path_factory.mktemp("toy-run")
    toy = run_to_end("dataset", "toy", "data", "--n", "2", cwd=d)
    assert toy.status == 0, toy.report()
    run = run_to_end("dataset", "run", "data/pope.jsonl", "--out", "run", "--max-new-tokens", "3",
                     "--snapshots", cwd=d, timeout=180)
    assert run.status == 0, run.report()
    return ToyRun(d / "data", d / "run", toy, run)


@pytest.mark.slow
def test_dataset_show_opens_a_sample_and_quits(toy_run, term):
    """`flowtui dataset show RUN`: the table, Enter opens the sample's stored snapshot in the
    explorer, d comes back, q quits."""
    t = term("dataset", "show", toy_run.run_dir)
    t.wait_for("samples: 2 of 2", "accuracy against K", "flowtui-toy on run")
    first = json.loads((toy_run.data / "pope.jsonl").read_text().splitlines()[0])["text"]
    assert first in t.text  # the first sample's row
    t.press(ENTER)
    t.wait_for("sample 0 from 000000.flowtui", f"Q {first}", "Flow · attention shares",
               "Truncation needs a model")
    t.press("d")
    t.wait_for("samples: 2 of 2")
    t.quit_cleanly()


@pytest.mark.slow
def test_dataset_show_run_model_reruns_with_the_runs_model(toy_run, term):
    """`flowtui dataset show RUN --run-model`: the same browser, and the opened sample reruns
    truncations with the model named in the run's config (loaded on the first rerun)."""
    t = term("dataset", "show", toy_run.run_dir, "--run-model")
    t.wait_for("samples: 2 of 2", "accuracy against K")
    t.press(ENTER)
    t.wait_for("sample 0 from 000000.flowtui", "Flow · attention shares")
    assert "Truncation needs a model" not in t.text
    t.press("t", ENTER)  # focus the truncation panel, run K=0
    t.wait_for("runs this session (1)", "K=0  all", "ready")
    t.quit_cleanly()


@pytest.mark.slow
def test_dataset_toy_run_and_report_as_typed(toy_run, tmp_path):
    """The headless dataset commands in a terminal (tqdm's bar, progress on the tty)."""
    assert "wrote 2 toy scenes: data/pope.jsonl" in toy_run.toy.output
    assert "2 samples scored with 'pope'" in toy_run.run.output
    assert "dataset cliff" in toy_run.run.output and "wrote run/" in toy_run.run.output
    for t in (toy_run.toy, toy_run.run):
        assert "Traceback" not in t.output
    report = run_to_end("dataset", "report", toy_run.run_dir, "--no-plots", cwd=tmp_path)
    assert report.status == 0, report.report()
    assert "2 samples scored with 'pope'" in report.output
    assert "dataset cliff" in report.output and "Traceback" not in report.output


@pytest.mark.slow
def test_explorer_on_the_bundled_sample(term):
    """The README's first command, from the checkout: the toy answers, the panels are drawn,
    keys move the layer, q quits."""
    t = term("sample_images/toy_scene_1.png", QUESTION, cwd=ROOT)
    t.wait_for(f"Q {QUESTION}", "A Yes", "Flow · attention shares", "CAM · layer 0/7", "ready")
    t.press(RIGHT)
    t.wait_for("CAM · layer 1/7")
    t.resize(80, 24)  # the README's smallest usable size: the layout follows
    t.wait_until(lambda: t.screen.display[0].endswith("╮")  # panels redrawn to the new edge
                 and t.screen.display[21].endswith("╯"), "the 80x24 layout")
    t.wait_for("CAM · layer 1/7", f"Q {QUESTION}", "A Yes")
    t.quit_cleanly()


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> tuple[Path, Term]:
    """`flowtui IMAGE QUESTION --headless --out S.flowtui`, as typed in a terminal."""
    d = tmp_path_factory.mktemp("snapshot")
    t = run_to_end(SAMPLE, QUESTION, "--headless", "--out", "s.flowtui", cwd=d)
    assert t.status == 0, t.report()
    return d / "s.flowtui", t


@pytest.mark.slow
def test_headless_analyze_writes_the_snapshot(snapshot):
    path, t = snapshot
    assert path.is_file()
    assert f"question: {QUESTION}" in t.output and "answer:   Yes" in t.output
    assert "wrote:    s.flowtui" in t.output and "Traceback" not in t.output


@pytest.mark.slow
def test_open_snapshot_and_its_summary(snapshot, term):
    path, _ = snapshot
    t = term("open", path)
    t.wait_for(f"Q {QUESTION}", "A Yes", "Flow · attention shares", "CAM · layer 0/7")
    t.quit_cleanly()
    summary = run_to_end("open", path, "--summary", cwd=path.parent)
    assert summary.status == 0, summary.report()
    assert "answer:   Yes" in summary.output and "image share: peak" in summary.output


def test_open_a_file_that_is_not_a_snapshot_is_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("not a snapshot")
    t = run_to_end("open", "notes.txt", cwd=tmp_path)
    lines = [line for line in t.output.splitlines() if line.strip()]
    assert t.status == 2 and len(lines) == 1, t.report()
    assert lines[0].startswith("flowtui: error:") and "notes.txt" in lines[0]




def test_compare_screen_in_a_terminal(tmp_path, term):
    """`flowtui compare A B` (no model): both questions on screen, → moves both sides' layer,
    q exits 0 with the terminal restored."""
    from support.fake_engine import make_analysis

    make_analysis().save(tmp_path / "a.flowtui")
    make_analysis(num_layers=12, seed=3, question="Is there a blue square?").save(
        tmp_path / "b.flowtui")
    t = term("compare", "a.flowtui", "b.flowtui")
    t.wait_for("Q Is there a red circle?", "Q Is there a blue square?", "A · a.flowtui",
               "by relative depth l/L", "CAM · layer 0/7", "CAM · layer 0/11")
    t.press(RIGHT)
    t.wait_for("CAM · layer 1/7", "CAM · layer 1/11")  # 1/8 = 1.5/12: a tie, to the lower
    t.quit_cleanly()


def test_dataset_compare_screen_in_a_terminal(tmp_path, term):
    """`flowtui dataset compare RUN RUN` on a terminal opens the screen (no model): both runs,
    ← moves the K cursor by relative depth, q exits 0 with the terminal restored."""
    from support.dataset_helpers import fake_run

    fake_run(tmp_path / "four", 4)
    fake_run(tmp_path / "eight", 8)
    t = term("dataset", "compare", "four/run", "eight/run")
    t.wait_for("four/run", "eight/run", "cursor K/L 1.00", "four/run: K=4", "eight/run: K=8")
    t.press(LEFT)
    t.wait_for("cursor K/L 0.88", "eight/run: K=7")
    t.quit_cleanly()


@pytest.mark.slow
def test_explorer_with_the_model_over_ssh(sshd, warm_daemon, term):
    """`flowtui IMAGE QUESTION --remote HOST`: ssh through a real sshd to `serve --stdio`, which
    relays to the session's warm daemon (conftest; the remote tests share it, so the far side's
    imports are paid once), the answer on screen, q closes the session."""
    sock, _ = warm_daemon
    t = term(SAMPLE, QUESTION, "--remote", sshd_local.HOST, "--remote-cmd", remote_cmd(sock),
             env=term_env(FLOWTUI_SSH_COMMAND=sshd.ssh_command))
    t.wait_for(f"Q {QUESTION}", "A Yes", "Flow · attention shares", f"on {sshd_local.HOST}",
               timeout=90)
    t.quit_cleanly()


def test_serve_daemon_stops_on_ctrl_c(tmp_path):
    """`flowtui serve --daemon` runs in the foreground until Ctrl+C, then exits 0 and removes
    its socket."""
    sock = tmp_path / "d.sock"
    t = Term(["serve", "--daemon"], tmp_path, term_env(FLOWTUI_SOCKET=str(sock)))
    try:
        t.wait_for("listening on")
        assert sock.exists()
        t.press(CTRL_C)
        assert t.finish() == 0, t.report()
    finally:
        t.close()
    assert "daemon stopping" in t.output and "Traceback" not in t.output
    assert not sock.exists()


def command_paths() -> list[tuple[str, ...]]:
    """Every command and subcommand, from the CLI's own tables (flowtui.cli.COMMANDS and a
    command module's SUBCOMMANDS): a new one is covered with no edit here."""
    paths: list[tuple[str, ...]] = [()]
    for name in flowtui.cli.COMMANDS:
        paths.append((name,))
        paths += [(name, sub) for sub in getattr(flowtui.cli._module(name), "SUBCOMMANDS", {})]
    return paths


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "flowtui")
def test_every_command_has_help(path, tmp_path):
    """`flowtui [COMMAND [SUB]] --help`: exit 0, a usage line naming the command, and each of
    its subcommands listed."""
    t = run_to_end(*path, "--help", cwd=tmp_path)
    assert t.status == 0, t.report()
    prog = " ".join(("flowtui", *path))
    first = (t.output.lstrip().splitlines() or [""])[0]
    assert first.startswith(f"usage: {prog}"), t.report()
    subs = flowtui.cli.COMMANDS if not path else \
        getattr(flowtui.cli._module(path[0]), "SUBCOMMANDS", {}) if len(path) == 1 else {}
    for sub in subs:
        assert re.search(rf"^ +{sub} ", t.output, re.M), f"{sub} not listed\n{t.report()}"
    assert "Traceback" not in t.output and "error" not in first


def test_bare_commands_print_usage_and_exit_2(tmp_path):
    """`flowtui` and `flowtui dataset` alone: the usage, exit 2 (nothing to do)."""
    for args in ((), ("dataset",)):
        t = run_to_end(*args, cwd=tmp_path)
        assert t.status == 2 and "usage: flowtui" in t.output, t.report()
    version = run_to_end("--version", cwd=tmp_path)
    assert version.status == 0 and version.output.strip() == f"flowtui {flowtui.__version__}"
