"""The engine, the dataset runs, the remote layer and the self-test (flowtui/selftest) never
import Textual or Rich: statically, and in a real run."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import flowtui

ENGINE = Path(flowtui.__file__).parent / "engine"
REMOTE = Path(flowtui.__file__).parent / "remote"
DATASET = Path(flowtui.__file__).parent / "dataset"
SELFTEST = Path(flowtui.__file__).parent / "selftest"
UI_PACKAGES = ("textual", "rich", "textual_image")


def test_engine_dataset_remote_and_selftest_sources_do_not_import_ui():
    paths = [*ENGINE.rglob("*.py"), *DATASET.rglob("*.py"), *REMOTE.rglob("*.py"),
             *SELFTEST.rglob("*.py")]
    assert {p.parent.name for p in paths} >= {"engine", "dataset", "remote", "selftest", "tiny"}
    for path in paths:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in UI_PACKAGES, f"{path.name} imports {name}"
                assert not name.startswith("flowtui.ui"), f"{path.name} imports {name}"


def test_the_engine_knows_no_model_by_name():
    """The engine imports no model's own code (the toy's question forms reach it as data, its
    folder's flowtui.json): adding a model never means editing the engine."""
    for path in ENGINE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in names:
                assert not name.startswith("flowtui.toy"), f"{path.name} imports {name}"


@pytest.mark.slow  # a subprocess loading a model
def test_engine_run_leaves_ui_out_of_sys_modules(tiny_paths, tmp_path):
    code = f"""
import sys, numpy as np
import flowtui
from PIL import Image
e = flowtui.load_engine({str(tiny_paths['a'])!r}, device="cpu")
a = e.analyze(Image.fromarray(np.zeros((32, 32, 3), np.uint8)), "is there a cat?", max_new_tokens=2)
e.truncate(a, 1); e.sweep(a)
a.save({str(tmp_path / 'x.flowtui')!r}); flowtui.load_snapshot({str(tmp_path / 'x.flowtui')!r})
# The remote layer too: a server session and a client on pipes, in this process.
import os, threading
from flowtui.remote.client import RemoteEngine
from flowtui.remote.connection import Connection
from flowtui.remote.session import Models, Session
(c2s_r, c2s_w), (s2c_r, s2c_w) = os.pipe(), os.pipe()
session = Session(os.fdopen(c2s_r, "rb"), os.fdopen(s2c_w, "wb"), Models(lambda **kw: e))
threading.Thread(target=session.serve, daemon=True).start()
r = RemoteEngine.open(Connection(os.fdopen(s2c_r, "rb"), os.fdopen(c2s_w, "wb"), name="pipe"))
b = r.analyze(np.zeros((32, 32, 3), np.uint8), "is there a cat?", max_new_tokens=2)
r.truncate(b, 1); r.sweep(b); r.close()
# A dataset run, its summary and plots: no UI either.
from flowtui.dataset.readers import open_dataset
from flowtui.dataset.runner import build_config, run_dataset
Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save({str(tmp_path / 'i.png')!r})
open({str(tmp_path / 'd.jsonl')!r}, "w").write('{{"image": "i.png", "question": "is there a cat?"}}\\n')
src = open_dataset({str(tmp_path / 'd.jsonl')!r})
s = run_dataset(src, build_config(src, {str(tiny_paths['a'])!r}, max_new_tokens=2), e,
                {str(tmp_path / 'run')!r})
assert s["samples"] == 1 and s["scoring"] == "same", s
# The doctor's checks and one family's self-test: no UI either (the CLI draws the table).
from flowtui.selftest import checks
checks.environment_items()
[item] = checks.selftest(["qwen3_vl"])
assert item.status == "ok", item
bad = [m for m in sys.modules if m.split('.')[0] in {UI_PACKAGES!r}]
print("UI:", bad)
assert not bad, bad
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "UI: []" in proc.stdout
