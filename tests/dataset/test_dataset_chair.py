"""CHAIR scoring (flowtui/dataset/chair.py) against captions worked out by hand, its summary
numbers against a hand computation, and the caption options' errors on the command line."""

from __future__ import annotations

import json
import math

import pytest

from flowtui.cli import main
from flowtui.dataset.chair import (
    Vocabulary,
    caption_counts,
    chair_metrics,
    coco_objects,
    ratio_interval,
)
from flowtui.dataset.readers import coco_lookup
from flowtui.dataset.scoring import RULES, LabelError
from flowtui.dataset.summary import chair_cliff, curves_csv, summarise
from flowtui.engine.errors import InputError

COCO = Vocabulary.coco()


def objs(caption: str, vocab: Vocabulary = COCO) -> list[str]:
    return [o for o, _ in vocab.mentions(caption)]


def test_the_coco_table_has_the_80_categories_and_their_synonyms():
    assert len(COCO.objects) == 80
    assert COCO.objects[0] == "person" and COCO.objects[-1] == "toothbrush"
    for word, obj in [("puppy", "dog"), ("kitten", "cat"), ("sofa", "couch"), ("doughnut", "donut"),
                      ("motorbike", "motorcycle"), ("fridge", "refrigerator"), ("desk", "dining table")]:
        assert objs(f"a {word}") == [obj]


def test_synonyms_plurals_and_multi_word_names():
    assert objs("Two puppies chase three kittens.") == ["dog", "cat"]
    assert objs("A man and two women.") == ["person", "person"]
    assert objs("knives and forks on the dining tables") == ["knife", "fork", "dining table"]
    # Longest phrase first: a hot dog is not a dog, a teddy bear not a bear.
    assert objs("a hot dog next to teddy bears") == ["hot dog", "teddy bear"]
    assert objs("a stop sign by the traffic lights") == ["stop sign", "traffic light"]
    # The table's own exceptions name no object.
    assert objs("a train track") == []
    assert objs("buses and glasses") == ["bus"]  # "glass" alone is no COCO word


def test_negated_mentions_are_not_mentions():
    assert objs("There is no dog in the picture.") == []
    assert objs("a cat without any dogs") == ["cat"]
    assert objs("not a single person") == ["person"]  # only articles and "any" may come between
    assert objs("no cat, but a dog") == ["dog"]


def test_counts_of_one_caption_by_hand():
    # Image: a dog and a person. Caption: dog (twice), cat, man, and a negated umbrella.
    c = caption_counts(COCO, "A dog, a cat and a man; the dog has no umbrella.", ["dog", "person"])
    assert c == {"mentions": 4, "hallucinated": 1, "words": ["cat"], "objects": 2, "covered": 2}
    # Repeated hallucinations count every time.
    c = caption_counts(COCO, "a cat, a cat and a kitten", ["dog"])
    assert (c["mentions"], c["hallucinated"], c["covered"]) == (3, 3, 0)


def test_chair_metrics_by_hand():
    counts = [caption_counts(COCO, cap, truth) for cap, truth in [
        ("a dog and a cat", ["dog"]),              # 2 mentions, 1 hallucinated
        ("a man on a horse", ["person", "horse"]),  # 2, 0
        ("a bus", ["car", "bus"]),                 # 1, 0; recall 1/2
        ("an empty room", ["chair"]),              # 0, 0; recall 0/1
    ]]
    m = chair_metrics(counts)
    assert m["chair_i"] == pytest.approx(1 / 5)
    assert m["chair_s"] == pytest.approx(1 / 4)
    assert m["recall"] == pytest.approx(4 / 6)
    lo, hi = m["chair_i_ci95"]
    assert lo <= 0.2 <= hi and 0 <= lo and hi <= 1
    # The ratio interval by hand: r = 1/5, residuals h - r m = [0.6, -0.4, -0.2, 0].
    se = math.sqrt((0.36 + 0.16 + 0.04) / (4 * 3)) / (5 / 4)
    assert ratio_interval([1, 0, 0, 0], [2, 2, 1, 0]) == pytest.approx(
        (max(0, 0.2 - 1.959963984540054 * se), 0.2 + 1.959963984540054 * se))


def test_vocabulary_file_format_and_its_errors(tmp_path):
    v = Vocabulary.parse("# toy\nred circle, red disc\n\nblue square\n")
    assert v.objects == ["red circle", "blue square"]
    assert objs("two red discs and a blue square, no red circle", v) == ["red circle", "blue square"]
    with pytest.raises(InputError, match="no objects"):
        Vocabulary.parse("# nothing\n")
    with pytest.raises(InputError, match="already names"):
        Vocabulary.parse("dog, pup\ncat, pup\n")
    with pytest.raises(InputError, match="cannot read"):
        Vocabulary.read(tmp_path / "missing.txt")


def test_the_chair_rule_reads_object_lists_and_refuses_unknown_objects():
    rule = RULES["chair"]
    assert rule.reference('["dogs", "man"]') == ["dog", "person"]
    assert rule.reference("dog, person") == ["dog", "person"]
    assert rule.score("a man and his dog", ["dog", "person"]) == 1.0
    assert rule.score("a man and his cat", ["dog", "person"]) == 0.0
    with pytest.raises(LabelError, match="not in the vocabulary"):
        rule.reference(["unicorn"])


