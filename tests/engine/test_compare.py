"""`flowtui compare`: two analyses on one layer cursor (docs/definitions.md, "Compare"); every
number checked against a hand computation from the analyses themselves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.fake_engine import make_analysis

from flowtui.cli import main
from flowtui.compare import PNG_MARK, compare, layer_pairs, nearest_layer
from flowtui.engine.analysis import GROUPS, cliff_layer
from flowtui.engine.snapshot import load_snapshot

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def _swept(a, same: list[bool]):
    a.sweep_same = np.array(same, dtype=bool)
    a.sweep_logprob = np.zeros(len(same), dtype=np.float32)
    a.sweep_answers = [a.answer] * len(same)
    a.cliff_layer = cliff_layer(a.sweep_same)
    return a


def _pair(tmp_path: Path, b_layers: int = 8, b_grid=(12, 12), b_size: int = 96):
    """A (8 layers, cliff 5) and B (another question, another CAM, cliff 3), saved."""
    a = _swept(make_analysis(), [False] * 5 + [True] * 4)
    b = make_analysis(num_layers=b_layers, grid=b_grid, image_size=b_size, seed=3,
                      question="Is there a blue square?")
    # B's CAM: random, so that r is neither 1 nor the same at every layer.
    b.cam_tokens = np.random.default_rng(7).random(b.cam_tokens.shape).astype(np.float32)
    _swept(b, [False] * 3 + [True] * (b_layers - 2))
    pa, pb = tmp_path / "a.flowtui", tmp_path / "b.flowtui"
    a.save(pa)
    b.save(pb)
    return pa, pb


def _json(argv, capsys) -> dict:
    assert main(["compare", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_same_depth_json_equals_the_hand_computation(tmp_path, capsys):
    pa, pb = _pair(tmp_path)
    out = _json([pa, pb], capsys)
    a, b = load_snapshot(pa), load_snapshot(pb)
    assert out["relative_depth"] is False and out["cam_comparable"] is True
    assert out["a"] == {"file": str(pa), "model": "fake-lvlm", "question": a.question,
                        "answer": a.answer, "num_layers": 8, "num_image_tokens": 144,
                        "swept": True, "cliff": 5}
    assert out["b"]["question"] == "Is there a blue square?" and out["b"]["cliff"] == 3
    assert "cliff_relative" not in out["a"]
    assert [e["layer"] for e in out["layers"]] == list(range(8))
    assert all("layer_b" not in e for e in out["layers"])
    diffs = []
    for e in out["layers"]:
        layer = e["layer"]
        for g, name in enumerate(GROUPS):
            want = float(a.shares[layer, g]) - float(b.shares[layer, g])
            assert e["shares_diff"][name] == pytest.approx(want, abs=1e-7)
            assert e["shares_a"][name] == pytest.approx(float(a.shares[layer, g]))
            diffs.append(want)
        if layer == 7:  # A's last CAM is all zero: r is undefined there
            assert np.ptp(a.cam_tokens[7]) == 0 and e["cam_correlation"] is None
        else:
            want = np.corrcoef(a.cam_tokens[layer], b.cam_tokens[layer])[0, 1]
            assert e["cam_correlation"] == pytest.approx(want, abs=1e-9)
    assert max(abs(d) for d in diffs) > 0.01  # the two really differ
    # Swapped: every difference changes sign, r stays.
    rev = _json([pb, pa], capsys)
    for e, f in zip(out["layers"], rev["layers"], strict=True):
        assert {g: -v for g, v in e["shares_diff"].items()} == pytest.approx(f["shares_diff"])
        assert e["cam_correlation"] == pytest.approx(f["cam_correlation"], abs=1e-12)


@pytest.mark.parametrize("grid, size, why", [
    ((10, 10), 96, "different numbers of image tokens (144 and 100)"),
    ((12, 12), 120, "cover different regions"),  # same count, another image size
])
def test_cam_correlation_is_null_where_the_tokens_differ(tmp_path, capsys, grid, size, why):
    pa, pb = _pair(tmp_path, b_grid=grid, b_size=size)
    out = _json([pa, pb], capsys)
    assert out["cam_comparable"] is False and why in out["cam_note"]
    assert [e["cam_correlation"] for e in out["layers"]] == [None] * 8
    # The shares still compare.
    a, b = load_snapshot(pa), load_snapshot(pb)
    assert out["layers"][2]["shares_diff"]["image"] == pytest.approx(
        float(a.shares[2, 1]) - float(b.shares[2, 1]))


def test_other_views_and_uncomputed_cams_are_not_correlated():
    a = make_analysis()
    b = make_analysis()
    b.views = ["tiles"]  # same count and regions, another view
    c = compare(a, b)
    assert not c.cam_comparable and "views" in c.cam_note
    b = make_analysis()
    assert compare(a, b).cam_comparable
    b.cam_settings.computed = False
    c = compare(a, b)
    assert not c.cam_comparable and "B's CAM was not computed" in c.cam_note
    assert all(lc.cam_correlation is None for lc in c.layers)


def test_nearest_relative_depth_by_brute_force():
    for shallow in range(1, 14):
        for deep in range(shallow, 40):
            for layer in range(shallow):
                target = layer / shallow
                dist = [abs(m / deep - target) for m in range(deep)]
                best = min(range(deep), key=lambda m: (round(dist[m], 12), m))
                assert nearest_layer(layer, shallow, deep) == best, (layer, shallow, deep)
            pairs = layer_pairs(shallow, deep)
            assert [p[0] for p in pairs] == list(range(shallow))
            assert len({p[1] for p in pairs}) == shallow  # one to one
            assert [q[::-1] for q in layer_pairs(deep, shallow)] == pairs


def test_different_depths_compare_by_relative_depth(tmp_path, capsys):
    pa, pb = _pair(tmp_path, b_layers=12)
    a, b = load_snapshot(pa), load_snapshot(pb)
    out = _json([pa, pb], capsys)
    assert out["relative_depth"] is True and "relative depth" in out["mapping"]
    # Each of A's 8 layers against B's layer of nearest l/L (12/8 = 1.5 per layer; a tie,
    # 1.5 or 4.5, goes to the lower layer).
    want_b = [0, 1, 3, 4, 6, 7, 9, 10]
    assert [e["layer"] for e in out["layers"]] == list(range(8))
    assert [e["layer_b"] for e in out["layers"]] == want_b
    assert [e["relative_depth_a"] for e in out["layers"]] == [i / 8 for i in range(8)]
    assert [e["relative_depth_b"] for e in out["layers"]] == [m / 12 for m in want_b]
    for e in out["layers"]:
        la, lb = e["layer"], e["layer_b"]
        for g, name in enumerate(GROUPS):
            assert e["shares_diff"][name] == pytest.approx(
                float(a.shares[la, g]) - float(b.shares[lb, g]), abs=1e-7)
        if la < 7:
            assert e["cam_correlation"] == pytest.approx(
                np.corrcoef(a.cam_tokens[la], b.cam_tokens[lb])[0, 1], abs=1e-9)
    assert out["a"]["cliff"] == 5 and out["a"]["cliff_relative"] == 5 / 8
    assert out["b"]["cliff"] == 3 and out["b"]["cliff_relative"] == 3 / 12
    # The deeper model first: still one entry per layer of the shallower one, `layer` A's.
    rev = _json([pb, pa], capsys)
    assert [e["layer"] for e in rev["layers"]] == want_b
    assert [e["layer_b"] for e in rev["layers"]] == list(range(8))


def test_the_text_table(tmp_path, capsys):
    pa, pb = _pair(tmp_path, b_layers=12)
    assert main(["compare", str(pa), str(pb)]) == 0
    out = capsys.readouterr().out
    assert "cliff 5 (K/L 0.625)" in out and "cliff 3 (K/L 0.250)" in out
    assert "Is there a blue square?" in out and "differences are A - B" in out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] and
            line.split()[0].isdigit()]
    assert [r[:2] for r in rows] == [[str(i), str(m)] for i, m in
                                     enumerate([0, 1, 3, 4, 6, 7, 9, 10])]
    a, b = load_snapshot(pa), load_snapshot(pb)
    assert float(rows[3][5]) == pytest.approx(float(a.shares[3, 1] - b.shares[4, 1]), abs=6e-4)


def _run(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowtui", "compare", *argv], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=120)


def _one_error(proc: subprocess.CompletedProcess, match: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("flowtui: error: ")
    assert match in proc.stderr, proc.stderr


@pytest.mark.slow  # a subprocess
def test_the_command_in_a_subprocess(tmp_path):
    pa, pb = _pair(tmp_path)
    proc = _run("a.flowtui", "b.flowtui", "--json", "--png", "cmp.png", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["a"]["file"] == "a.flowtui" and len(out["layers"]) == 8
    png = tmp_path / "cmp.png"
    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] >= 500 and im.size[1] >= 500
        assert im.info.get("Software") == PNG_MARK
    assert 20_000 < png.stat().st_size < 2_000_000
    # Its own figure is replaced on a rerun.
    before = png.stat().st_mtime_ns
    assert _run("a.flowtui", "b.flowtui", "--png", "cmp.png", cwd=tmp_path).returncode == 0
    assert png.stat().st_mtime_ns != before

    _one_error(_run("a.flowtui", "missing.flowtui", cwd=tmp_path), "snapshot not found")
    (tmp_path / "notes.txt").write_text("hello")
    _one_error(_run("notes.txt", "b.flowtui", cwd=tmp_path), "is not a flowtui snapshot")
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    _one_error(_run("a.flowtui", "photo.png", cwd=tmp_path), "it is a PNG image")
    _one_error(_run("a.flowtui", cwd=tmp_path), "the following arguments are required: B")
    _one_error(_run("a.flowtui", "b.flowtui", "--bogus", cwd=tmp_path), "unrecognized")
    # --png never replaces what it did not write, nor an input.
    _one_error(_run("a.flowtui", "b.flowtui", "--png", "photo.png", cwd=tmp_path),
               "was not written by `flowtui compare`")
    _one_error(_run("a.flowtui", "b.flowtui", "--png", "a.flowtui", cwd=tmp_path),
               "ending in .png")
    _one_error(_run("a.flowtui", "b.flowtui", "--png", "nodir/x.png", cwd=tmp_path),
               "does not exist")
    with Image.open(tmp_path / "photo.png") as im:
        assert im.size == (8, 8) and "Software" not in im.info
    assert load_snapshot(pa).question == "Is there a red circle?"

    helped = subprocess.run([sys.executable, "-m", "flowtui", "compare", "--help"], env=ENV,
                            capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "compare screen" in helped.stdout
    assert "relative depth" in helped.stdout
    top = subprocess.run([sys.executable, "-m", "flowtui", "--help"], env=ENV,
                         capture_output=True, text=True, timeout=60)
    assert "  compare " in top.stdout


def test_two_toy_analyses(tmp_path, capsys):
    """The built-in toy, one scene, two questions: the same image tokens, so every layer whose
    two CAMs are not constant has r, equal to numpy's on the stored maps."""
    image = ROOT / "sample_images" / "toy_scene_1.png"
    paths = []
    for i, q in enumerate(("Is there a red circle?", "Is there a blue square?")):
        paths.append(tmp_path / f"{i}.flowtui")
        assert main([str(image), q, "--headless", "--sweep", "--device", "cpu",
                     "--max-new-tokens", "4", "--out", str(paths[-1])]) == 0
    capsys.readouterr()
    out = _json(paths, capsys)
    a, b = (load_snapshot(p) for p in paths)
    assert out["cam_comparable"] is True and out["a"]["cliff"] == a.cliff_layer is not None
    assert out["b"]["answer"] == b.answer and out["b"]["cliff"] == b.cliff_layer
    rs = 0
    for e in out["layers"]:
        layer = e["layer"]
        assert e["shares_diff"]["image"] == pytest.approx(
            float(a.shares[layer, 1]) - float(b.shares[layer, 1]), abs=1e-7)
        if np.ptp(a.cam_tokens[layer]) > 0 and np.ptp(b.cam_tokens[layer]) > 0:
            rs += 1
            assert e["cam_correlation"] == pytest.approx(
                np.corrcoef(a.cam_tokens[layer], b.cam_tokens[layer])[0, 1], abs=1e-9)
        else:
            assert e["cam_correlation"] is None
    assert rs >= 1


