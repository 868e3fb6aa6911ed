"""A question the model cannot read says so (issue 11): words the tokenizer does not know, and the
built-in toy asked outside its one question form, become Analysis.notes, which the headless
summary prints, snapshots keep and the explorer shows."""

from __future__ import annotations

import pytest
from support.images import random_image

import flowtui
from flowtui.cli import main

OUTSIDE = "the built-in toy model only answers"


@pytest.fixture(scope="module")
def toy():
    return flowtui.load_engine("flowtui-toy", device="cpu")


@pytest.mark.parametrize("question, unknown, outside", [
    ("Is there a horse?", ["'horse'"], True),
    ("Is there a purple circle?", ["'purple'"], True),
    ("What colour is the square?", [], True),
    ("Is there a red circle?", [], False),
    ("is there a BLUE shape", [], False),
    ("Is there a triangle ?", [], False),
])
def test_toy_notes(toy, question, unknown, outside):
    a = toy.analyze(random_image(1), question, max_new_tokens=1)
    said = [n for n in a.notes if "does not know" in n]
    assert len(said) == (1 if unknown else 0), a.notes
    for word in unknown:
        assert f"flowtui-toy's tokenizer does not know {word} (read as <unk>)" in said[0]
    assert any(n.startswith(OUTSIDE) for n in a.notes) == outside, a.notes


def test_unknown_words_of_any_model_are_named_once(engines):
    # The tiny LLaVA knows "horse" but not "zebra" or "giraffe"; a repeated word is named once.
    a = engines["a"].analyze(random_image(2), "is there a zebra , a giraffe , a zebra ?",
                             max_new_tokens=1)
    assert [n for n in a.notes if "does not know" in n] == [
        "tiny_a's tokenizer does not know 'zebra', 'giraffe' (read as <unk>): the answer "
        "cannot be about them"]
    assert not any(n.startswith(OUTSIDE) for n in a.notes)  # only the toy has a fixed form
    b = engines["a"].analyze(random_image(2), "is there a horse ?", max_new_tokens=1)
    assert not any("does not know" in n for n in b.notes), b.notes


def test_notes_reach_the_summary_and_the_snapshot(tmp_path, capsys):
    image = tmp_path / "photo.png"
    random_image(1).save(image)
    out = tmp_path / "horse.flowtui"
    assert main([str(image), "Is there a horse?", "--headless", "--model", "flowtui-toy",
                 "--max-new-tokens", "2", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    notes = [line for line in lines if line.startswith("note:")]
    assert len(notes) == 2 and "does not know 'horse'" in notes[0] and OUTSIDE in notes[1]
    assert len(flowtui.load_snapshot(out).notes) == 2


def test_a_model_folder_declares_its_questions_in_flowtui_json(tiny_paths, tmp_path):
    """Any model may ship the forms it answers; a malformed file is one line, before loading."""
    import json
    import shutil

    from flowtui.engine.errors import ModelLoadError

    folder = tmp_path / "model"
    shutil.copytree(tiny_paths["a"], folder)
    (folder / "flowtui.json").write_text(json.dumps(
        {"questions": {"words": "is there a (cat|dog)", "note": "this model knows cats and dogs"}}))
    engine = flowtui.load_engine(str(folder), device="cpu", dtype="float32")
    said = engine.analyze(random_image(1), "Is there a horse?", max_new_tokens=1).notes
    assert "this model knows cats and dogs" in said
    quiet = engine.analyze(random_image(1), "is there a DOG?", max_new_tokens=1).notes
    assert "this model knows cats and dogs" not in quiet
    (folder / "flowtui.json").write_text('{"questions": {"words": "(unclosed"}}')
    with pytest.raises(ModelLoadError, match="flowtui.json"):
        flowtui.load_engine(str(folder), device="cpu", dtype="float32")
