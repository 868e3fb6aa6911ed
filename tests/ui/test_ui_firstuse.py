"""The explorer as a first-time user and an attacker meet it: text from outside never drives the
terminal, notes on how the image was read are shown, the sweep's scale is fixed and printed, and
the layout holds at every size (Pilot; the SVG snapshots are in test_ui_snapshot.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from rich.text import Text
from support.fake_engine import FakeEngine, fake_factory, make_analysis

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
    from PIL import Image
    from support.fake_engine import make_image

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
    from PIL import Image
    from support.fake_engine import make_image

    class Noting(FakeEngine):
        def analyze(self, image, question, max_new_tokens=32, progress=None, cam=True,
                    self_check=True, per_token=False):
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


# --- the sweep's log p scale -----------------------------------------------------------------
def with_sweep(logprob, cliff: int | None = 3, num_layers: int = 8):
    from flowtui.engine.analysis import Sweep, cliff_layer

    a = make_analysis(num_layers=num_layers)
    lp = np.asarray(logprob, np.float32)
    same = np.array([k >= cliff for k in range(num_layers + 1)]) if cliff is not None \
        else np.zeros(num_layers + 1, bool)
    a.set_sweep(Sweep(lp, same, ["x"] * len(lp), cliff_layer(same)))
    return a


def test_logp_scale_is_a_fixed_ladder():
    from flowtui.ui.widgets.truncation_panel import logp_scale

    assert [logp_scale(v) for v in (0.0, -0.02, -1.0, -1.5, -3.1, -7, -12, -400)] == \
        [-1, -1, -1, -2, -5, -10, -20, -500]
    assert logp_scale(float("-inf")) == -1000


def test_a_tiny_drop_looks_tiny_and_the_scale_is_printed():
    from flowtui.ui.widgets.truncation_panel import sweep_text

    tiny = with_sweep([-0.12] + [-0.10] * 8)  # a drop of 0.02 nats
    big = with_sweep([-3.1, -2.5, -1.0] + [-0.1] * 6)
    t, b = sweep_text(tiny, 80, 0).plain, sweep_text(big, 80, 0).plain
    assert "scale 0 to −1 nats" in t and "scale 0 to −5 nats" in b
    # Two rows of blocks, 16 steps from −scale (empty) to 0 nats (full): the 0.02-nat drop moves
    # the first K by at most one step; on the −5 scale the 3.1-nat drop leaves it below half.
    first, last = height(t, 0), height(t, 8)
    assert abs(first - last) <= 1 and first >= 13, (first, last)
    assert height(b, 0) <= 7 and height(b, 8) >= 15
    # The scale is the same ladder step for any analysis whose lowest value it holds.
    other = with_sweep([-4.9] + [-0.1] * 8)
    assert height(other, 0) == 1  # −4.9 of −5: a sliver
    assert "scale 0 to −5 nats" in sweep_text(other, 80, 0).plain


def height(plain_or_analysis, k: int) -> int:
    """Blocks (0..16) of column K in a two-row sweep chart."""
    from flowtui.ui.widgets.truncation_panel import LABEL_WIDTH, layer_columns, sweep_text

    text = plain_or_analysis if isinstance(plain_or_analysis, str) else \
        sweep_text(plain_or_analysis, 80, 0).plain
    top, bottom = text.splitlines()[:2]
    cw = layer_columns(9, 80 - LABEL_WIDTH - 9)  # nine K's in 80 columns, as sweep_text lays out
    levels = " ▁▂▃▄▅▆▇█"
    col = LABEL_WIDTH + k * cw
    return levels.index(top[col]) + levels.index(bottom[col])


async def test_reopened_sweep_is_drawn_to_the_panels_width():
    app = FlowtuiApp(analysis=with_sweep([-3.0] + [-0.1] * 8), snapshot_path="s.flowtui")
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        width = app.truncation_panel.content_region.width
        curve = app.query_one("#sweep-curve").text.plain.splitlines()
        # Nine K's over the panel's width (not squashed into a 20-cell default).
        assert len(curve[0].rstrip()) > width * 0.8, (len(curve[0]), width)


# --- layout at every size -----------------------------------------------------------------------
def shown(app, widget) -> str:
    """The text a widget shows on screen, its content area row by row."""
    lines = screen_lines(app)
    r = widget.region
    return "\n".join(lines[y][r.x:r.right] for y in range(r.y, r.bottom))


@pytest.mark.parametrize("size", [(100, 30), (120, 40), (200, 60)])
async def test_typed_k_and_strategy_keep_the_run_button_whole(size):
    app = FlowtuiApp(analysis=make_analysis(num_layers=8),
                     engine_factory=fake_factory(FakeEngine(num_layers=8)))
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        r_label, r_input = app.query_one("#trunc-r-label"), app.query_one("#trunc-r")
        assert not r_label.display and not r_input.display  # R means nothing for `all`
        await pilot.press("t", "4")
        await pilot.pause()
        for strategy in ("all", "top", "random"):
            app.query_one("#trunc-strategy").value = strategy
            await pilot.pause()
            assert r_input.display == (strategy != "all")
            button = app.query_one("#trunc-run")
            panel = app.truncation_panel.content_region
            assert button.region.right <= panel.right, strategy
            assert "Run" in shown(app, button), strategy


async def test_a_finished_run_is_listed_once_and_a_cancelled_sweep_leaves_nothing_behind():
    engine = FakeEngine(num_layers=8, delay=0.1)
    app = FlowtuiApp(analysis=make_analysis(num_layers=8), engine_factory=fake_factory(engine))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("t", "enter")
        await settle(app, pilot)
        text = shown(app, app.truncation_panel)
        assert text.count("'No.'") == 1
        await pilot.press("escape", "s")
        await pilot.pause(0.3)
        assert app.query_one("#sweep-progress").display
        await pilot.press("x")
        await settle(app, pilot)
        assert not app.query_one("#sweep-progress").display
        assert str(app.query_one("#sweep-label").content) == "sweep K=0..8"
        assert "no sweep yet" in app.query_one("#sweep-curve").text.plain
        assert "cancelled" not in app.status.text.plain and app.status.kind == "ready"
        assert any("sweep cancelled" in n.message for n in app._notifications)


async def test_80x24_shows_the_answer_panel_whole_and_every_footer_key():
    app = FlowtuiApp(analysis=with_sweep([-3.0] + [-0.1] * 12, num_layers=12),
                     snapshot_path="s.flowtui")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        answer = shown(app, app.answer_panel)
        for part in ("Q Is there a red circle?", "A Yes.", "fake-lvlm", "cliff"):
            assert part in answer, answer
        flow = shown(app, app.flow_panel).splitlines()
        # The scale line fits its line, the cliff's number included (not wrapped onto the next).
        assert any(line.rstrip(" │").endswith("▲ cliff 3") for line in flow), flow
        footer = screen_lines(app)[-1]
        for key in ("Layer", "Thr", "Colormap", "Mode", "Map", "Heads", "Sweep", "Export",
                    "Help", "Quit"):
            assert key in footer, footer


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (120, 40)])
async def test_help_shows_every_key(size):
    from flowtui.ui.app import KEY_BINDINGS
    from flowtui.ui.screens import format_keys

    app = FlowtuiApp(analysis=make_analysis())
    async with app.run_test(size=size) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        box = app.screen.query_one("VerticalScroll")
        text = shown(app, box)
        for b in KEY_BINDINGS:
            assert f"{format_keys(b.key)}  " in text, (b.key, text)


async def test_200x60_sparklines_fill_the_flow_panel():
    app = FlowtuiApp(analysis=make_analysis(num_layers=8))
    async with app.run_test(size=(200, 60)) as pilot:
        await pilot.pause()
        panel = app.flow_panel
        rows = [line for line in panel.render().plain.splitlines() if line.startswith("image")]
        assert len(rows[0].rstrip()) > 0.9 * panel.content_region.width


# --- the CAM on screen: true colours, the peak outlined -----------------------------------------
def red_scene_with_a_hot_block():
    """A pure red image whose CAM is hot on a 4x4 block of the 12x12 grid (peak at token 5*12+6)."""
    a = make_analysis(num_layers=4)
    a.image = np.zeros_like(a.image)
    a.image[..., 0] = 255
    a.cam_tokens[:] = 0.0
    for r in range(4, 8):
        a.cam_tokens[:, r * 12 + 4:r * 12 + 8] = 0.8
    a.cam_tokens[:, 5 * 12 + 6] = 1.0
    return a


def frame_colours(app) -> set[tuple[int, int, int]]:
    from flowtui.ui.widgets.image_panel import CamView

    view = app.query_one(CamView)
    pad = {c.get_truecolor() for c in (view.rich_style.color, view.rich_style.bgcolor) if c}
    return {tuple(c.get_truecolor()) for strip in view.frame() for seg in strip
            for c in (seg.style.color, seg.style.bgcolor) if c and c.get_truecolor() not in pad}


@pytest.mark.parametrize("colormap", ["viridis", "jet"])
async def test_overlay_on_screen_uses_only_colour_bar_colours_and_outlines_the_peak(colormap):
    from flowtui.render.cells import PEAK_RGB
    from flowtui.render.colormaps import apply_colormap, colormap_lut

    app = FlowtuiApp(analysis=red_scene_with_a_hot_block())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        while app.view.colormap != colormap:
            await pilot.press("c")
        await pilot.pause()
        assert app.view.mode == "overlay"
        colours = frame_colours(app)
        lut = {tuple(int(x) for x in rgb) for rgb in colormap_lut(colormap)}
        greys = {c for c in colours if c[0] == c[1] == c[2]}
        # Every pixel is the dimmed grey image, a colour of the colour bar, or the peak's frame:
        # no red-tinted blend of heat and image.
        assert colours <= greys | lut | {PEAK_RGB}, colours - greys - lut
        hot = tuple(int(x) for x in apply_colormap(np.array([0.8]), colormap)[0])
        assert hot in colours and greys  # the block's own colour, and the image under it
        assert PEAK_RGB in colours  # the peak token's region is outlined
        assert "□" in app.image_panel._border_subtitle.plain
        await pilot.press("o")  # heatmap only: still the bar's colours and the frame
        await pilot.pause()
        assert PEAK_RGB in frame_colours(app)
        await pilot.press("o")  # image only: no map, no frame
        await pilot.pause()
        assert PEAK_RGB not in frame_colours(app)


# --- p: PNGs of the map on screen -----------------------------------------------------------
async def test_p_writes_the_map_on_screen_with_layer_view_and_colour_bar(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    app = FlowtuiApp(analysis=make_analysis(num_layers=3, layout="tiles"))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("c", "p")  # the CAM in jet
        await pilot.pause()
        await pilot.press("enter")
        await settle(app, pilot)
        await pilot.press("m", "k", "o", "p")  # the attention, sinks out, heatmap only
        await pilot.pause()
        await pilot.press("enter")
        await settle(app, pilot)
    cam_dir, att_dir = sorted(tmp_path.iterdir(), key=lambda p: "attention" in p.name)
    assert "-cam-" in cam_dir.name and "-attention-" in att_dir.name
    names = sorted(p.name for p in cam_dir.iterdir())
    assert names == [f"layer-0{i}-{v}.png" for i in range(3) for v in ("global", "tiles")]
    with Image.open(cam_dir / "layer-01-tiles.png") as im:
        assert im.text["Title"] == "LLaVA-CAM · layer 1/2 · view tiles · overlay"
        assert im.text["Colorbar"] == "jet · threshold 0.50"
        assert im.text["Peak"] == "□ peak token"
    with Image.open(cam_dir / "layer-02-tiles.png") as im:  # the fake's last CAM is all zero
        assert "Peak" not in im.text
    with Image.open(att_dir / "layer-01-global.png") as im:
        assert im.text["Title"] == "attention of the answer · layer 1/2 · view global · heatmap"
        assert im.text["Colorbar"].startswith("jet · 0..")
        assert "sink token" in im.text["Comment"] and "excluded" in im.text["Comment"]
        assert im.text["Peak"] == "□ peak token"


# --- self-checks -----------------------------------------------------------------------------
async def test_a_failed_self_check_is_said_loudly_and_kept_on_screen():
    from flowtui.engine.analysis import Check

    a = make_analysis(num_layers=6)
    a.checks = [Check("answer-is-argmax", True, {"max_relative_gap": 0.0}),
                Check("rerun-reproduces-baseline", False,
                      {"logprob": -5.42, "baseline_logprob": -14.04}, "the rerun's logits differ")]
    app = FlowtuiApp(analysis=a, snapshot_path="aya.flowtui")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        [toast] = [n for n in app._notifications if n.severity == "error"]
        assert "rerun-reproduces-baseline" in toast.message and "-5.42" in toast.message
        assert "may be wrong" in toast.title
        text = "\n".join(screen_lines(app))
        assert "✗ self-check failed: rerun-reproduces-baseline" in text
        # The red mark: the failed line is drawn in red; the passed check is not listed.
        marked = [seg.style.color.get_truecolor() for strip in
                  app.screen._compositor.render_strips() for seg in strip
                  if seg.text.startswith("✗ self-check failed") and seg.style and seg.style.color]
        assert marked and all(c.red > 150 and c.green < 100 and c.blue < 100 for c in marked)
        assert "answer-is-argmax" not in text


async def test_passed_self_checks_say_nothing():
    from flowtui.engine.analysis import Check

    a = make_analysis(num_layers=6)
    a.checks = [Check("answer-is-argmax", True), Check("finite", True)]
    app = FlowtuiApp(analysis=a)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert not [n for n in app._notifications if n.severity == "error"]
        assert "self-check" not in "\n".join(screen_lines(app))
