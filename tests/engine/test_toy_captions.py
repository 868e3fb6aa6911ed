"""The toy describes its scene: caption format, vocabulary, question notes, held-out captions, and
a caption set through `dataset run --scoring chair` end to end (hallucination rises as K -> 0 and
is back at the baseline past the cliff). MODEL_CARD.md has the numbers on more scenes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flowtui.toy.captions import (
    CAPTION_PROMPTS,
    caption_text,
    caption_tokens,
    is_caption_prompt,
    mentioned,
)
from flowtui.toy.evaluate import CARD_JSON
from flowtui.toy.scenes import render_scene

N_SCENES = 40


@pytest.fixture(scope="module")
def toy():
    import flowtui

    return flowtui.load_engine(device="cpu", dtype="float32")


def test_captions_name_every_object_in_the_fixed_order():
    scene = render_scene(np.random.default_rng(0), objects=[("blue", "square"), ("red", "triangle"),
                                                            ("red", "circle")])
    assert caption_text(scene) == "a red circle, a red triangle, a blue square."
    assert caption_tokens(scene)[-1] == "." and caption_tokens(scene).count(",") == 2
    assert mentioned(caption_text(scene)) == [("red", "circle"), ("red", "triangle"), ("blue", "square")]
    assert all(is_caption_prompt(p) for p in CAPTION_PROMPTS)
    assert is_caption_prompt("describe THE image") and not is_caption_prompt("Describe the dog.")


def test_vocabulary_keeps_every_earlier_id_and_decodes_captions(toy):
    from flowtui.toy.build import ANSWERS, BASE_VOCAB_SIZE, SPECIAL, WORDS, build_tokenizer

    tok = build_tokenizer()
    assert [tok.convert_tokens_to_ids(w) for w in SPECIAL + ANSWERS + WORDS] == list(range(BASE_VOCAB_SIZE))
    scene = render_scene(np.random.default_rng(1), objects=[("green", "circle"), ("yellow", "square")])
    ids = tok.convert_tokens_to_ids(caption_tokens(scene))
    assert tok.decode(ids) == caption_text(scene) == "a green circle, a yellow square."
    # Punctuation is output only: a prompt's "." or "," never becomes a token.
    assert tok("Describe the image.", add_special_tokens=False).input_ids == \
        tok("describe the image", add_special_tokens=False).input_ids
    assert toy.info.name == "flowtui-toy"


def test_question_notes_know_the_caption_prompts(toy):
    for q in ("Describe the image.", "What is in the image?", "Is there a red circle?"):
        assert not any("only answers" in n for n in toy.analyze(
            render_scene(np.random.default_rng(2)).image, q, max_new_tokens=1, cam=False).notes), q
    notes = toy.analyze(render_scene(np.random.default_rng(2)).image, "How many shapes?",
                        max_new_tokens=1, cam=False).notes
    assert any("describes the image" in n for n in notes)


@pytest.mark.slow  # many toy captions
def test_captions_of_fresh_scenes_name_exactly_their_objects(toy):
    """A seed family neither training nor the card used; the card's bar is 95% on 300 scenes."""
    right = []
    for i in range(N_SCENES):
        rng = np.random.default_rng([888, i])
        scene = render_scene(rng, size=int(rng.integers(80, 200)))
        a = toy.analyze(scene.image, CAPTION_PROMPTS[i % len(CAPTION_PROMPTS)], max_new_tokens=20,
                        cam=False)
        said = mentioned(a.answer)
        right.append(sorted(said) == sorted((o.colour, o.shape) for o in scene.objects))
    assert np.mean(right) >= 0.9, np.mean(right)


def test_card_states_the_caption_numbers():
    card = json.loads(CARD_JSON.read_text())
    cap = card["captions"]
    assert cap["exact_set"] >= 0.95 and cap["held_out_scenes"] >= 300
    chair_i = cap["truncation"]["chair_i"]
    assert chair_i[0] > chair_i[-1] + 0.2  # no image: hallucination
    assert chair_i[-1] == pytest.approx(cap["chair_i"])  # K = L is the untouched model
    # The yes/no numbers are still the card's.
    assert card["accuracy"] >= 0.95 and card["cliff_layer"] < len(card["truncation_accuracy"]) - 1


def test_card_states_that_the_recipe_reproduces_from_seed():
    """The card's second set of numbers: all five stages rerun from seed 0 (MODEL_CARD.md,
    "Retrained from seed 0"), measured on the same held-out scenes, meet the same bars."""
    card = json.loads(CARD_JSON.read_text())
    seed = card["retrained_from_seed"]
    assert seed["held_out_scenes"] == card["held_out_scenes"]
    assert seed["captions"]["held_out_scenes"] == card["captions"]["held_out_scenes"]
    assert seed["accuracy"] >= 0.95 and seed["captions"]["exact_set"] >= 0.95
    assert seed["cliff_layer"] == card["cliff_layer"]
    assert max(seed["pointing_per_layer"]) >= 0.8
    assert abs(seed["truncation_accuracy"][0] - 0.5) < 0.1  # no image: near chance


@pytest.mark.slow  # a toy dataset run end to end
def test_caption_set_through_dataset_run_with_chair(tmp_path, capsys):
    from flowtui.cli import main

    data = tmp_path / "caps"
    assert main(["dataset", "toy", "--captions", str(data), "--n", "8"]) == 0
    rows = [json.loads(x) for x in (data / "captions.jsonl").read_text().splitlines()]
    assert set(rows[0]) >= {"image", "text", "objects"} and rows[0]["text"] == "Describe the image."
    assert (data / "vocabulary.txt").read_text().count("\n") == 13  # a comment and 12 objects
    out = tmp_path / "run"
    assert main(["dataset", "run", str(data / "captions.jsonl"), "--scoring", "chair",
                 "--vocabulary", str(data / "vocabulary.txt"), "--out", str(out),
                 "--no-progress", "--no-self-check"]) == 0
    s = json.loads((out / "summary.json").read_text())
    a = s["strategies"]["all"]
    L = s["num_layers"]
    assert len(a["chair_i"]) == len(a["chair_s"]) == len(a["recall"]) == L + 1
    assert a["chair_i"][0] > s["baseline_chair_i"] + 0.2  # hallucination rises as K -> 0 ...
    cliff = s["dataset_cliff"]
    assert cliff is not None and 0 < cliff <= L
    assert all(v <= s["baseline_chair_i"] + s["delta"] for v in a["chair_i"][cliff:])  # ... and is back
    assert (out / "chair.png").stat().st_size > 0
    assert "CHAIR_i within" in capsys.readouterr().out
