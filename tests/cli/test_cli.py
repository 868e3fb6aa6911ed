"""The headless CLI: a working run, and every bad input as one line on stderr with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

from flowtui.cli import main
from flowtui.engine.families import supported_families


def test_headless_run_writes_snapshot_and_summary(tiny_paths, image_file, tmp_path, capsys):
    out = tmp_path / "run.flowtui"
    code = main([str(image_file), "Is there a red circle?", "--headless", "--model",
                 str(tiny_paths["a"]), "--sweep", "--truncate", "1", "--max-new-tokens", "4",
                 "--out", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "answer:" in captured.out and "cliff layer:" in captured.out
    assert f"wrote:    {out}" in captured.out
    assert "generating" in captured.err and "sweep" in captured.err
    with zipfile.ZipFile(out) as zf:
        m = json.loads(zf.read("manifest.json"))
    assert m["truncations"][0]["layer"] == 1 and isinstance(m["cliff_layer"], int)
    assert main(["open", str(out), "--summary"]) == 0
    assert "cliff layer" in capsys.readouterr().out


@pytest.mark.slow  # a subprocess loading a model
def test_entry_point_subprocess(tiny_paths, image_file, tmp_path):
    out = tmp_path / "sub.flowtui"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "flowtui", str(image_file), "what colour is the shape?",
         "--headless", "--model", str(tiny_paths["b"]), "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.exists() and "answer:" in proc.stdout
    assert "Traceback" not in proc.stderr


def _bad(argv, capsys, match):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("flowtui: error:")]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    assert match in errors[0], err
    assert "Traceback" not in err


def test_bad_images(tiny_paths, tmp_path, capsys, image_file):
    m = ["--headless", "--model", str(tiny_paths["a"]), "--out", str(tmp_path / "x.flowtui")]
    _bad([str(tmp_path / "missing.png"), "q?", *m], capsys, "image not found")
    (tmp_path / "notes.txt").write_text("not an image")
    _bad([str(tmp_path / "notes.txt"), "q?", *m], capsys, "not an image")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(image_file.read_bytes()[:200])
    _bad([str(corrupt), "q?", *m], capsys, "corrupt or truncated")
    _bad([str(tmp_path), "q?", *m], capsys, "directory")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    _bad([str(fifo), "q?", *m], capsys, "is a FIFO, not an image file")
    _bad(["/dev/zero", "q?", *m], capsys, "is a device, not an image file")
    from support.images import png_declaring

    (tmp_path / "bomb.png").write_bytes(png_declaring(60_000, 60_000))
    _bad([str(tmp_path / "bomb.png"), "q?", *m], capsys, "decompression bomb")
    assert not (tmp_path / "x.flowtui").exists()


def test_notes_on_how_the_image_was_read_reach_the_summary(tiny_paths, tmp_path, capsys):
    from PIL import Image

    frames = [Image.new("RGB", (40, 30), c) for c in ("red", "blue")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    out = tmp_path / "anim.flowtui"
    assert main([str(tmp_path / "anim.gif"), "is there a cat ?", "--headless", "--model",
                 str(tiny_paths["b"]), "--out", str(out), "--max-new-tokens", "2"]) == 0
    assert "note:     used the first of 2 frames" in capsys.readouterr().out
    import flowtui

    assert flowtui.load_snapshot(out).notes == ["used the first of 2 frames"]


def test_bad_question_and_options(tiny_paths, image_file, tmp_path, capsys):
    m = ["--headless", "--model", str(tiny_paths["a"])]
    _bad([str(image_file), "   ", *m], capsys, "question is empty")
    _bad([str(image_file), "q?", *m, "--max-new-tokens", "0"], capsys, "positive integer")
    _bad([str(image_file), "q?", *m, "--max-new-tokens", "lots"], capsys, "positive integer")
    _bad([str(image_file), "q?", *m, "--device", "tpu"], capsys, "unknown device")
    _bad([str(image_file), "q?", *m, "--dtype", "int3"], capsys, "invalid choice")
    _bad([str(image_file), "q?", *m, "--truncate", "-2"], capsys, "layer number")
    _bad([str(image_file), "q?", *m, "--truncate", "99"], capsys, "has layers 0..4")
    _bad([str(image_file), "q?", *m, "--truncate", "1", "--strategy", "top"], capsys, "--keep")
    _bad([str(image_file), "q?", *m, "--out", str(tmp_path)], capsys, "is a directory")
    _bad([str(image_file), "q?", *m, "--out", str(tmp_path / "no" / "x.flowtui")], capsys,
         "does not exist")
    _bad([str(image_file)], capsys, "required")
    _bad([str(image_file), "q?", "--model", str(tiny_paths["a"]), "--theme", "nope"], capsys,
         "unknown theme 'nope'; available: flowtui-dark")


def test_bad_models(image_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    base = [str(image_file), "q?", "--headless", "--out", str(tmp_path / "x.flowtui"), "--model"]
    _bad([*base, "someone/llava-not-here"], capsys, "someone/llava-not-here is not in the local")
    _bad([*base, str(tmp_path / "nowhere")], capsys, "model folder not found")
    _bad([*base, str(image_file)], capsys, "is a file")
    _bad([*base, str(tmp_path)], capsys, "no config.json")
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    # The listing names every family module found, whichever are present.
    _bad([*base, str(bert)], capsys, f"does not support; supported: {supported_families()}")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{nope")
    _bad([*base, str(broken)], capsys, "unreadable")
    llava_no_weights = tmp_path / "llava_empty"
    llava_no_weights.mkdir()
    (llava_no_weights / "config.json").write_text(json.dumps({"model_type": "llava"}))
    _bad([*base, str(llava_no_weights)], capsys, "processor files in")
    assert not (tmp_path / "x.flowtui").exists()


def _damaged(good, root, name, damage):
    import shutil

    folder = root / name
    shutil.copytree(good, folder)
    damage(folder)
    return str(folder)


def test_damaged_model_folders_say_which_part_is_damaged(tiny_paths, image_file, tmp_path, capsys):
    base = [str(image_file), "q?", "--headless", "--out", str(tmp_path / "x.flowtui"), "--model"]
    good = tiny_paths["a"]
    weights = "model.safetensors"

    def truncate(f):  # an interrupted download
        (f / weights).write_bytes((f / weights).read_bytes()[:5000])

    def garbage(f):
        (f / weights).write_bytes(b"not a safetensors file at all")

    def shard_missing(f):  # an index naming a shard that never arrived
        (f / weights).rename(f / "model-00001-of-00002.safetensors")
        index = {"metadata": {}, "weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}
        (f / "model.safetensors.index.json").write_text(json.dumps(index))

    for name, damage in [("trunc", truncate), ("garbage", garbage), ("shard", shard_missing)]:
        _bad([*base, _damaged(good, tmp_path, name, damage)], capsys,
             f"the weights in {tmp_path / name} are corrupt or incomplete")
    tok = _damaged(good, tmp_path, "tok", lambda f: (f / "tokenizer.json").write_text("{bad"))
    _bad([*base, tok], capsys, "tokenizer or processor files in")
    cfg = _damaged(good, tmp_path, "cfg", lambda f: (f / "config.json").write_text(
        json.dumps({"model_type": "llava", "text_config": 5})))
    _bad([*base, cfg], capsys, "the config in")
    assert not (tmp_path / "x.flowtui").exists()


def test_a_prompt_past_the_context_length_is_refused(tiny_paths, image_file, tmp_path, capsys):
    question = " ".join(["is there a red circle ?"] * 80)  # 480 words + 36 image tokens > 512
    _bad([str(image_file), question, "--headless", "--model", str(tiny_paths["a"]), "--out",
          str(tmp_path / "x.flowtui")], capsys, "context length of 512 tokens")
    _bad([str(image_file), "is there a cat ?", "--headless", "--model", str(tiny_paths["a"]),
          "--max-new-tokens", "500", "--out", str(tmp_path / "x.flowtui")], capsys,
         "lower --max-new-tokens")
    assert not (tmp_path / "x.flowtui").exists()


def test_bad_snapshots_for_open(tmp_path, capsys):
    _bad(["open", str(tmp_path / "none.flowtui")], capsys, "not found")
    (tmp_path / "junk.flowtui").write_bytes(b"PK\x03\x04junk")
    _bad(["open", str(tmp_path / "junk.flowtui")], capsys, "corrupt")


def test_hub_id_resolves_from_local_cache(tiny_paths, tmp_path, monkeypatch):
    """A cached hub id loads with no network: build the cache layout huggingface_hub reads."""
    import shutil

    from flowtui.engine.loading import resolve_model_path

    cache = tmp_path / "hub"
    repo = cache / "models--tiny--llava"
    snap = repo / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_paths["a"], snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    path, name = resolve_model_path("tiny/llava")
    assert name == "tiny/llava" and (path / "config.json").exists()


def test_top_level_help_lists_every_command(capsys):
    from flowtui.cli import COMMANDS

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "flowtui IMAGE QUESTION" in out
    for name in COMMANDS:
        assert f"  {name} " in out
    assert main([]) == 2  # no arguments: the same usage, as an error
    assert "usage: flowtui" in capsys.readouterr().out
    assert main(["--version"]) == 0 and "flowtui 0.1.0" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,words",
    [
        (["analyze", "--help"], ("--headless", "--sweep", "--model", "never downloads", "llava")),
        (["open", "--help"], ("snapshot", "--summary", "--model")),
        (["doctor", "--help"], ("--json", "--families", "--no-self-test", "--remote", "exit codes")),
    ],
)
def test_each_command_has_its_own_help(argv, words, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: flowtui {argv[0]}")
    for word in words:
        assert word in out


def test_default_command_is_analyze(tiny_paths, image_file, tmp_path, capsys):
    """`flowtui IMAGE QUESTION` and `flowtui analyze IMAGE QUESTION` are the same command."""
    import flowtui

    answers = []
    for prefix in ([], ["analyze"]):
        out = tmp_path / f"{len(prefix)}.flowtui"
        assert main([*prefix, str(image_file), "is there a cat ?", "--headless", "--model",
                     str(tiny_paths["b"]), "--out", str(out), "--max-new-tokens", "3"]) == 0
        answers.append(flowtui.load_snapshot(out).answer)
    assert answers[0] == answers[1]


def test_help_names_every_supported_model_type_without_importing_torch():
    from flowtui.engine.families import supported_model_types

    code = ("import sys\ntry:\n    from flowtui.cli import main; main(['analyze', '--help'])\n"
            "except SystemExit:\n    pass\nprint('torch imported:', 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    for model_type in supported_model_types():
        assert model_type in proc.stdout
    assert proc.stdout.strip().endswith("torch imported: False")


def test_the_toy_has_a_name_and_its_snapshots_rerun_without_a_flag(image_file, tmp_path, capsys,
                                                                    monkeypatch):
    out = tmp_path / "toy.flowtui"
    assert main([str(image_file), "Is there a red circle?", "--headless", "--model", "flowtui-toy",
                 "--out", str(out), "--max-new-tokens", "2"]) == 0
    assert "flowtui-toy" in capsys.readouterr().out
    seen = {}

    def fake_explorer(**kwargs):
        seen.update(kwargs)
        return 0

    import flowtui.ui.app

    monkeypatch.setattr(flowtui.ui.app, "run_explorer", fake_explorer)
    assert main(["open", str(out)]) == 0
    engine = seen["engine_factory"]()
    assert engine.info.name == "flowtui-toy"
    a = seen["analysis"]
    assert engine.truncate(a, a.num_layers, record=False).same
