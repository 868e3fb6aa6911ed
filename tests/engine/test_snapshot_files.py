"""Files the user made are never lost: a snapshot is written only over a snapshot (or an empty
file), never over the input image; it gets the mode a new file gets (a replaced one keeps its
own); and a writer killed mid-write leaves no temporary behind once the next write succeeds."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from support.fake_engine import make_analysis, make_image
from support.file_state import state

import flowtui
from flowtui.cli import main
from flowtui.engine import snapshot as snap
from flowtui.engine.errors import SnapshotError


@pytest.fixture(scope="module")
def analysis():
    return make_analysis(num_layers=3, grid=(4, 4))


def temporaries(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(snap.TMP_SUFFIX)]


def _make_other_files(folder: Path) -> dict[str, str]:
    """Files a user may have where a snapshot was asked for, and what the refusal says."""
    Image.fromarray(make_image(32)).save(folder / "photo.png")
    (folder / "notes.flowtui").write_text("my notes\n")
    with zipfile.ZipFile(folder / "work.zip", "w") as zf:
        zf.writestr("manifest.json", '{"format": "something else"}')
    (folder / "half.flowtui").write_bytes(b"PK\x03\x04 cut off")
    return {name: "is not a flowtui snapshot; refusing to replace it"
            for name in ("photo.png", "notes.flowtui", "work.zip", "half.flowtui")}


def test_what_is_not_a_snapshot_is_never_replaced(analysis, tmp_path):
    for name, refusal in _make_other_files(tmp_path).items():
        before = state(tmp_path)
        with pytest.raises(SnapshotError, match=refusal):
            analysis.save(tmp_path / name)
        assert state(tmp_path) == before, name


def test_the_input_image_is_never_replaced(analysis, tmp_path):
    image = tmp_path / "photo.flowtui"  # an image, whatever its name says
    Image.fromarray(make_image(32)).save(image, format="PNG")
    os.link(image, tmp_path / "hardlink.png")
    (tmp_path / "symlink.png").symlink_to(image)
    before = state(tmp_path)
    for target in (image, tmp_path / "hardlink.png", tmp_path / "symlink.png"):
        with pytest.raises(SnapshotError, match="is the input image; refusing to replace it"):
            analysis.save(target, inputs=[str(image)])
    assert state(tmp_path) == before


def test_a_snapshot_or_an_empty_file_is_replaced(analysis, tmp_path):
    (tmp_path / "empty.flowtui").touch()
    analysis.save(tmp_path / "empty.flowtui")
    assert flowtui.load_snapshot(tmp_path / "empty.flowtui").answer == analysis.answer
    first = analysis.save(tmp_path / "s.flowtui").read_bytes()
    other = make_analysis(num_layers=2, answer_tokens=("No",))
    other.save(tmp_path / "s.flowtui")
    assert (tmp_path / "s.flowtui").read_bytes() != first
    assert flowtui.load_snapshot(tmp_path / "s.flowtui").answer == "No"


def test_a_link_to_a_snapshot_keeps_the_link(analysis, tmp_path):
    (tmp_path / "real").mkdir()
    real = analysis.save(tmp_path / "real" / "s.flowtui")
    (tmp_path / "link.flowtui").symlink_to(real)
    make_analysis(num_layers=2, answer_tokens=("No",)).save(tmp_path / "link.flowtui")
    assert (tmp_path / "link.flowtui").is_symlink()
    assert flowtui.load_snapshot(real).answer == "No"


def test_special_files_are_refused_without_hanging(analysis, tmp_path):
    fifo = tmp_path / "pipe.flowtui"
    os.mkfifo(fifo)
    errors = []

    def save(target):
        try:
            analysis.save(target)
        except SnapshotError as exc:
            errors.append(str(exc))

    for target, kind in ((fifo, "FIFO"), (Path("/dev/null"), "device")):
        t = threading.Thread(target=save, args=(target,), daemon=True)
        t.start()
        t.join(20)
        assert not t.is_alive(), f"writing over {target} hangs"
        assert f"is a {kind}; refusing to write a snapshot over it" in errors.pop()
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and Path("/dev/null").is_char_device()
    assert temporaries(tmp_path) == []


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_new_snapshot_gets_the_mode_the_umask_gives(analysis, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = analysis.save(tmp_path / "s.flowtui")
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == mode  # as any new file


def test_replacing_a_snapshot_keeps_its_mode(analysis, tmp_path):
    path = analysis.save(tmp_path / "s.flowtui")
    for mode in (0o640, 0o604, 0o444):
        path.chmod(mode)
        analysis.save(path)
        assert stat.S_IMODE(path.stat().st_mode) == mode


def _tmp_name(target: str, token: str = "0123456789ab") -> str:
    return f".{target}.{token}{snap.TMP_SUFFIX}"


def test_only_flowtuis_own_stale_temporaries_are_cleaned(analysis, tmp_path):
    stale = tmp_path / _tmp_name("a.flowtui")
    stale.write_bytes(b"PK half a snapshot")
    live = tmp_path / _tmp_name("b.flowtui", "ba9876543210")
    live.write_bytes(b"PK being written")
    keep = [".a.flowtui.tmp", "a.flowtui-tmp", ".x.0123.flowtui-tmp", "notes.txt",
            _tmp_name("dir.flowtui", "aaaaaaaaaaaa"), _tmp_name("link.flowtui", "bbbbbbbbbbbb")]
    for name in keep[:4]:
        (tmp_path / name).write_text("mine")
    (tmp_path / keep[4]).mkdir()
    (tmp_path / keep[5]).symlink_to(tmp_path / "notes.txt")
    with open(live, "rb+") as writer:  # a live writer holds its temporary's lock
        fcntl.flock(writer, fcntl.LOCK_EX)
        analysis.save(tmp_path / "c.flowtui")
        assert live.exists()
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*keep, live.name, "c.flowtui"])
    assert (tmp_path / "notes.txt").read_text() == "mine"
    analysis.save(tmp_path / "c.flowtui")  # the writer is gone now: its temporary goes too
    assert not live.exists()


WRITER = """
import sys, time, zipfile
sys.path.insert(0, {tests!r})
from support.fake_engine import make_analysis

