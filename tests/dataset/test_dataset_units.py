"""Dataset runs without a model: readers for every format, every scoring rule on hand-made
cases, intervals, the dataset cliff, the filter language and the run folder's crash safety."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from PIL import Image

from flowtui.dataset import results
from flowtui.dataset.browse import SORTS, parse_filter
from flowtui.dataset.config import RunConfig, Strategy, parse_strategies
from flowtui.dataset.readers import open_dataset
from flowtui.dataset.scoring import (
    RULES,
    LabelError,
    choice_letter,
    get_rule,
    normalise_vqa,
    pope_negation_prediction,
)
from flowtui.dataset.summary import (
    curves_csv,
    dataset_cliff,
    format_table,
    interval,
    pope_metrics,
    summarise,
    wilson,
)
from flowtui.engine.errors import InputError


def _png(path, colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 12), colour).save(path)
    return path


# --- readers ----------------------------------------------------------------------------------
def test_pope_json_lines_with_a_malformed_line(tmp_path):
    _png(tmp_path / "imgs" / "a.jpg")
    lines = [
        {"question_id": 7, "image": "a.jpg", "text": "Is there a cat?", "label": "yes"},
        "{not json",
        {"question_id": 9, "image": "missing.jpg", "text": "  ", "label": "no"},
    ]
    data = tmp_path / "pope.json"  # POPE ships JSON lines named .json
    data.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    src = open_dataset(data, images=tmp_path / "imgs")
    assert src.format == "pope" and len(src) == 3
    assert src.columns.as_dict() == {"image": "image", "question": "text", "answer": "label",
                                     "id": "question_id"}
    r0 = src.row(0)
    assert (r0.id, r0.question, r0.reference, r0.error) == ("7", "Is there a cat?", "yes", None)
    assert r0.image == str(tmp_path / "imgs" / "a.jpg") and r0.image_label == "a.jpg"
    assert "line 2 is not valid JSON" in src.row(1).error
    assert src.row(2).error == "empty question in column 'text'"


def test_generic_json_lines_named_columns_and_data_folder_paths(tmp_path):
    _png(tmp_path / "pics" / "x.png")
    data = tmp_path / "vqa.jsonl"
    data.write_text(json.dumps({"uid": "q1", "picture": "pics/x.png", "ask": "What colour?",
                                "refs": ["red", "red", "dark red"]}) + "\n")
    with pytest.raises(InputError, match="no image column found"):
        open_dataset(data)
    src = open_dataset(data, image_column="picture", question_column="ask", answer_column="refs",
                       id_column="uid")
    row = src.row(0)
    assert src.format == "jsonl" and row.id == "q1" and row.reference == ["red", "red", "dark red"]
    assert row.image == str(tmp_path / "pics" / "x.png")  # relative to the data file's folder
    with pytest.raises(InputError, match="no column 'nope' for the answer; columns: ask, "):
        open_dataset(data, image_column="picture", question_column="ask", answer_column="nope")


def test_json_array_and_csv_keep_strings(tmp_path):
    arr = tmp_path / "a.json"
    arr.write_text(json.dumps({"data": [{"image": "/abs/i.png", "question": "Q?", "answer": 2}]}))
    src = open_dataset(arr)
    assert src.format == "json" and src.row(0).image == "/abs/i.png" and src.row(0).reference == 2
    csv_path = tmp_path / "d.csv"
    csv_path.write_text('id,image,question,answer\n0007,i.png,"Is it, really?",yes\n'
                        "0008,j.png,broken\n0009,k.png,Fine?,no\n")
    src = open_dataset(csv_path)
    assert src.format == "csv" and len(src) == 3
    assert src.row(0).id == "0007" and src.row(0).question == "Is it, really?"
    assert "has 3 fields, the header 4" in src.row(1).error
    assert src.row(2).reference == "no"
    tsv = tmp_path / "d.tsv"
    tsv.write_text("image\tquestion\nx.png\tWhat?\n")
    assert open_dataset(tsv).row(0).question == "What?"


def test_parquet_with_embedded_images_and_save_to_disk_with_paths(tmp_path):
    import datasets

    datasets.disable_progress_bars()
    green = Image.new("RGB", (16, 12), (10, 200, 10))
    features = datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                                  "answer": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"image": [green, green], "question": ["Is it green?", ""],
                                     "answer": ["yes", "no"]}, features=features)
    ds.to_parquet(tmp_path / "d.parquet")
    src = open_dataset(tmp_path / "d.parquet")
    row = src.row(0)
    assert src.format == "parquet" and row.question == "Is it green?" and row.reference == "yes"
    assert isinstance(row.image, Image.Image) and row.image_label == "<embedded>"
    assert row.image.convert("RGB").getpixel((0, 0)) == (10, 200, 10)
    assert src.row(1).error == "empty question in column 'question'"
    # save_to_disk with image paths relative to --images, as a DatasetDict with two splits
    _png(tmp_path / "imgs" / "p.png")
    by_path = datasets.Dataset.from_dict({"img": ["p.png"], "prompt": ["Is it red?"]})
    datasets.DatasetDict({"test": by_path, "val": by_path}).save_to_disk(tmp_path / "hf")
    with pytest.raises(InputError, match="holds splits test, val; choose one with --split"):
        open_dataset(tmp_path / "hf")
    src = open_dataset(tmp_path / "hf", split="val", images=tmp_path / "imgs")
    row = src.row(0)
    assert src.format == "hf" and len(src) == 1 and src.columns.answer is None
    assert row.question == "Is it red?" and row.image == str(tmp_path / "imgs" / "p.png")


def test_whole_file_problems_are_one_line_input_errors(tmp_path):
    with pytest.raises(InputError, match="data not found"):
        open_dataset(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InputError, match="holds no rows"):
        open_dataset(tmp_path / "empty.jsonl")
    (tmp_path / "junk.jsonl").write_text("a\nb\n")
    with pytest.raises(InputError, match="no row could be read"):
        open_dataset(tmp_path / "junk.jsonl")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(InputError, match="cannot tell the format"):
        open_dataset(tmp_path / "x.txt")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        open_dataset(tmp_path / "bad.parquet")
    (tmp_path / "ok.jsonl").write_text('{"image": "a.png", "question": "q"}\n')
    with pytest.raises(InputError, match="--images .* is not a folder"):
        open_dataset(tmp_path / "ok.jsonl", images=tmp_path / "nowhere")


# --- scoring ----------------------------------------------------------------------------------
@pytest.mark.parametrize("rule, answer, reference, expected", [
    # pope is lmms-eval's: the whole answer, lower-cased and stripped, equals the label.
    ("pope", "Yes", "yes", 1.0),
    ("pope", "  no\n", " No ", 1.0),
    ("pope", "Yes.", "yes", 0.0),  # the period stays: "yes." is not "yes"
    ("pope", "No, there is not.", "no", 0.0),
    ("pope", "yes, there is a cat.", "YES", 0.0),
    # pope-first-word is flowtui's lenient rule: the first word decides.
    ("pope-first-word", "Yes.", "yes", 1.0),
    ("pope-first-word", "yes, there is a cat.", "YES", 1.0),
    ("pope-first-word", "No, there is not.", "no", 1.0),
    ("pope-first-word", "No.", "yes", 0.0),
    ("pope-first-word", "There is no cat.", "no", 0.0),  # "there" is neither
    ("pope-first-word", "Yesterday", "yes", 0.0),
    ("pope-negation", "There is no cat.", "no", 1.0),
    ("pope-negation", "It is not there", "no", 1.0),
    ("pope-negation", "Yes. No doubt", "yes", 1.0),  # only the first sentence counts
    ("pope-negation", "Nope", "yes", 1.0),  # no negation word: yes
    ("pope-negation", "NO", "no", 0.0),  # as LLaVA's script: only No, no, not
    ("exact", "The Red Car!", "red car", 1.0),
    ("exact", "red", ["blue", "Red."], 1.0),
    ("exact", "red car", "car", 0.0),
    # vqa: mean over references i of min(1, #matches among the others / 3).
    ("vqa", "three", ["3"] * 3 + ["4"] * 7, pytest.approx(0.9)),  # (3*2/3 + 7*1) / 10
    ("vqa", "3", ["3"] + ["4"] * 9, pytest.approx(0.3)),  # (0 + 9*1/3) / 10
    ("vqa", "three", ["3"] * 10, 1.0),  # number words become digits
    ("vqa", "Coca-Cola", ["coca cola"] * 2 + ["pepsi"] * 8, pytest.approx(0.6)),  # (2/3+16/3)/10
    ("vqa", "dont", ["don't"] * 3 + ["no"] * 7, pytest.approx(0.9)),  # the contractions table
    ("vqa", "2", ["2", "3", "3"], pytest.approx(2 / 9)),  # fewer than 10: (0 + 1/3 + 1/3) / 3
    ("vqa", "A dog.", [{"answer": "dog"}, {"answer": "dog"}, {"answer": "cat"}],
     pytest.approx(4 / 9)),  # (1/3 + 1/3 + 2/3) / 3
    ("vqa", "1.5", '["1.5", "1.5", "1.5"]', pytest.approx(2 / 3)),  # a CSV cell, a JSON list
    ("vqa", "1,000", ["1000"] * 4 + ["many"] * 6, 1.0),  # EvalAI drops commas from answers
    # The official code processes references only where they differ; identical ones are
    # compared as given with the processed answer ("coca cola").
    ("vqa", "coca-cola", ["coca-cola"] * 10, 0.0),
    ("vqa", "cat", ["dog"] * 10, 0.0),
    ("choice", "B", "B", 1.0),
    ("choice", "(c) a tree", 2, 1.0),  # 0-based index: 2 is C
    ("choice", "The answer is D.", "(d)", 1.0),
    ("choice", "A. because", "1", 0.0),
    ("choice", "I think so", "A", 0.0),
])
def test_scoring_rules(rule, answer, reference, expected):
    r = get_rule(rule)
    assert r.score(answer, r.reference(reference)) == expected


def test_same_rule_needs_no_labels_and_follows_the_engine():
    same = RULES["same"]
    assert not same.needs_reference and same.reference(None) is None
    assert same.score("anything", None, True) == 1.0
    assert same.score("Yes", None, False) == 0.0  # equal text but not token-equal: as recorded


@pytest.mark.parametrize("rule, label, message", [
    ("pope", "maybe", "is not yes or no"),
    ("pope", None, "no reference answer"),
    ("exact", [], "empty list"),
    ("vqa", {"a": 1}, "neither a string"),
    ("vqa", "dog", "at least 2 reference answers"),  # leave-one-out over one leaves none
    ("pope-first-word", "yes please", "is not yes or no"),
    ("choice", "AB", "not an option letter"),
    ("choice", 30, "out of range"),
])
def test_unscorable_labels(rule, label, message):
    with pytest.raises(LabelError, match=message):
        RULES[rule].reference(label)


def test_rule_helpers_and_unknown_rule():
    assert choice_letter("(B) the cat") == "B" and choice_letter("option: c") == "C"
    assert choice_letter("A cat") == "A" and choice_letter("a cat") is None
    assert pope_negation_prediction("No, not at all") == "no"
    assert normalise_vqa("Two dogs.") == "2 dogs"
    with pytest.raises(InputError, match="unknown scoring rule 'bleu'; choose one of: pope"):
        get_rule("bleu")


@pytest.mark.parametrize("text, processed", [
    ("three", "3"), ("None", "0"), ("coca-cola", "coca cola"), ("dont", "don't"),
    ("Im", "im"),  # lower-cased before the table, whose "Im" entry can never apply
    ("whats that?", "what's that"), ("x - ray", "x ray"), ("a (red) ball", "red ball"),
    ("1.5 cm.", "1.5 cm"), ("the end.", "end"), ("it's red", "it 's red"),
])
def test_vqa_answer_processor(text, processed):
    assert normalise_vqa(text) == processed


def test_vqa_is_the_leave_one_out_mean():
    """Against the definition written out: every subset of 9 of the 10 references, with answers
    the processor leaves as they are."""
    from itertools import combinations

    rng = np.random.default_rng(0)
    for _ in range(200):
        refs = [str(v) for v in rng.integers(1, 4, 10)]
        answer = str(rng.integers(1, 4))
        subsets = list(combinations(range(10), 9))
        want = np.mean([min(1.0, sum(refs[i] == answer for i in sub) / 3) for sub in subsets])
        assert RULES["vqa"].score(answer, RULES["vqa"].reference(refs)) == pytest.approx(want)


def test_public_score_function():
    from flowtui.dataset import score
    from flowtui.dataset.scoring import LabelError, ScoringError, UnknownRuleError

    assert score("vqa", "three", ["3"] * 3 + ["4"] * 7) == pytest.approx(0.9)
    assert (score("pope", "Yes.", "yes"), score("pope-first-word", "Yes.", "yes")) == (0.0, 1.0)
    assert score("same", "a cat", "a cat") == 1.0 and score("same", "a cat", "a dog") == 0.0
    with pytest.raises(UnknownRuleError, match="unknown scoring rule 'bleu'"):
        score("bleu", "x", "y")
    with pytest.raises(LabelError, match="is not yes or no"):
        score("pope", "yes", "maybe")
    for exc in (UnknownRuleError, LabelError):
        assert issubclass(exc, ScoringError) and issubclass(exc, ValueError)


def test_importing_the_dataset_package_is_cheap():
    import subprocess
    import sys

    code = ("import sys, flowtui.dataset; from flowtui.dataset import score; "
            "score('pope', 'yes', 'yes'); "
            "print(sorted(m for m in ('numpy', 'torch', 'PIL', 'textual', 'rich') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_runs_scored_with_the_old_pope_read_as_pope_first_word():
    """A config.json from before the rules were fixed recorded the first-word rule as pope."""
    old = RunConfig(data={"path": "d"}, model={"name": "m"}, scoring="pope",
                    strategies=["all"]).to_json()
    del old["scoring_rules"]
    assert RunConfig.from_json(old).scoring == "pope-first-word"
    new = RunConfig(data={"path": "d"}, model={"name": "m"}, scoring="pope", strategies=["all"])
    assert RunConfig.from_json(new.to_json()).scoring == "pope"
    for rule, rules in (("exact", 2), ("vqa", 1)):  # only vqa's old scores differ from today's
        old["scoring"] = rule
        assert RunConfig.from_json(old).scoring_rules == rules
    s = summarise([_record(0, [0, 1])], "vqa")
    s["scoring_rules"] = 1
    assert "`flowtui dataset report RUN --scoring vqa` rescores it" in format_table(s)


# --- summary ----------------------------------------------------------------------------------
def test_wilson_and_intervals():
    lo, hi = wilson(8, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)  # the textbook values
    assert wilson(0, 0) == (0.0, 1.0)
    assert interval(np.array([1.0, 1.0, 1.0])) == pytest.approx(wilson(3, 3))
    frac = np.array([1 / 3, 2 / 3, 1.0, 0.0])
    lo, hi = interval(frac)
    half = 1.959963984540054 * frac.std(ddof=1) / 2
    assert (lo, hi) == pytest.approx((max(0, 0.5 - half), min(1, 0.5 + half)))


def test_dataset_cliff_definition():
    acc = [0.5, 0.6, 0.9, 0.85, 0.995, 1.0]
    assert dataset_cliff(acc, 1.0, delta=0.01) == 4
    assert dataset_cliff(acc, 1.0, delta=0.2) == 2
    assert dataset_cliff(acc, 1.0, delta=0.0) == 5
    assert dataset_cliff([], 1.0) is None


def _record(index, scores, baseline_score=1.0, cliff=0):
    L1 = len(scores)
    return {"index": index, "id": str(index), "question": "q", "reference": "yes",
            "baseline": {"answer": "Yes", "score": baseline_score, "logprob": -0.1},
            "cliff": cliff, "strategies": {"all": {
                "answers": ["x"] * L1, "scores": scores, "logprob": [-1.0] * L1,
                "same": [s == 1 for s in scores], "cliff": cliff}}}


def test_summary_counts_errors_apart():
    recs = [_record(0, [0, 1, 1], cliff=1), _record(1, [0, 0, 1], cliff=2),
            {"index": 2, "id": "2", "error": "image not found: x", "stage": "input"}]
    s = summarise(recs, "pope", rows=4)
    assert (s["samples"], s["errors"], s["skipped"]) == (2, 1, 1)
    assert s["errors_by_stage"] == {"input": 1}
    assert s["strategies"]["all"]["accuracy"] == [0.0, 0.5, 1.0]
    assert s["strategies"]["all"]["cliff_histogram"] == [0, 1, 1]
    assert s["dataset_cliff"] == 2 and s["baseline_accuracy"] == 1.0


POPE_LABELS = ["yes", "yes", "yes", "yes", "no", "no", "no", "no"]
POPE_ANSWERS = ["yes", "Yes.", "no", "maybe", "yes", "no", "No", "no"]


def _pope_records(rule_name):
    """K = 0: POPE_ANSWERS; K = 1 and the baseline: "yes" everywhere."""
    rule = RULES[rule_name]
    recs = []
    for i, (label, answer) in enumerate(zip(POPE_LABELS, POPE_ANSWERS, strict=True)):
        answers = [answer, "yes"]
        recs.append({"index": i, "id": str(i), "question": "q", "reference": label,
                     "baseline": {"answer": "yes", "score": rule.score("yes", label),
                                  "logprob": -0.1},
                     "cliff": 1, "strategies": {"all": {
                         "answers": answers, "scores": [rule.score(a, label) for a in answers],
                         "logprob": [-1.0, -0.1], "same": [False, True], "cliff": 1}}})
    return recs


@pytest.mark.parametrize("rule, want0", [
    # pope reads yes, other ("Yes."), no, other, yes, no, no, no: TP 1, FP 1, FN 3.
    ("pope", {"accuracy": 0.5, "precision": 0.5, "recall": 0.25, "f1": 1 / 3, "yes_ratio": 0.25}),
    # pope-first-word reads "Yes." as yes: TP 2, FP 1, FN 2.
    ("pope-first-word", {"accuracy": 5 / 8, "precision": 2 / 3, "recall": 0.5, "f1": 4 / 7,
                         "yes_ratio": 3 / 8}),
    # pope-negation: no negation word is yes ("maybe" too): TP 3, FP 1, FN 1.
    ("pope-negation", {"accuracy": 6 / 8, "precision": 3 / 4, "recall": 3 / 4, "f1": 3 / 4,
                       "yes_ratio": 4 / 8}),
])
def test_pope_precision_recall_f1_and_yes_ratio(rule, want0):
    s = summarise(_pope_records(rule), rule, rows=8)
    a = s["strategies"]["all"]
    for key, value in want0.items():
        assert a[key][0] == pytest.approx(value), key
    # All yes: every yes label found, half the yeses wrong.
    all_yes = {"accuracy": 0.5, "precision": 0.5, "recall": 1.0, "f1": 2 / 3, "yes_ratio": 1.0}
    for key, value in all_yes.items():
        assert a[key][1] == pytest.approx(value), key
        if key != "accuracy":
            assert s[f"baseline_{key}"] == pytest.approx(value), key
    rows = list(csv.DictReader(io.StringIO(curves_csv(s))))
    assert [r["K"] for r in rows] == ["0", "1"]
    assert float(rows[0]["f1"]) == pytest.approx(want0["f1"], abs=1e-6)
    assert float(rows[0]["baseline_recall"]) == 1.0 and float(rows[1]["yes_ratio"]) == 1.0
    table = format_table(s)
    assert "POPE, yes the positive class; baseline: precision 0.500, recall 1.000" in table
    f1_row = [line for line in table.splitlines() if line.startswith("all F1 ")]
    assert len(f1_row) == 1 and f1_row[0].split()[2:] == [f"{want0['f1']:.2f}", "0.67"]


def test_pope_metrics_only_for_yes_no_rules():
    recs = _pope_records("pope")
    s = summarise(recs, "exact", rows=8)
    assert "f1" not in s["strategies"]["all"] and "baseline_f1" not in s
    rows = list(csv.DictReader(io.StringIO(curves_csv(s))))
    assert rows[0]["precision"] == "" and rows[0]["baseline_yes_ratio"] == ""
    assert "POPE" not in format_table(s)
    # Nothing read as yes: precision has nothing to divide by and is 0, as harnesses report it.
    assert pope_metrics(["no", "other"], ["yes", "no"]) == {
        "precision": 0.0, "recall": 0.0, "f1": 0.0, "yes_ratio": 0.0}


# --- config, filters, files -------------------------------------------------------------------
def test_strategies_and_config_differences():
    assert parse_strategies("random:64, top:8,random:64") == [
        Strategy("all"), Strategy("random", 64), Strategy("top", 8)]
    for bad in ("half", "top", "random:x"):
        with pytest.raises(InputError):
            parse_strategies(bad)
    a = RunConfig(data={"sha256": "1", "path": "d"}, model={"name": "m"}, scoring="pope",
                  strategies=["all"], limit=5)
    b = RunConfig.from_json(json.loads(json.dumps(a.to_json())))
    b.limit, b.data = 50, {"sha256": "2", "path": "d"}
    assert a.differences(b) == ["data.sha256"]  # --limit may change on resume


def test_filter_language():
    recs = [_record(0, [0, 1], cliff=1), _record(1, [1, 1], baseline_score=0.0, cliff=0),
            {"index": 2, "id": "2", "question": "a red cat", "error": "boom", "stage": "model"}]
    recs[1]["baseline"]["logprob"] = -3.0

    def pick(text):
        return [r["index"] for r in recs if parse_filter(text)(r)]

    assert pick("") == [0, 1, 2]
    assert pick("correct") == [0] and pick("wrong") == [1] and pick("error") == [2]
    assert pick("cliff>=1") == [0] and pick("cliff=0") == [1] and pick("logp<-1") == [1]
    assert pick("ok logp>-1") == [0] and pick("RED") == [2]
    for bad in ("cliff>=x", "cliff<none", "cliffy"):
        with pytest.raises(InputError):
            parse_filter(bad)
    order = sorted(recs, key=SORTS["cliff"])
    assert [r["index"] for r in order] == [1, 0, 2]  # failed samples last


def test_torn_tail_is_cut_and_skipped(tmp_path):
    path = tmp_path / "samples-rank00000.jsonl"
    with results.ShardWriter(path) as w:
        w.append({"index": 0, "x": 1})
        w.append({"index": 1, "x": 2})
    with open(path, "ab") as fh:
        fh.write(b'{"index": 2, "x"')  # a kill in the middle of a write
    assert [r["index"] for r in results.read_records(path)] == [0, 1]
    with results.ShardWriter(path) as w:  # the next append cuts the torn line first
        w.append({"index": 2, "x": 3})
    assert [r["index"] for r in results.read_records(path)] == [0, 1, 2]
    assert path.read_text().count("\n") == 3
    merged, dups = results.merge([path, path])
    assert [r["index"] for r in merged] == [0, 1, 2] and dups == 3
    assert not math.isnan(len(merged))


# --- the command ------------------------------------------------------------------------------
@pytest.mark.parametrize("sub, words", [
    ("run", ("--resume", "--strategies", "pope-negation", "accelerate launch --multi_gpu",
             "pope lmms-eval's POPE rule: the whole answer", "leave-one-out",
             "torchrun", "--images", "save_to_disk")),
    ("report", ("--json", "other machines", "--scoring RULE", "RUN_DIR/scoring-RULE/",
                "never touches the run's own files", "pope-first-word flowtui's own lenient")),
    ("show", ("--run-model", "Enter opens a sample")),
    ("toy", ("POPE-format", "--n")),
])
def test_dataset_subcommands_have_their_own_help(sub, words, capsys):
    from flowtui.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["dataset", sub, "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith(f"usage: flowtui dataset {sub}")
    for word in words:
        assert word in out, word


def test_dataset_help_and_toy_command(tmp_path, capsys):
    from flowtui.cli import main

    assert main(["dataset", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {c} " in out for c in ("run", "report", "show", "compare", "toy"))
    assert main(["dataset", "toy", str(tmp_path / "t"), "--n", "3"]) == 0
    lines = (tmp_path / "t" / "pope.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    assert [r["label"] for r in rows] == ["yes", "no", "yes"]
    assert all((tmp_path / "t" / r["image"]).is_file() for r in rows)
    assert "next: flowtui dataset run" in capsys.readouterr().out
    assert main(["dataset", "toy", str(tmp_path / "t")]) == 2  # never over existing data
    assert "not an empty folder" in capsys.readouterr().err


def test_an_old_vqa_run_is_not_resumed_under_the_new_rule(tmp_path):
    from flowtui.dataset.runner import check_out

    new = RunConfig(data={"path": "d"}, model={"name": "m"}, scoring="vqa", strategies=["all"])
    old = new.to_json()
    del old["scoring_rules"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    with pytest.raises(InputError, match="scored with flowtui's first vqa rule; resuming it"):
        check_out(tmp_path, new, resume=True)
    old["scoring"] = new.scoring = "exact"  # exact did not change: resumed as before
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert check_out(tmp_path, new, resume=True).scoring == "exact"