def test_compare_imports_no_ui_and_no_torch():
    """Plain Python: the compare screen calls it; scripts and the CLI use it with no model."""
    code = ("import sys\nfrom support.fake_engine import make_analysis\nfrom flowtui.compare import "
            "compare, figure_png, joint_attention, correlation_text, paired_layer\n"
            "from flowtui.dataset.compare import compare_csv\n"
            "c = compare(make_analysis(), make_analysis(num_layers=5))\n"
            "assert c.relative_depth and figure_png(c).startswith(b'\\x89PNG')\n"
            "joint_attention(c), correlation_text(c, 0), paired_layer(c, 'a', 3)\n"
            "print(sorted(m for m in ('textual', 'rich', 'torch') if m in sys.modules))")
    env = dict(ENV, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_table_flag_and_help(tmp_path, capsys):
    """--table prints the text table (the screen is the default only on a terminal)."""
    pa, pb = _pair(tmp_path)
    assert main(["compare", str(pa), str(pb), "--table"]) == 0
    assert "differences are A - B" in capsys.readouterr().out
    helped = subprocess.run([sys.executable, "-m", "flowtui", "compare", "--help"], env=ENV,
                            capture_output=True, text=True, timeout=60)
    assert "--table" in helped.stdout and "opens the compare screen" in helped.stdout


def test_joint_attention_one_scale_per_pair():
    """Both sides' attention over the larger of the two maxima at each compared pair."""
    from flowtui.compare import joint_attention

    a = make_analysis()
    b = make_analysis(num_layers=12, seed=3)
    c = compare(a, b)
    va, vb, vmax, sinks = joint_attention(c)
    assert not sinks.any()  # none left out unless asked
    for i, lc in enumerate(c.layers):
        top = max(float(a.attention_tokens[lc.layer_a].max()),
                  float(b.attention_tokens[lc.layer_b].max()))
        assert vmax[i] == pytest.approx(top)
        np.testing.assert_allclose(va[lc.layer_a], a.attention_tokens[lc.layer_a] / top,
                                   rtol=1e-5)
        np.testing.assert_allclose(vb[lc.layer_b], b.attention_tokens[lc.layer_b] / top,
                                   rtol=1e-5)
        assert max(va[lc.layer_a].max(), vb[lc.layer_b].max()) == pytest.approx(1.0)
    b.attention_tokens = None
    with pytest.raises(ValueError):
        joint_attention(compare(a, b))


def test_joint_attention_can_leave_sinks_out_of_the_scale():
    """A token 50x the rest on side A (a sink) sets the joint scale unless sinks are left out:
    then the scale is the largest other value of either side, and the sink is clipped to 1."""
    from flowtui.compare import joint_attention

    a, b = make_analysis(), make_analysis(seed=3)
    rng = np.random.default_rng(1)
    a.attention_tokens = rng.uniform(0.01, 0.02, a.attention_tokens.shape).astype(np.float32)
    b.attention_tokens = rng.uniform(0.01, 0.03, b.attention_tokens.shape).astype(np.float32)
    a.attention_tokens[2, 5] = 1.0
    c = compare(a, b)
    kept = joint_attention(c)
    assert kept.vmax[2] == pytest.approx(1.0) and kept.sinks[2] == 0
    out = joint_attention(c, exclude_sinks=True)
    rest = np.delete(a.attention_tokens[2], 5)
    top = max(float(rest.max()), float(b.attention_tokens[2].max()))
    assert out.sinks[2] == 1 and out.vmax[2] == pytest.approx(top)
    assert out.values_a[2, 5] == 1.0  # clipped to the top colour
    np.testing.assert_allclose(out.values_b[2], b.attention_tokens[2] / top, rtol=1e-5)
    assert out.values_a[2].max() == 1.0 and np.sort(out.values_a[2])[-2] < 1.0
    # Layers with no sink keep the scale they had.
    np.testing.assert_allclose(out.vmax[3], kept.vmax[3])


def test_paired_cliff_and_correlation_text():
    from flowtui.compare import correlation_text, paired_layer

    a, b = make_analysis(), make_analysis(num_layers=12, grid=(8, 8), seed=3)
    c = compare(a, b)
    # K/L kept: 5/8 -> 7.5/12, a tie to the lower; 3/12 -> 2/8
    assert paired_layer(c, "a", 5) == 7 and paired_layer(c, "b", 3) == 2
    assert paired_layer(c, "a", 8) == 12 and paired_layer(c, "a", None) is None
    assert paired_layer(compare(a, a), "a", 5) == 5
    assert correlation_text(c, 0).startswith("CAM r n/a: different numbers of image tokens")
