"""The logit lens in dataset runs: per sample the answer's first token's mean lens probability
per layer over the image tokens and over the asked object's region, and summary.json's means,
checked against the engine's own lens recomputed sample by sample."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support.dataset_helpers import samples
from support.fake_engine import make_analysis, make_lens

from flowtui.cli import main
from flowtui.dataset.lens import lens_record, lens_summary, region_tokens
from flowtui.dataset.readers import open_dataset


def test_region_tokens_are_those_centred_in_the_box():
    a = make_analysis(grid=(12, 12), image_size=96)  # 8-pixel patches
    assert list(region_tokens(a, (0, 0, 16, 16))) == [0, 1, 12, 13]
    assert list(region_tokens(a, (93, 93, 96, 96))) == []  # no centre inside (the last is 92)
    assert list(region_tokens(a, (88, 88, 96, 96))) == [143]


def test_a_record_and_the_summary_are_plain_means():
    a = make_analysis()
    a.lens = make_lens(a)
    rec = lens_record(a, (0, 0, 16, 16))
    np.testing.assert_allclose(rec["image"], a.lens.word_prob.mean(1))
    np.testing.assert_allclose(rec["region"], a.lens.word_prob[:, [0, 1, 12, 13]].mean(1))
    assert lens_record(a, None)["region"] is None
    other = {"word": "Yes", "image": [0.5] * a.num_layers, "region": None}
    s = lens_summary([{"lens": rec}, {"lens": other}, {"error": "x", "lens": other}])
    assert s["samples"] == 2 and s["region_samples"] == 1
    np.testing.assert_allclose(s["image"], (np.array(rec["image"]) + 0.5) / 2)
    np.testing.assert_allclose(s["region"], rec["region"])
    assert lens_summary([{"index": 0}]) is None


def test_regions_are_read_only_for_the_lens(tmp_path):
    rows = [{"question_id": 1, "image": "a.png", "text": "q?", "label": "yes", "bbox": [1, 2, 3, 4]},
            {"question_id": 2, "image": "a.png", "text": "q?", "label": "no", "bbox": "[5, 5, 1, 9]"}]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plain = open_dataset(path)
    assert plain.columns.region is None and "region" not in plain.columns.as_dict()
    src = open_dataset(path, regions=True)
    assert src.columns.region == "bbox"
    assert src.row(0).region == (1.0, 2.0, 3.0, 4.0)
    assert "bad region" in src.row(1).error


def test_region_column_without_lens_is_refused(tmp_path, capsys):
    assert main(["dataset", "run", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "r"),
                 "--region-column", "bbox"]) == 2
    assert "--lens" in capsys.readouterr().err


@pytest.mark.slow
def test_toy_run_with_lens_equals_the_engines_lens(tmp_path, toy_engine):
    from flowtui.toy.dataset import write_toy_dataset

    data = write_toy_dataset(tmp_path / "toy", n=4)
    out = tmp_path / "run"
    assert main(["dataset", "run", str(data), "--out", str(out), "--lens", "--max-new-tokens",
                 "2", "--no-progress", "--no-self-check"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    recs = samples(out)
    src = open_dataset(data, regions=True)
    images, regions = [], []
    for rec in recs:
        row = src.row(rec["index"])
        a = toy_engine.analyze(row.image, row.question, max_new_tokens=2, cam=False,
                               self_check=False)
        toy_engine.lens(a)
        np.testing.assert_allclose(rec["lens"]["image"], a.lens.word_prob.mean(1), atol=1e-5)
        images.append(rec["lens"]["image"])
        if row.region is None:
            assert rec["lens"]["region"] is None
        else:
            idx = region_tokens(a, row.region)
            assert idx.size > 0  # a toy object covers several 8-pixel patches of 96
            np.testing.assert_allclose(rec["lens"]["region"], a.lens.word_prob[:, idx].mean(1),
                                       atol=1e-5)
            regions.append(rec["lens"]["region"])
    assert regions, "half the toy's questions are yes: some sample has a region"
    lens = summary["lens"]
    assert lens["samples"] == 4 and lens["region_samples"] == len(regions)
    np.testing.assert_allclose(lens["image"], np.mean(images, 0), atol=1e-6)
    np.testing.assert_allclose(lens["region"], np.mean(regions, 0), atol=1e-6)
    assert len(lens["image"]) == toy_engine.info.num_layers
