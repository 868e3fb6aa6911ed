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
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import sshd_local
from support.pty_term import (
    CTRL_C,
    ENTER,
    LEFT,
    QUESTION,
    RIGHT,
    SAMPLE,
    Term,
    run_to_end,
    term_env,
)
from support.remote_util import ROOT, remote_cmd

import flowtui.cli

# Not in the fast lane (`-m "not slow"`): the real console script in a pseudo-terminal.
pytestmark = pytest.mark.slow

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