def test_coco_instances_give_each_image_its_objects(tmp_path):
    ann = {"images": [{"id": 391895, "file_name": "COCO_val2014_000000391895.jpg"},
                      {"id": 7, "file_name": "empty.jpg"}],
           "categories": [{"id": 1, "name": "person"}, {"id": 4, "name": "motorcycle"}],
           "annotations": [{"image_id": 391895, "category_id": 1},
                           {"image_id": 391895, "category_id": 4},
                           {"image_id": 391895, "category_id": 1}]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(ann))
    table = coco_objects(path)
    assert coco_lookup(table, "val2014/COCO_val2014_000000391895.jpg") == ["motorcycle", "person"]
    assert coco_lookup(table, "renamed_391895.png") == ["motorcycle", "person"]
    assert coco_lookup(table, "empty.jpg") == []
    assert coco_lookup(table, "other.jpg") is None
    path.write_text("{}")
    with pytest.raises(InputError, match="not COCO instance annotations"):
        coco_objects(path)


def _record(base: dict, per_k: list[dict]) -> dict:
    return {"index": 0, "id": "0", "reference": [], "baseline": {"answer": "", "score": 1.0,
            "logprob": 0.0, "chair": base},
            "strategies": {"all": {"answers": [""] * len(per_k), "scores": [1.0] * len(per_k),
                                   "logprob": [0.0] * len(per_k), "same": [True] * len(per_k),
                                   "cliff": 0, "chair": per_k}}}


def test_summary_has_chair_per_k_and_its_cliff_on_chair_i():
    def c(m, h, g=2, cov=1):
        return {"mentions": m, "hallucinated": h, "words": [], "objects": g, "covered": cov}

    # Two captions, L = 2: hallucination 2/4 at K=0, 1/4 at K=1, 0/4 at K=2 (= baseline).
    recs = [_record(c(2, 0), [c(2, 1), c(2, 1), c(2, 0)]),
            _record(c(2, 0), [c(2, 1), c(2, 0), c(2, 0)])]
    s = summarise(recs, "chair", delta=0.01, rows=2, num_layers=2)
    a = s["strategies"]["all"]
    assert a["chair_i"] == pytest.approx([0.5, 0.25, 0.0])
    assert a["chair_s"] == pytest.approx([1.0, 0.5, 0.0])
    assert a["recall"] == pytest.approx([0.5, 0.5, 0.5])
    assert s["baseline_chair_i"] == 0.0 and s["dataset_cliff"] == 2 == a["dataset_cliff"]
    assert summarise(recs, "chair", delta=0.3, rows=2, num_layers=2)["dataset_cliff"] == 1
    header, first = curves_csv(s).splitlines()[:2]
    row = dict(zip(header.split(","), first.split(","), strict=True))
    assert float(row["chair_i"]) == 0.5 and float(row["object_recall"]) == 0.5
    assert row["recall"] == ""  # POPE's column stays empty
    assert chair_cliff([0.5, 0.2, 0.3, 0.1], 0.1, 0.0) == 3


@pytest.mark.parametrize("args, words", [
    (["--vocabulary", "v.txt"], "only go with --scoring chair"),
    (["--scoring", "chair", "--objects-column", "objects", "--coco-instances", "c.json"],
     "not both"),
    (["--scoring", "chair", "--answer-column", "label"], "--objects-column instead"),
    (["--scoring", "chair", "--objects-column", "things"], "no column 'things'"),
    (["--scoring", "chair", "--vocabulary", "missing.txt"], "cannot read --vocabulary"),
    (["--scoring", "chair", "--coco-instances", "missing.json"], "cannot read --coco-instances"),
])
def test_caption_options_errors_are_one_line_exit_2(tmp_path, monkeypatch, capsys, args, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "img.png").write_bytes(b"")
    (tmp_path / "caps.jsonl").write_text(json.dumps(
        {"image": "img.png", "text": "Describe the image.", "objects": ["dog"]}) + "\n")
    code = main(["dataset", "run", "caps.jsonl", "--out", "run", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and words in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_the_browser_marks_hallucinated_words_and_filters_on_them():
    from flowtui.dataset.browse import hallucinated, parse_filter
    from flowtui.ui.dataset_screen import answer_cell

    counts = caption_counts(COCO, "A dog and two cats on a sofa.", ["dog", "chair"])
    rec = _record(counts, [counts])
    rec["baseline"]["answer"] = "A dog and two cats on a sofa."
    assert hallucinated(rec) == ["cats", "sofa"]
    cell = answer_cell(rec)
    marked = sorted(cell.plain[s.start:s.end] for s in cell.spans if "red" in str(s.style))
    assert marked == ["cats", "sofa"]
    clean = _record(caption_counts(COCO, "a dog", ["dog"]), [])
    assert parse_filter("hallucinated")(rec) and not parse_filter("hallucinated")(clean)
