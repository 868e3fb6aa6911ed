"""The .flowtui format: round trip, atomic writes, and hostile or broken files refused in one line."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

import flowtui
from flowtui.engine import snapshot as snap
from flowtui.engine.errors import SnapshotError


@pytest.fixture
def swept(engines, analyses):
    a = analyses["a"]
    engines["a"].truncate(a, 1, strategy="top", keep=3)
    if a.sweep_same is None:
        engines["a"].sweep(a)
    return a


def test_round_trip_keeps_everything(swept, tmp_path):
    a = swept
    path = a.save(tmp_path / "s.flowtui", screen_svg="<svg/>")
    b = flowtui.load_snapshot(path)
    for name in ("shares", "head_shares", "cam", "answer_logprobs", "image_attention", "sweep_logprob",
                 "cam_tokens", "token_regions", "attention_tokens"):
        np.testing.assert_array_equal(getattr(a, name).astype(np.float32), getattr(b, name))
    np.testing.assert_array_equal(a.token_views, b.token_views)
    np.testing.assert_array_equal(a.feature_positions, b.feature_positions)
    np.testing.assert_array_equal(a.sweep_same, b.sweep_same)
    np.testing.assert_array_equal(a.image, b.image)
    for name in ("question", "prompt", "answer", "answer_token_ids", "tokens", "groups",
                 "image_grid", "cliff_layer", "model", "truncations", "ended_with_eos",
                 "max_new_tokens", "sweep_answers", "cam_settings", "views"):
        assert getattr(a, name) == getattr(b, name), name
    with zipfile.ZipFile(path) as zf:
        m = json.loads(zf.read("manifest.json"))
        assert zf.read("screen.svg") == b"<svg/>"
        with np.load(io.BytesIO(zf.read("arrays.npz")), allow_pickle=False) as npz:
            assert npz["shares"].dtype == np.float32 and npz["sweep_same"].dtype == bool
            assert npz["head_shares"].shape == (a.num_layers, a.num_heads, 4)
            assert npz["cam_tokens"].shape == (a.num_layers, 36) and npz["cam"].shape == (4, 6, 6)
            assert npz["token_regions"].dtype == np.float32 and npz["token_views"].dtype == np.int16
    assert m["format"] == "flowtui.snapshot" and m["version"] == snap.VERSION
    assert m["groups"]["image"] == [list(s) for s in a.groups["image"]]
    assert m["truncations"][-1]["strategy"] == "top" and m["truncations"][-1]["keep"] == 3
    assert m["model"]["num_layers"] == a.num_layers and "created" in m


def _rewrite(src, dst, edit_manifest=None, arrays=None, drop=()):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            if name in drop:
                continue
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


def test_unknown_keys_are_ignored(swept, tmp_path):
    path = swept.save(tmp_path / "s.flowtui")

    def add(m):
        m["future_field"] = {"x": 1}
        m["model"]["future"] = 2
        m["truncations"][0]["future"] = 3

    with zipfile.ZipFile(path) as zf:
        arrays = dict(np.load(io.BytesIO(zf.read("arrays.npz"))))
    arrays["future_array"] = np.ones(3)
    out = _rewrite(path, tmp_path / "f.flowtui", add, arrays)
    b = flowtui.load_snapshot(out)
    assert b.answer == swept.answer and b.truncations[0].layer == swept.truncations[0].layer


def test_newer_version_is_refused(swept, tmp_path):
    path = swept.save(tmp_path / "s.flowtui")
    out = _rewrite(path, tmp_path / "v.flowtui", lambda m: m.update(version=snap.VERSION + 1))
    with pytest.raises(SnapshotError, match="newer flowtui"):
        flowtui.load_snapshot(out)


def test_pickle_inside_is_refused(swept, tmp_path):
    path = swept.save(tmp_path / "s.flowtui")
    with zipfile.ZipFile(path) as zf:
        arrays = dict(np.load(io.BytesIO(zf.read("arrays.npz"))))
    arrays["shares"] = np.array([{"evil": 1}], dtype=object)
    out = _rewrite(path, tmp_path / "p.flowtui", arrays=arrays)
    with pytest.raises(SnapshotError, match="pickle"):
        flowtui.load_snapshot(out)


@pytest.mark.parametrize("cut", [0.3, 0.7, 0.99])
def test_truncated_file_is_refused(swept, tmp_path, cut):
    path = swept.save(tmp_path / "s.flowtui")
    data = path.read_bytes()
    out = tmp_path / "t.flowtui"
    out.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(SnapshotError):
        flowtui.load_snapshot(out)


def test_other_broken_files(swept, tmp_path):
    path = swept.save(tmp_path / "s.flowtui")
    with pytest.raises(SnapshotError, match="missing manifest"):
        flowtui.load_snapshot(_rewrite(path, tmp_path / "m.flowtui", drop=("manifest.json",)))
    with pytest.raises(SnapshotError, match="not a flowtui snapshot"):
        flowtui.load_snapshot(_rewrite(path, tmp_path / "w.flowtui", lambda m: m.update(format="x")))
    (tmp_path / "text.flowtui").write_text("hello")
    with pytest.raises(SnapshotError, match=r"not a flowtui snapshot \(it is a text file\)"):
        flowtui.load_snapshot(tmp_path / "text.flowtui")
    with pytest.raises(SnapshotError, match="not found"):
        flowtui.load_snapshot(tmp_path / "missing.flowtui")


def test_write_is_atomic(swept, tmp_path, monkeypatch):
    path = swept.save(tmp_path / "s.flowtui")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "writestr", boom)
    with pytest.raises(SnapshotError, match="No space left"):
        swept.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.flowtui"]  # no temporary left behind


def test_write_to_a_directory_is_refused(swept, tmp_path):
    with pytest.raises(SnapshotError, match="directory"):
        swept.save(tmp_path)


def _as_version_1(src, dst, image_box=None):
    """Rewrite a snapshot as flowtui 0.1 wrote it: one grid `cam`, no per-token arrays."""
    with np.load(io.BytesIO(zipfile.ZipFile(src).read("arrays.npz"))) as npz:
        arrays = {k: npz[k] for k in npz.files if k not in
                  ("cam_tokens", "token_regions", "token_views", "feature_positions",
                   "attention_tokens")}

    def edit(m):
        m["version"] = 1
        m.pop("views")
        m["image_box"] = image_box

    _rewrite(src, dst, edit, arrays)


def test_version_1_snapshots_open_and_show_as_before(analyses, tmp_path):
    a = analyses["a"]
    src = a.save(tmp_path / "v2.flowtui")
    _as_version_1(src, tmp_path / "v1.flowtui")
    b = flowtui.load_snapshot(tmp_path / "v1.flowtui")
    np.testing.assert_array_equal(b.cam, a.cam)
    np.testing.assert_allclose(b.token_regions, a.token_regions, atol=1e-4)
    assert b.views == ["image"] and b.image_grid == (6, 6)
    np.testing.assert_array_equal(b.feature_positions, a.image_positions)
    # A version-1 centre crop (image_box) puts the grid over the crop, not the whole image.
    _as_version_1(src, tmp_path / "v1crop.flowtui", image_box=[10, 0, 74, 64])
    c = flowtui.load_snapshot(tmp_path / "v1crop.flowtui")
    assert c.token_regions[0].tolist() == pytest.approx([10, 0, 10 + 64 / 6, 64 / 6])
    assert c.token_regions[:, 2].max() == pytest.approx(74)
    # ...and it can be written again, as version 2.
    d = flowtui.load_snapshot(c.save(tmp_path / "again.flowtui"))
    np.testing.assert_allclose(d.token_regions, c.token_regions)
