"""The toy's lens probe (flowtui/toy/lens_probe.py, the model card's lens paragraph) runs end to
end on a held-out scene, and writing its numbers keeps the card's other entries."""

from __future__ import annotations

import json

import numpy as np

from flowtui.toy import evaluate, lens_probe


def test_probe_on_one_scene_gives_per_layer_fractions_and_probabilities():
    r = lens_probe.probe(n=1)
    assert r["scenes"] == 1 and r["correct"] in (0, 1)
    L = len(r["colour_top_obj"])
    assert L == 8  # the toy's layers
    for key in ("colour_top_obj", "shape_top_bg", "colour_p_obj", "shape_p_bg"):
        v = np.asarray(r[key])
        assert v.shape == (L,) and ((v >= 0) & (v <= 1)).all(), key
    # Every object and background token has one top word per layer, counted once.
    assert len(r["tops"]["obj"]) == L and len(set(sum(c.values()) for c in r["tops"]["bg"])) == 1


def test_update_card_keeps_the_other_entries(tmp_path, monkeypatch):
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"accuracy": 1.0, "lens": {"old": 1}}))
    monkeypatch.setattr(evaluate, "CARD_JSON", card)
    evaluate.update_card({"lens": {"held_out_scenes": 3}})
    assert json.loads(card.read_text()) == {"accuracy": 1.0, "lens": {"held_out_scenes": 3}}
