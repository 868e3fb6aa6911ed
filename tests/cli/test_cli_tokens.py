"""Headless `--per-token` and `--json`, and snapshots from before the per-token arrays."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np

from flowtui.cli import main
from flowtui.engine.snapshot import load_snapshot


def test_headless_per_token_json(tiny_paths, image_file, tmp_path, capsys):
    out = tmp_path / "t.flowtui"
    code = main([str(image_file), "Is there a red circle?", "--headless", "--model",
                 str(tiny_paths["a"]), "--max-new-tokens", "4", "--per-token", "--json",
                 "--out", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    d = json.loads(captured.out)
    a = load_snapshot(out)
    T, L, N = len(a.answer_token_ids), a.num_layers, a.num_features
    assert T > 1 and d["answer_token_ids"] == a.answer_token_ids and len(d["answer_tokens"]) == T
    pt = d["per_token"]
    assert np.asarray(pt["token_shares"]).shape == (T, L, 4)
    assert np.asarray(pt["token_attention"]).shape == (T, L, N)
    np.testing.assert_allclose(pt["token_cam"], a.token_cam, atol=1e-7)
    np.testing.assert_allclose(pt["token_shares"], a.token_shares, atol=1e-7)
    assert d["snapshot"] == str(out)


def test_json_without_per_token_has_none(tiny_paths, image_file, tmp_path, capsys):
    out = tmp_path / "w.flowtui"
    assert main([str(image_file), "Is there a red circle?", "--headless", "--model",
                 str(tiny_paths["a"]), "--max-new-tokens", "3", "--json", "--out", str(out),
                 "--device", "cpu"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert "per_token" not in d
    a = load_snapshot(out)
    assert a.token_cam is None and a.token_head_shares is not None  # shares are always kept


def test_per_token_options_are_refused_where_they_do_nothing(image_file, capsys):
    assert main([str(image_file), "q?", "--per-token"]) == 2
    assert "--per-token: only for --headless" in capsys.readouterr().err
    assert main([str(image_file), "q?", "--headless", "--no-per-token"]) == 2
    assert "--no-per-token: only for the explorer" in capsys.readouterr().err


def test_version_2_snapshots_open_without_per_token_arrays(analyses, tmp_path):
    a = analyses["a"]
    assert a.token_head_shares is not None
    src = a.save(tmp_path / "v3.flowtui")
    dst = tmp_path / "v2.flowtui"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "manifest.json":
                m = json.loads(data)
                m["version"] = 2
                data = json.dumps(m).encode()
            if name == "arrays.npz":
                arrays = dict(np.load(io.BytesIO(data)))
                arrays = {k: v for k, v in arrays.items() if not k.startswith("token_")
                          or k in ("token_regions", "token_views")}
                buf = io.BytesIO()
                np.savez(buf, **arrays)
                data = buf.getvalue()
            zout.writestr(name, data)
    b = load_snapshot(dst)
    assert b.token_head_shares is None and b.token_attention is None and b.token_cam is None
    assert b.token_shares is None
    np.testing.assert_array_equal(b.cam_tokens, a.cam_tokens)


def test_inconsistent_token_shares_are_refused(analyses, tmp_path):
    import pytest

    from flowtui.engine.codec import decode_analysis, encode_analysis
    from flowtui.engine.errors import SnapshotError

    m, arrays = encode_analysis(analyses["a"])
    arrays["token_shares"] = arrays["token_shares"][:, :, ::-1].copy()
    with pytest.raises(SnapshotError, match="token_shares"):
        decode_analysis(m, arrays, analyses["a"].image)


def test_per_token_crosses_the_remote_protocol():
    from support.fake_engine import FakeEngine, make_analysis
    from support.remote_util import PipeServer

    seen = []
    full = make_analysis(num_layers=4, answer_tokens=("A", " red", " circle"), per_token=True)

    class Recording(FakeEngine):
        def analyze(self, image, question, max_new_tokens=32, progress=None, cam=True,
                    self_check=True, per_token=False):
            seen.append(per_token)
            return full

    engine = PipeServer(Recording()).engine()
    got = engine.analyze(full.image, full.question, per_token=True)
    engine.analyze(full.image, full.question)
    assert seen == [True, False]
    for name in ("token_head_shares", "token_attention", "token_cam"):
        np.testing.assert_array_equal(getattr(got, name), getattr(full, name), err_msg=name)
