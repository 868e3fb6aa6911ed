"""The logit lens in the snapshot (version 3): round trip, older snapshots open with no lens,
and a broken lens refused in one line naming what is wrong."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from support.fake_engine import make_analysis, make_lens, save_version_1

import flowtui
from flowtui.engine import snapshot as snap
from flowtui.engine.errors import SnapshotError


@pytest.fixture
def lensed():
    a = make_analysis()
    a.lens = make_lens(a)
    return a


def _arrays(path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as zf, np.load(io.BytesIO(zf.read("arrays.npz"))) as npz:
        return {k: npz[k] for k in npz.files}


def _rewrite(src, dst, edit_manifest=None, arrays=None):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "manifest.json" and edit_manifest:
                m = json.loads(data)
                edit_manifest(m)
                data = json.dumps(m).encode()
            if name == "arrays.npz" and arrays is not None:
                buf = io.BytesIO()
                np.savez(buf, **arrays)
                data = buf.getvalue()
            zout.writestr(name, data)
    return dst


def test_the_lens_round_trips(lensed, tmp_path):
    path = lensed.save(tmp_path / "s.flowtui")
    b = flowtui.load_snapshot(path)
    a = lensed.lens
    np.testing.assert_array_equal(b.lens.top_ids, a.top_ids)
    np.testing.assert_array_equal(b.lens.top_probs, a.top_probs)
    np.testing.assert_array_equal(b.lens.word_prob, a.word_prob)
    assert (b.lens.word, b.lens.word_id, b.lens.strings) == (a.word, a.word_id, a.strings)
    arrays = _arrays(path)
    L, N = lensed.num_layers, lensed.num_features
    assert arrays["lens_top_ids"].shape == (L, N, 5) and arrays["lens_top_ids"].dtype == np.int32
    assert arrays["lens_top_probs"].shape == (L, N, 5)
    assert arrays["lens_word_prob"].shape == (L, N)
    with zipfile.ZipFile(path) as zf:
        m = json.loads(zf.read("manifest.json"))
    assert m["version"] == snap.VERSION >= 3
    assert m["lens"]["word"] == "Yes" and m["lens"]["k"] == 5


def test_no_lens_writes_no_lens_and_older_snapshots_open(tmp_path):
    a = make_analysis()
    path = a.save(tmp_path / "plain.flowtui")
    assert not any(k.startswith("lens") for k in _arrays(path))
    assert flowtui.load_snapshot(path).lens is None
    v1 = tmp_path / "v1.flowtui"
    save_version_1(make_analysis(), v1)
    assert flowtui.load_snapshot(v1).lens is None
    v2 = _rewrite(path, tmp_path / "v2.flowtui", lambda m: m.update(version=2))
    assert flowtui.load_snapshot(v2).lens is None


@pytest.mark.parametrize("edit,arrays_edit,message", [
    (lambda m: m.pop("lens"), None, "together"),
    (None, lambda a: a.pop("lens_word_prob"), "together"),
    (None, lambda a: a.update(lens_top_ids=a["lens_top_ids"][:, :-1]), "lens_top_ids"),
    (None, lambda a: a.update(lens_top_probs=a["lens_top_probs"] * 3), "outside"),
    (None, lambda a: a.update(lens_word_prob=a["lens_word_prob"] * np.nan), "NaN"),
    (None, lambda a: a.update(lens_top_ids=-a["lens_top_ids"]), "negative"),
    (lambda m: m["lens"].update(strings={"x": "y"}), None, "lens.strings"),
    (lambda m: m["lens"].update(k=4), None, "lens_top_ids"),
    (lambda m: m["lens"].pop("word"), None, "lens.word"),
])
def test_a_broken_lens_is_refused_in_one_line(lensed, tmp_path, edit, arrays_edit, message):
    path = lensed.save(tmp_path / "s.flowtui")
    arrays = None
    if arrays_edit is not None:
        arrays = _arrays(path)
        arrays_edit(arrays)
    bad = _rewrite(path, tmp_path / "bad.flowtui", edit, arrays)
    with pytest.raises(SnapshotError, match=message) as err:
        flowtui.load_snapshot(bad)
    assert "\n" not in str(err.value)