real = zipfile.ZipFile.writestr
def slow(self, name, data, *args, **kwargs):
    real(self, name, data, *args, **kwargs)
    if name == "arrays.npz":
        print("writing", flush=True)
        time.sleep(600)
zipfile.ZipFile.writestr = slow
make_analysis(num_layers=2).save({target!r})
"""


def test_a_killed_writer_leaves_nothing_after_the_next_write(analysis, tmp_path):
    target = tmp_path / "s.flowtui"
    code = WRITER.format(tests=str(Path(__file__).parents[1]), target=str(target))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        [tmp] = temporaries(tmp_path)
        analysis.save(tmp_path / "other.flowtui")  # the writer lives: its temporary stays
        assert temporaries(tmp_path) == [tmp]
    finally:
        proc.kill()
        proc.wait()
    assert temporaries(tmp_path) == [tmp] and not target.exists()
    analysis.save(target)
    assert temporaries(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.flowtui", "s.flowtui"]


# --- the CLI: refused before the model runs, one line, exit 2, nothing changed ------------------
def _refused(argv, capsys, folder, match):
    before = state(folder)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    assert err.startswith("flowtui: error: ") and match in err, err
    assert state(folder) == before


def test_cli_out_never_replaces_the_image_or_other_files(tmp_path, capsys):
    _make_other_files(tmp_path)
    image = str(tmp_path / "photo.png")
    base = [image, "Is there a red circle?", "--headless", "--model", "flowtui-toy"]
    _refused([*base, "--out", image], capsys, tmp_path, "is the input image")
    for name in ("notes.flowtui", "work.zip", "half.flowtui"):
        _refused([*base, "--out", str(tmp_path / name)], capsys, tmp_path,
                 "is not a flowtui snapshot; refusing to replace it")
    os.mkfifo(tmp_path / "pipe.flowtui")
    _refused([*base, "--out", str(tmp_path / "pipe.flowtui")], capsys, tmp_path,
             "is a FIFO; refusing")


def test_a_dataset_run_never_writes_its_snapshots_over_other_files(tmp_path):
    """A file that is not a snapshot where a sample's snapshot goes stays; the sample's results
    stand, with the reason its snapshot is missing."""
    from support.dataset_helpers import write_pope
    from support.fake_engine import FakeEngine

    from flowtui.dataset import results
    from flowtui.dataset.readers import open_dataset
    from flowtui.dataset.runner import build_config, run_dataset

    data = write_pope(tmp_path / "d", 3)
    src = open_dataset(data)
    cfg = build_config(src, None, max_new_tokens=4, snapshots=True)
    out = tmp_path / "run"
    engine = FakeEngine(num_layers=3, cliff=1)
    assert run_dataset(src, cfg, engine, out, stop_after=1) is None  # as if killed after one
    mine = out / results.SNAPSHOTS / "000001.flowtui"
    mine.write_text("my notes\n")
    run_dataset(src, cfg, engine, out, resume=True)
    recs = {r["index"]: r for r in results.read_records(out / "samples.jsonl")}
    assert mine.read_text() == "my notes\n"
    assert "snapshot" not in recs[1] and "is not a flowtui snapshot" in recs[1]["snapshot_error"]
    assert "error" not in recs[1] and recs[1]["baseline"]["answer"]  # the results stand
    for i in (0, 2):
        assert flowtui.load_snapshot(out / recs[i]["snapshot"]).question
