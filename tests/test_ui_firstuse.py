"""The explorer as a first-time user and an attacker meet it: text from outside never drives the
terminal, notes on how the image was read are shown, the sweep's scale is fixed and printed, and
the layout holds at every size (Pilot; the SVG snapshots are in test_ui_snapshot.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from fake_engine import FakeEngine, fake_factory, make_analysis
from rich.text import Text

from flowtui.engine.analysis import TruncationRun
from flowtui.engine.errors import InputError
from flowtui.ui.app import FlowtuiApp

# A window title, a clear screen, blinking, a carriage return and a right-to-left override.
EVIL = "\x1b]0;title\x07\x1b[2J\x1b[5m\r\u202e"
SHOWN = "\\e]0;title\\x07\\e[2J\\e[5m\\r\\u202e"
RAW = ("\x1b", "\x07", "\r", "\u202e")


def screen_lines(app) -> list[str]:
    """The text of every screen line as the terminal would get it (notifications included)."""
    return ["".join(seg.text for seg in strip) for strip in app.screen._compositor.render_strips()]


def screen_styles(app) -> list:
    return [seg.style for strip in app.screen._compositor.render_strips() for seg in strip]


async def settle(app, pilot) -> None:
    await app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


def hostile_analysis():
    a = make_analysis(num_layers=6, layout="tiles", question=f"Is there{EVIL} a red circle?",
                      answer_tokens=(f"Y{EVIL}", "es"))
    a.model = replace(a.model, name=f"lvlm{EVIL}", device="cpu\x1b[5m", dtype="f32\r")
    a.views = [f"global{EVIL}", f"tiles{EVIL}"]
    a.notes = [f"note{EVIL}"]
    a.truncations.append(TruncationRun(2, "all", None, None, f"No{EVIL}", [1], -3.0, False, 0.1))
    return a


def assert_safe(lines: list[str]) -> None:
    for line in lines:
        for ch in RAW:
            assert ch not in line, (ch, line)


async def test_text_from_outside_is_drawn_with_visible_escapes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fail = InputError(f"cannot read {EVIL}.png")
    app = FlowtuiApp(analysis=hostile_analysis(), snapshot_path=f"shot{EVIL}.flowtui",
                     engine_factory=fake_factory(FakeEngine(num_layers=6, fail="sweep",
                                                            fail_exc=fail)))
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.pause()
        await pilot.press("w", "s")  # the second view's name in the title; a failing sweep
        await settle(app, pilot)
        lines = screen_lines(app)
        text = "\n".join(lines)
        assert_safe(lines)
        assert f"Is there{SHOWN} a red circle?" in text  # the question
        assert f"Y{SHOWN}es" in text  # the answer's tokens
        assert f"lvlm{SHOWN}" in text and "cpu\\e[5m · f32\\r" in text  # model, device
        assert f"tiles{SHOWN}" in text  # the view in the title and the status line
        assert f"note{SHOWN}" in text  # the notes
        assert f"'No{SHOWN}'" in text  # a run's answer
        # A notification quoting an error (wrapped on screen, so checked as given to the toast).
        assert any(f"cannot read {SHOWN}.png" in n.message for n in app._notifications)
        assert not any(style is not None and style.blink for style in screen_styles(app))
        # The export prompt's default file name comes from the snapshot's name.
        await pilot.press("e")
        await pilot.pause()
        default = app.screen.query_one("#prompt-path").value
        assert default.startswith(f"shot{SHOWN}-") and not any(ch in default for ch in RAW)
        assert_safe(screen_lines(app))
        await pilot.press("escape")


async def test_opened_file_name_and_live_question_are_safe(tmp_path):
    from fake_engine import make_image
    from PIL import Image

    image = tmp_path / f"photo{EVIL}.png"
    Image.fromarray(make_image(64)).save(image)
    app = FlowtuiApp(image=str(image), question=f"What{EVIL}?",
                     engine_factory=fake_factory(FakeEngine(), delay=0.3))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.1)
        assert_safe(screen_lines(app))  # while loading: the pending question
        assert f"What{SHOWN}?" in "\n".join(screen_lines(app))
        await settle(app, pilot)
        assert_safe(screen_lines(app))


def test_dataset_table_cells_are_text_with_visible_escapes():
    from flowtui.ui.dataset_screen import table_row

    rec = {"index": 3, "id": f"s{EVIL}", "question": f"[bold]q{EVIL}", "reference": "yes",
           "error": f"boom{EVIL}"}
    cells = table_row(rec)
    for cell in cells[:5]:
        assert isinstance(cell, Text)  # a str cell would be parsed as markup
        assert_safe([cell.plain])
    assert cells[2].plain.startswith("[bold]q\\e]0;")


# --- notes -------------------------------------------------------------------------------------
NOTES = ["EXIF orientation 6 applied (shown upright)",
         "the model's tokenizer does not know: horse"]


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_notes_show_in_the_answer_panel_and_status_line(size):
    a = make_analysis(num_layers=6)
    a.notes = list(NOTES)
    app = FlowtuiApp(analysis=a, snapshot_path="horse.flowtui")
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        panel = app.answer_panel.render().plain
        assert "⚠ EXIF orientation 6" in panel
        if size[1] >= 30:  # a line per note; on a short screen one line, cut to fit
            assert "⚠ the model's tokenizer does not know: horse" in panel
        status = app.status.text.plain
        assert "⚠ EXIF orientation 6" in status
        assert "(+1 more)" in status or status.endswith("…")
        # Every note in full once, in a notification, at any size.
        [toast] = [n for n in app._notifications if n.title == "note"]
        assert all(note in toast.message for note in NOTES)
        # The panel shows the notes without losing the answer or the cliff line.
        lines = screen_lines(app)
        region = app.answer_panel.content_region
        shown = "".join(lines[y][region.x:region.right] for y in range(region.y, region.bottom))
        assert "A Yes." in shown and "cliff" in shown and "⚠" in shown


async def test_no_notes_no_warning():
    app = FlowtuiApp(analysis=make_analysis(num_layers=6))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert "⚠" not in app.answer_panel.render().plain
        assert "⚠" not in app.status.text.plain


async def test_notes_of_a_live_analysis_reach_the_status_line(tmp_path):
    from fake_engine import make_image
    from PIL import Image

    class Noting(FakeEngine):
        def analyze(self, image, question, max_new_tokens=32, progress=None, cam=True):
            a = super().analyze(image, question, max_new_tokens, progress, cam)
            a.notes = ["the toy model only answers 'Is there a {colour} {shape}?'"]
            return a

    path = tmp_path / "horse.png"
    Image.fromarray(make_image(64)).save(path)
    app = FlowtuiApp(image=str(path), question="Is there a horse?",
                     engine_factory=fake_factory(Noting()))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert "the toy model only answers" in app.status.text.plain
        assert app.status.kind == "ready"
        assert "the toy model only answers" in app.answer_panel.render().plain
        await pilot.press("s")  # after more work the status line still carries the note
        await settle(app, pilot)
        assert "the toy model only answers" in app.status.text.plain


_ = np  # numpy is used by the tests further down
