"""The CLI against careful users and attackers (issue 11): text from outside never reaches the
terminal as control characters, and bad input is one line on stderr, exit 2, nothing changed."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from support.fake_engine import make_analysis
from support.file_state import state

from flowtui.cli import main

TOY = ["--model", "flowtui-toy"]
HOSTILE = "\x1b]0;owned\x07\x1b[2J\x1b[5m\u202e\x9b"  # title, clear, blink, bidi, C1 CSI


def no_controls(text: str) -> bool:
    return not any(c in text for c in ("\x1b", "\x07", "\u202e", "\x9b"))


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (200, 40, 40)).save(path)
    return path


def test_a_hostile_question_is_shown_not_obeyed(photo, tmp_path, capsys):
    out = tmp_path / "run.flowtui"
    code = main([str(photo), "Is there a red circle?" + HOSTILE, "--headless", *TOY,
                 "--max-new-tokens", "2", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert no_controls(captured.out) and no_controls(captured.err)
    assert "question: Is there a red circle?\\e]0;owned\\x07\\e[2J\\e[5m\\u202e" in captured.out
    assert out.exists()


def test_a_hostile_file_name_in_an_error_is_shown_not_obeyed(tmp_path, capsys):
    before = state(tmp_path)
    code = main(["open", str(tmp_path / f"x{HOSTILE}.flowtui")])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("flowtui: error: snapshot not found")
    assert no_controls(err) and "\\e]0;owned\\x07" in err
    assert state(tmp_path) == before


def refused(argv: list[str], capsys, folder: Path, match: str) -> str:
    """Exit 2, the whole of stderr one error line, and no file under `folder` changed."""
    before = state(folder)
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.err.count("\n") == 1 and captured.err.startswith("flowtui: error: "), \
        captured.err
    assert match in captured.err, captured.err
    assert captured.out == ""
    assert state(folder) == before
    return captured.err


@pytest.mark.parametrize("options, match", [
    (["--keep", "3"], "--keep R needs --strategy top or random"),
    (["--truncate", "2", "--keep", "3"], "--keep R needs --strategy top or random"),
    (["--sweep", "--strategy", "all", "--keep", "0"], "--keep R needs --strategy top or random"),
    (["--strategy", "top", "--keep", "3"], "--strategy top applies to --truncate K"),
    (["--truncate", "2", "--strategy", "random"], "--strategy random needs --keep R"),
    (["--truncate", "2", "--strategy", "top", "--keep", "-1"], "a number of image tokens is >= 0"),
    (["--truncate", "2", "--strategy", "top", "--keep", "many"], "a number of image tokens"),
])
def test_keep_without_a_strategy_that_takes_it_is_refused_before_loading(
        photo, tmp_path, capsys, monkeypatch, options, match):
    import flowtui.cli.analyze as analyze

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded for an option that cannot work")

    monkeypatch.setattr(analyze, "engine_factory", no_model)
    refused([str(photo), "Is there a red circle?", "--headless", *TOY, *options,
             "--out", str(tmp_path / "x.flowtui")], capsys, tmp_path, match)


def test_headless_options_in_the_explorer_are_refused(photo, tmp_path, capsys):
    refused([str(photo), "Is there a red circle?", *TOY, "--sweep", "--out",
             str(tmp_path / "x.flowtui")], capsys, tmp_path, "--out, --sweep: only for --headless")


def test_keep_past_the_image_token_count_is_refused_before_generating(photo, tmp_path, capsys,
                                                                      monkeypatch):
    from flowtui.engine.local import LocalEngine

    def no_generation(*args, **kwargs):
        raise AssertionError("the model ran for a --keep that cannot work")

    monkeypatch.setattr(LocalEngine, "analyze", no_generation)
    before = state(tmp_path)
    # The toy sees a 64x48 image as 12x12 = 144 tokens: 145 is one too many, 144 is fine.
    argv = [str(photo), "Is there a red circle?", "--headless", *TOY, "--truncate", "3",
            "--strategy", "top", "--out", str(tmp_path / "x.flowtui")]
    assert main([*argv, "--keep", "145"]) == 2
    err = capsys.readouterr().err.splitlines()
    # Loading the model (its processor counts the tokens) may show progress; nothing after it.
    assert err[-1] == ("flowtui: error: --keep 145: flowtui-toy sees this image as 144 image "
                       "tokens; keep at most 144"), err
    assert [line for line in err if "error" in line] == err[-1:]
    assert not any("generating" in line for line in err), err
    assert state(tmp_path) == before
    monkeypatch.undo()
    assert main([*argv, "--keep", "144", "--max-new-tokens", "2"]) == 0, capsys.readouterr().err
    assert (tmp_path / "x.flowtui").exists()


def test_the_image_token_count_over_the_remote_protocol(engines):
    """A remote engine counts with the server's processor; a server whose engine cannot count
    answers `method`, and the client then leaves the check to truncate (None)."""
    from support.images import random_image
    from support.remote_util import PipeServer

    served = engines["a"]
    image = random_image(3)
    n = served.count_image_tokens(image)
    a = served.analyze(image, "Is there a red circle?", max_new_tokens=1)
    assert n == a.cam_tokens.shape[1] > 0  # what keep=R counts: the analysis's feature tokens
    assert PipeServer(served).engine().count_image_tokens(image) == n

    class CannotCount:  # an engine that cannot tell (the contract's None)
        info = served.info

        def count_image_tokens(self, image):
            return None

    assert PipeServer(CannotCount()).engine().count_image_tokens(image) is None


def test_open_on_what_is_not_a_snapshot_says_what_it_is(photo, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("shopping list\n")
    (tmp_path / "empty.flowtui").write_bytes(b"")
    (tmp_path / "folder.flowtui").mkdir()
    os.mkfifo(tmp_path / "pipe.flowtui")
    good = tmp_path / "good.flowtui"
    make_analysis(num_layers=2, grid=(2, 2)).save(good)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(tmp_path / "bad.flowtui", "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "manifest.json":
                m = json.loads(data)
                m["model"]["num_heads"] = "four"
                data = json.dumps(m).encode()
            dst.writestr(item, data)
    cases = {
        "photo.png": "photo.png is not a flowtui snapshot (it is a PNG image; to analyse an "
                     "image: flowtui IMAGE QUESTION)",
        "notes.txt": "notes.txt is not a flowtui snapshot (it is a text file)",
        "empty.flowtui": "empty.flowtui is not a flowtui snapshot (it is empty)",
        "folder.flowtui": "folder.flowtui is a directory, not a snapshot",
        "pipe.flowtui": "pipe.flowtui is a FIFO, not a snapshot",  # refused, not waited on
        "bad.flowtui": "manifest field 'model.num_heads' must be an integer >= 1, got 'four'",
    }
    for name, match in cases.items():
        for argv in (["open", str(tmp_path / name)], ["open", str(tmp_path / name), "--summary"]):
            err = refused(argv, capsys, tmp_path, match)
            assert "zip" not in err, err
