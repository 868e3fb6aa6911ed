"""`flowtui dataset run|report|show|toy`: truncation sweeps over a whole dataset (the paper's
Fig. 5), on one process or many (accelerate launch / torchrun), resumable."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flowtui.cli.common import (
    THEME_HELP,
    Parser,
    add_model_options,
    add_pixel_options,
    check_model_options,
    check_theme,
    engine_factory,
    fail,
    pixel_settings,
    positive_int,
    say,
)

HELP = ("truncation sweeps over a dataset: accuracy against K, the dataset cliff "
        "(run/report/show/compare)")

DESCRIPTION = """\
Run the truncation sweep K = 0..L over every sample of a VQA dataset and plot accuracy against
K per strategy, with the baseline and the dataset cliff layer (the paper's Figure 5).

commands:
  run DATA --out RUN_DIR    run (or --resume) a dataset run
  report RUN_DIR            print the curves as a table and (re)write summary, CSV and plots;
                            --scoring RULE rescores the stored answers (no model)
  show RUN_DIR              browse the results in the explorer
  compare RUN_A RUN_B ...   several runs' accuracy curves on one figure, each dataset cliff
                            marked (by relative depth K/L where the models' depths differ)
  toy OUT [--n N]           write a POPE-format dataset of toy scenes (for the toy model);
                            --captions: a caption set for --scoring chair

`flowtui dataset COMMAND --help` explains each.
"""

RUN_EPILOG = """\
formats: POPE JSON lines (question_id, image, text, label); JSON lines, a JSON array, CSV/TSV or
Parquet with image, question and answer columns (guessed, or --image-column ...); a folder
written by datasets' save_to_disk (--split for a DatasetDict). Image paths resolve against
--images, else the data file's folder. Nothing is downloaded.

scoring rules (--scoring):
{rules}

many processes: accelerate launch --multi_gpu --num_processes N -m flowtui dataset run ...
(one process per GPU; on CPU too), or torchrun --nproc-per-node N -m flowtui dataset run ...;
a model too large for one GPU: one process per machine with --device auto.

examples:
  flowtui dataset toy toy-data --n 500
  flowtui dataset run toy-data/pope.jsonl --out toy-run --strategies all,random:72
  flowtui dataset run coco_pope_adversarial.json --images val2014 --model llava-hf/llava-1.5-7b-hf \\
      --out pope-llava --question-suffix " Answer the question using a single word or phrase."
"""


def _rules_text() -> str:
    """One wrapped entry per rule (the epilogs are printed as written, not rewrapped)."""
    import textwrap

    from flowtui.dataset.scoring import RULES

    width = max(len(name) for name in RULES) + 4
    return "\n".join(textwrap.fill(r.summary, 96, initial_indent=f"  {r.name:<{width - 2}}",
                                   subsequent_indent=" " * width) for r in RULES.values())


def _rule_names() -> list[str]:
    from flowtui.dataset.scoring import RULES

    return list(RULES)


def run_parser(prog: str) -> argparse.ArgumentParser:
    from flowtui.dataset.readers import FORMATS

    p = Parser(prog=prog, description="Run the truncation sweep over every sample of a dataset "
               "and write the results folder (per-sample JSON lines, summary, CSV, plots).",
               epilog=RUN_EPILOG.format(rules=_rules_text()),
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="data file (.jsonl/.json/.csv/.tsv/.parquet) or save_to_disk folder")
    p.add_argument("--out", "-o", required=True, metavar="RUN_DIR", help="results folder")
    p.add_argument("--resume", action="store_true",
                   help="finish the run in RUN_DIR: skip its finished samples (the settings must "
                        "match; --limit may change)")
    add_model_options(p)
    d = p.add_argument_group("data")
    d.add_argument("--format", default="auto", choices=FORMATS, help="default: from the name")
    d.add_argument("--images", metavar="DIR", default=None,
                   help="folder that relative image paths resolve against (default: the data "
                        "file's folder)")
    for role in ("image", "question", "answer", "id"):
        d.add_argument(f"--{role}-column", metavar="NAME", default=None,
                       help=f"column holding the {role} (default: guessed)")
    d.add_argument("--region-column", metavar="NAME", default=None,
                   help="column holding the asked object's box [x0, y0, x1, y1] in image pixels, "
                        "for --lens (default with --lens: region, bbox or box if present)")
    d.add_argument("--split", default=None, help="split of a save_to_disk DatasetDict")
    d.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="only the first N rows")
    d.add_argument("--question-suffix", default="", metavar="TEXT",
                   help="text appended to every question (e.g. an answer-format instruction)")
    r = p.add_argument_group("sweep and scoring")
    r.add_argument("--scoring", default=None, metavar="RULE",
                   help=f"{', '.join(_rule_names())}, each defined under 'scoring rules' below "
                        "(default: pope for POPE data, exact otherwise, same where the data has "
                        "no answers); `report --scoring` rescores a finished run under another")
    r.add_argument("--strategies", default="all", metavar="LIST",
                   help="comma-separated: all, top:R (FastV's ranking), random:R (default: all)")
    r.add_argument("--seed", type=int, default=0, help="seed of the random:R strategy (default 0)")
    r.add_argument("--max-new-tokens", type=positive_int, default=None, metavar="N",
                   help="longest answer (default 16; 64 with --scoring chair, room for a caption)")
    r.add_argument("--delta", type=float, default=None, metavar="D",
                   help="dataset cliff tolerance (default 0.01)")
    r.add_argument("--snapshots", action="store_true",
                   help="also save each sample's .flowtui snapshot (computes its CAM: slower)")
    r.add_argument("--lens", action="store_true",
                   help="also the logit lens: per layer, the answer's first token's mean lens "
                        "probability over the image tokens and the object's region "
                        "(summary.json's lens)")
    r.add_argument("--knockout", metavar="FLOWS", default=None,
                   help="also knock out attention along each flow per sample, e.g. "
                        "image->question,image->last,question->last,last->last: summary.json "
                        "gets knockout.{flow}.rel_change and .ci95 per layer, and knockout.png")
    r.add_argument("--window", type=positive_int, metavar="W", default=None,
                   help="--knockout window in layers (default max(1, round(9·L/32)))")
    r.add_argument("--no-self-check", dest="self_check", action="store_false",
                   help="skip each analysis' self-checks (failed ones are recorded per sample "
                        "and counted in summary.json as self_check_failures)")
    c = p.add_argument_group("captions (--scoring chair)")
    c.add_argument("--objects-column", metavar="NAME", default=None,
                   help="column holding each image's objects: a list, a JSON list or a "
                        "comma-separated string (default: objects)")
    c.add_argument("--coco-instances", metavar="FILE", default=None,
                   help="take each image's objects from COCO instance annotations "
                        "(instances_val2014.json), matched by file name or COCO id")
    c.add_argument("--vocabulary", metavar="FILE", default=None,
                   help="objects and their synonyms, one object per line, synonyms after it "
                        "comma-separated (default: the standard CHAIR table of COCO's 80 "
                        "categories)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _chair_options(args: argparse.Namespace) -> str | None:
    """The answer column to open the data with: the objects column under --scoring chair.
    InputError for the caption options without --scoring chair, or clashing ones."""
    from flowtui.engine.errors import InputError

    given = [f"--{n.replace('_', '-')}" for n in ("objects_column", "coco_instances", "vocabulary")
             if getattr(args, n) is not None]
    if args.scoring != "chair":
        if given:
            raise InputError(f"{', '.join(given)} only go with --scoring chair")
        return args.answer_column
    if args.objects_column and args.coco_instances:
        raise InputError("give the objects either as a column (--objects-column) or as COCO "
                         "annotations (--coco-instances), not both")
    if args.answer_column:
        raise InputError("--scoring chair reads each image's objects, not an answer: use "
                         "--objects-column instead of --answer-column")
    if args.max_new_tokens is None:
        args.max_new_tokens = 64
    return None if args.coco_instances else args.objects_column or "objects"


def _delta(args: argparse.Namespace) -> float:
    """--delta, checked; DELTA when not given (0 is a valid delta)."""
    from flowtui.dataset.summary import DELTA
    from flowtui.engine.errors import InputError

    if args.delta is None:
        return DELTA
    if not 0 <= args.delta < 1:
        raise InputError(f"--delta must be in [0, 1), got {args.delta}")
    return args.delta


def cmd_run(argv: list[str], prog: str) -> int:
    args = run_parser(prog).parse_args(argv)
    from flowtui.dataset.dist import from_env
    from flowtui.dataset.knockout import settings as knockout_settings
    from flowtui.dataset.readers import open_dataset
    from flowtui.dataset.runner import RunAborted, build_config, check_out, run_dataset
    from flowtui.dataset.summary import format_table

    delta = _delta(args)
    check_model_options(args)
    if args.region_column and not args.lens:
        from flowtui.engine.errors import InputError

        raise InputError("--region-column is for --lens (the lens over the object's region)")
    answer_column = _chair_options(args)
    source = open_dataset(args.data, args.format, args.images, args.image_column,
                          args.question_column, answer_column, args.id_column, args.split,
                          region_column=args.region_column, regions=args.lens)
    chair = None
    if args.scoring == "chair":
        from flowtui.dataset.chair import settings

        chair = settings(source, args.vocabulary, args.coco_instances)
    config = build_config(source, args.model, dtype=args.dtype, quantize=args.quantize,
                          scoring=args.scoring, strategies=args.strategies, seed=args.seed,
                          max_new_tokens=args.max_new_tokens or 16,
                          question_suffix=args.question_suffix, limit=args.limit,
                          snapshots=args.snapshots, self_check=args.self_check,
                          lens=args.lens, chair=chair,
                          knockout=knockout_settings(args.knockout, args.window))
    out = Path(args.out)
    check_out(out, config, args.resume)  # before any model time is spent
    dist = from_env(args.device)
    args.device = dist.device_for(args.device)
    try:
        summary = run_dataset(source, config, lambda: engine_factory(args)(None), out,
                              resume=args.resume, dist=dist, delta=delta,
                              progress=not args.no_progress, argv=["flowtui", "dataset", "run",
                                                                   *argv])
    except RunAborted as exc:
        return fail(str(exc), 1)
    except KeyboardInterrupt:
        return fail(f"interrupted; the finished samples are in {out}: rerun with --resume to "
                    "finish", 130)
    if summary is not None:
        say(format_table(summary, f"{config.model['name']} on {source.path.name}"))
        chair_png = ", chair.png" if summary.get("baseline_chair_i") is not None else ""
        say(f"wrote {out}/ (summary.json, curves.csv, accuracy.png, cliffs.png{chair_png}, "
            "samples.jsonl)")
    return 0


REPORT_EPILOG = """\
rescoring: --scoring RULE scores the answers the run stored again under another rule, with no
model loaded: the baseline answers, every truncated answer and the recorded same-as-baseline
flags (so --scoring same needs no labels). It writes summary.json, curves.csv, accuracy.png and
cliffs.png into RUN_DIR/scoring-RULE/ (or --out DIR) and never touches the run's own files. A
rule the run's references cannot be scored with (e.g. pope on VQA answers, any rule but same on
data without answers) is refused before anything is written.

scoring rules:
{rules}

examples:
  flowtui dataset report toy-run
  flowtui dataset report toy-run --scoring pope-negation     # -> toy-run/scoring-pope-negation/
"""


def report_parser(prog: str) -> argparse.ArgumentParser:
    p = Parser(prog=prog, description="Merge a run's per-process files, print its curves as a "
               "table and (re)write summary.json, curves.csv, samples.jsonl and the plots. Works "
               "on an unfinished run too, and on process files copied in from other machines. "
               "With --scoring, rescore the stored answers under another rule instead.",
               epilog=REPORT_EPILOG.format(rules=_rules_text()),
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a results folder written by `flowtui dataset run`")
    p.add_argument("--scoring", default=None, metavar="RULE",
                   help="rescore the stored answers under RULE (no model): "
                        f"{', '.join(_rule_names())}; written to RUN_DIR/scoring-RULE/")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="with --scoring: the folder for the rescored files (default "
                        "RUN_DIR/scoring-RULE)")
    p.add_argument("--delta", type=float, default=None, metavar="D",
                   help="dataset cliff tolerance (default 0.01)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--json", action="store_true", help="print summary.json instead of the table")
    return p


def cmd_report(argv: list[str], prog: str) -> int:
    args = report_parser(prog).parse_args(argv)
    import json

    from flowtui.dataset.runner import RunAborted, finalize
    from flowtui.dataset.summary import format_table
    from flowtui.engine.errors import InputError

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise InputError(f"no results folder {run_dir}")
    delta = _delta(args)
    if args.out is not None and args.scoring is None:
        raise InputError("--out goes with --scoring (a plain report rewrites the run's own files)")
    folder = None
    try:
        if args.scoring is not None:
            from flowtui.dataset.rescore import RescoreAborted, rescore_run

            try:
                summary, folder = rescore_run(run_dir, args.scoring, args.out, delta,
                                              plots=not args.no_plots)
            except RescoreAborted as exc:
                return fail(str(exc), 1)
        else:
            summary = finalize(run_dir, delta, plots=not args.no_plots)
    except RunAborted as exc:
        return fail(str(exc), 1)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        title = f"{summary['model']} on {Path(str(summary['data'])).name}"
        if folder is not None:
            title += f", rescored with {args.scoring!r} (run with {summary['rescored_from']['scoring']!r})"
        say(format_table(summary, title))
        if folder is not None:
            files = "summary.json" if not summary["strategies"] else "summary.json, curves.csv" \
                if args.no_plots else "summary.json, curves.csv, accuracy.png, cliffs.png" + (
                    ", chair.png" if summary.get("baseline_chair_i") is not None else "")
            say(f"wrote {folder}/ ({files})")
    return 0


def show_parser(prog: str) -> argparse.ArgumentParser:
    p = Parser(prog=prog, description="Browse a run's results: the curves per strategy with the "
               "dataset cliff and the baseline, and a table of samples (sort, filter). Enter "
               "opens a sample in the explorer, from its snapshot (runs with --snapshots), or "
               "by analysing it with --model (or --run-model).")
    p.add_argument("run_dir", help="a results folder written by `flowtui dataset run`")
    add_model_options(p)
    p.add_argument("--run-model", action="store_true",
                   help="analyse samples with the model the run used (as its config.json says)")
    p.add_argument("--theme", default=None, help=THEME_HELP)
    add_pixel_options(p)
    return p


def cmd_show(argv: list[str], prog: str) -> int:
    args = show_parser(prog).parse_args(argv)
    from flowtui.dataset.browse import RunView
    from flowtui.engine.errors import InputError

    run = RunView.load(Path(args.run_dir))
    check_theme(args.theme)
    factory = None
    if args.run_model:
        if args.model is not None:
            raise InputError("give --model or --run-model, not both")
        args.model = run.config.model.get("arg")
        if args.dtype == "auto":
            args.dtype = run.config.model.get("dtype") or "auto"
    if args.run_model or args.model is not None:
        check_model_options(args)
        factory = engine_factory(args)
    from flowtui.ui.dataset_screen import run_dataset_browser

    return run_dataset_browser(run, engine_factory=factory, theme=args.theme,
                               **pixel_settings(args))


def toy_parser(prog: str) -> argparse.ArgumentParser:
    from flowtui.toy.evaluate import HELD_OUT_SEED

    p = Parser(prog=prog, description="Write a POPE-format dataset of toy scenes (pope.jsonl and "
               "images/) for the built-in toy model; its scenes are the model card's held-out "
               "ones, so a run reproduces the card's truncation curve.")
    p.add_argument("out", help="folder to write")
    p.add_argument("--n", type=positive_int, default=500, help="number of scenes (default 500)")
    p.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="scene seed family")
    p.add_argument("--captions", action="store_true",
                   help="write a caption set instead: captions.jsonl (image, text = the caption "
                        "prompt, objects), images/ and vocabulary.txt (every toy object), for "
                        "`dataset run --scoring chair`")
    return p


def cmd_toy(argv: list[str], prog: str) -> int:
    args = toy_parser(prog).parse_args(argv)
    from flowtui.engine.errors import InputError
    from flowtui.toy.dataset import write_caption_dataset, write_toy_dataset

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} exists and is not an empty folder")
    if args.captions:
        path = write_caption_dataset(out, args.n, args.seed)
        say(f"wrote {args.n} toy scenes to caption: {path}")
        say(f"next: flowtui dataset run {path} --scoring chair --vocabulary "
            f"{out / 'vocabulary.txt'} --out {out}-run")
        return 0
    path = write_toy_dataset(out, args.n, args.seed)
    say(f"wrote {args.n} toy scenes: {path}")
    say(f"next: flowtui dataset run {path} --out {out}-run")
    return 0


COMPARE_EPILOG = """\
The curves are those of truncation `all` (accuracy when every image token is hidden from layer K
on), each with its 95% interval, its baseline (K = L) and its dataset cliff. Runs of models of
one depth are drawn against K; of different depths against K/L, the relative depth of the first
truncated layer (1 = the unmodified model). Only finished runs compare; no model is loaded.

--out DIR writes DIR/compare.csv (one row per run and K: run, model, num_layers, K,
relative_depth, accuracy, ci95_low, ci95_high, is_cliff) and DIR/compare.png, each atomically,
and replaces either only where this command wrote it. Without --out, on a terminal, the curves
open in the dataset compare screen (one panel per run on one K cursor, ▲ each dataset cliff; `e`
writes the same two files, `?` lists the keys); --table, or output that is not a terminal (a
pipe, a file), prints them as a text table instead.

examples:
  flowtui dataset compare toy-run llava-run                 # the screen
  flowtui dataset compare toy-run llava-run --out figures/  # compare.csv + compare.png
  flowtui dataset compare toy-run llava-run --table         # the text table
"""


def compare_parser(prog: str) -> argparse.ArgumentParser:
    p = Parser(prog=prog, description="Several finished runs' accuracy curves (truncate all) on "
               "one figure, each run's dataset cliff marked, as the paper's Figure 5 panels.",
               epilog=COMPARE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="results folders written by `flowtui dataset run` (two or more)")
    p.add_argument("--out", "-o", default=None, metavar="DIR",
                   help="write compare.csv and compare.png into DIR (created if missing)")
    p.add_argument("--table", action="store_true",
                   help="print the text table instead of opening the compare screen")
    p.add_argument("--delta", type=float, default=None, metavar="D",
                   help="dataset cliff tolerance (default 0.01)")
    p.add_argument("--theme", default=None, help=THEME_HELP)
    return p


def cmd_compare(argv: list[str], prog: str) -> int:
    args = compare_parser(prog).parse_args(argv)
    from flowtui.dataset.compare import check_out, format_table, load_curves, write_compare

    delta = _delta(args)
    check_theme(args.theme)
    curves = load_curves(args.runs, delta)
    if args.out is None:
        # The screen only where someone can see it: scripts and pipes keep the table.
        if not args.table and sys.stdin.isatty() and sys.stdout.isatty():
            from flowtui.ui.app import run_dataset_compare

            return run_dataset_compare(curves, delta, theme=args.theme)
        say(format_table(curves, delta))
        return 0
    out = Path(args.out)
    check_out(out, curves)
    paths = write_compare(curves, out)
    say(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


SUBCOMMANDS = {"run": cmd_run, "report": cmd_report, "show": cmd_show, "compare": cmd_compare,
               "toy": cmd_toy}


def run(argv: list[str], prog: str = "flowtui dataset") -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: {prog} COMMAND [options]\n\n{DESCRIPTION}")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        from flowtui.engine.errors import InputError

        raise InputError(f"unknown dataset command {name!r}; choose one of: "
                         f"{', '.join(SUBCOMMANDS)} (see {prog} --help)")
    sys.stdout.flush()
    return SUBCOMMANDS[name](rest, f"{prog} {name}")
