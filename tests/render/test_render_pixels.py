"""The map at real pixels, UI-free: the two map styles (render/overlay.py) against values
painted by hand, and the protocol probe's fallback chain (render/terminal.py) on a real
pseudo-terminal, including a terminal that never answers."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from flowtui.render.cells import PEAK_RGB
from flowtui.render.colormaps import colormap_lut
from flowtui.render.overlay import PixelRenderer, fit_pixels, smooth_values
from flowtui.render.terminal import (
    DA1_QUERY,
    KITTY_QUERY,
    Graphics,
    ProbeAnswer,
    choose,
    detect,
    parse_answers,
    probe,
    tmux_wrap,
)


def grid_regions(rows: int, cols: int, h: int, w: int) -> np.ndarray:
    ys, xs = np.linspace(0, h, rows + 1), np.linspace(0, w, cols + 1)
    return np.array([[xs[c], ys[r], xs[c + 1], ys[r + 1]] for r in range(rows)
                     for c in range(cols)], np.float32)


def test_regions_style_paints_each_token_over_its_exact_region_at_the_shown_size():
    h, w = 60, 90
    image = np.full((h, w, 3), 200, np.uint8)
    values = np.linspace(0.1, 1.0, 6, dtype=np.float32)[None]  # 2 x 3 tokens
    regions = grid_regions(2, 3, h, w)
    r = PixelRenderer(image, values, regions)
    px = r.pixels(0, (180, 120), "heatmap", threshold=0.0, colormap="jet")
    assert px.shape == (120, 180, 3)
    lut = colormap_lut("jet")
    for t, (x0, y0, x1, y1) in enumerate(regions * 2):  # shown at twice the image's size
        expected = lut[int(round(values[0, t] * 255))]
        block = px[int(y0):int(y1), int(x0):int(x1)]
        assert (block == expected).all(), t  # every pixel of the region, edges included


def test_regions_style_outlines_the_peak_and_keeps_the_threshold():
    h = w = 40
    image = np.zeros((h, w, 3), np.uint8)
    values = np.array([[0.2, 0.4, 0.6, 1.0]], np.float32)
    regions = grid_regions(2, 2, h, w)
    px = PixelRenderer(image, values, regions).pixels(0, (40, 40), "overlay", 0.5, "viridis",
                                                      mark=3)
    lut = colormap_lut("viridis")
    assert (px[10, 10] != lut[51]).any()  # below the threshold: the (grey) image, not heat
    assert (px[30, 10] == lut[153]).all() and (px[25, 25] == lut[255]).all()
    assert (px[20, 20:40] == PEAK_RGB).all() and (px[20:40, 39] == PEAK_RGB).all()
    assert (px[19, 20:40] != PEAK_RGB).any()  # only the peak's own region is framed


def test_smooth_style_is_bilinear_between_token_centres():
    h = w = 40
    values = np.array([0.0, 1.0, 0.0, 1.0], np.float32)  # left column 0, right column 1
    regions = grid_regions(2, 2, h, w)
    out = smooth_values(values, regions, np.arange(4), (h, w), (40, 40))
    # Centres at x = 10 and 30: flat outside them, linear in between (pixel centres x + 0.5).
    assert np.allclose(out[:, :10], 0.0) and np.allclose(out[:, 30:], 1.0)
    assert np.allclose(out[5, 10:30], (np.arange(10, 30) + 0.5 - 10) / 20)
    # A token missing from the grid leaves a hole: NaN there, the rest mixes what is known.
    some = smooth_values(values, regions, np.array([0, 1, 3]), (h, w), (40, 40))
    assert np.isnan(some[30, 5]) and np.isfinite(some[5, 5])
    assert np.allclose(some[30, 35], 1.0)


def test_smooth_style_on_a_real_renderer_differs_from_regions_and_keeps_the_peak():
    h = w = 48
    rng = np.random.default_rng(0)
    values = rng.random((1, 16)).astype(np.float32)
    regions = grid_regions(4, 4, h, w)
    r = PixelRenderer(np.zeros((h, w, 3), np.uint8), values, regions)
    a = r.pixels(0, (96, 96), "heatmap", 0.0, "viridis", style="regions")
    b = r.pixels(0, (96, 96), "heatmap", 0.0, "viridis", style="smooth", mark=5)
    assert (a != b).any()
    assert (b[24, 24:48] == PEAK_RGB).all()
    with pytest.raises(ValueError, match="map style"):
        r.pixels(0, (96, 96), style="blurry")


def test_fit_pixels_keeps_the_aspect_ratio():
    assert fit_pixels((336, 336), 520, 560) == (520, 520)
    assert fit_pixels((480, 640), 500, 500) == (500, 375)
    assert fit_pixels((10, 10), 0, 5) == (0, 0)


# --- the probe ------------------------------------------------------------------------------
def test_answers_parsed_kitty_before_da1_only():
    ok = b"\x1b_Gi=31;OK\x1b\\\x1b[?62;4;22c"
    assert parse_answers(ok) == (True, (62, 4, 22))
    assert parse_answers(b"\x1b[?62;22c") == (False, (62, 22))
    assert parse_answers(b"\x1b[?1;2c\x1b_Gi=31;OK\x1b\\") == (False, (1, 2))  # late: not ours
    assert parse_answers(b"\x1b_Gi=31;ENOTSUPPORTED\x1b\\\x1b[?6c")[0] is False
    assert parse_answers(b"") == (False, None)


@pytest.mark.parametrize("answer,env,expected", [
    (ProbeAnswer(True, (62,), 0.01), {}, "kitty"),
    (ProbeAnswer(True, (62, 4), 0.01), {"TERM_PROGRAM": "WezTerm"}, "iterm"),
    (ProbeAnswer(True, (62, 4), 0.01), {"KONSOLE_VERSION": "230804"}, "sixel"),
    (ProbeAnswer(False, (62, 4), 0.01), {}, "sixel"),
    (ProbeAnswer(False, (62,), 0.01), {"LC_TERMINAL": "iTerm2"}, "iterm"),
    (ProbeAnswer(False, (62, 22), 0.01), {}, "halfblock"),
    (ProbeAnswer(False, None, 0.5), {"TERM": "xterm-kitty"}, "halfblock"),  # a TERM that lies
    (None, {}, "halfblock"),
])
def test_the_fallback_chain(answer, env, expected):
    assert choose(answer, env)[0] == expected


class FakeTerminal:
    """The far end of a pseudo-terminal: reads what the probe writes and answers (or not)."""

    def __init__(self, answer: bytes | None, delay: float = 0.0) -> None:
        self.master, self.slave = os.openpty()
        self.answer, self.delay, self.got = answer, delay, b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        want = (KITTY_QUERY + DA1_QUERY).encode()
        while want not in self.got:
            try:
                self.got += os.read(self.master, 4096)
            except OSError:
                return
        time.sleep(self.delay)
        try:
            if self.answer is not None:
                os.write(self.master, self.answer)
        except OSError:  # closed before the answer was due
            return
        while True:  # whatever else is written (the erased line)
            try:
                self.got += os.read(self.master, 4096)
            except OSError:
                return

    def wait_for(self, tail: bytes, timeout: float = 2.0) -> bytes:
        end = time.monotonic() + timeout
        while not self.got.endswith(tail) and time.monotonic() < end:
            time.sleep(0.01)
        return self.got

    def close(self) -> None:
        # The slave first: the reader then gets EIO and ends before the master's fd number can
        # be reused by the next pty (it would read that one's bytes).
        os.close(self.slave)
        self.thread.join(timeout=5)
        os.close(self.master)


@pytest.mark.parametrize("answer,protocol", [
    (b"\x1b_Gi=31;OK\x1b\\\x1b[?62;4c", "kitty"),
    (b"\x1b[?62;4;22c", "sixel"),
    (b"\x1b[?62;22c", "halfblock"),
])
def test_probe_on_a_pty(answer, protocol):
    term = FakeTerminal(answer)
    try:
        got = probe(term.slave, term.slave, timeout=2.0)
        assert choose(got, {})[0] == protocol
        assert got.seconds < 1.0
    finally:
        term.close()


def test_a_probe_that_is_never_answered_falls_back_within_a_second():
    term = FakeTerminal(None)
    try:
        t0 = time.monotonic()
        g = detect("auto", env={"TERM": "xterm-kitty"}, fd_in=term.slave, fd_out=term.slave)
        elapsed = time.monotonic() - t0
        assert g.protocol == "halfblock" and "no answer" in g.reason
        assert elapsed < 1.0
        # The probe's line is erased after it, so an APC the terminal printed leaves nothing.
        assert term.wait_for(b"\r\x1b[2K").endswith(b"\r\x1b[2K")
    finally:
        term.close()


def test_an_answer_after_the_deadline_is_not_waited_for():
    term = FakeTerminal(b"\x1b_Gi=31;OK\x1b\\\x1b[?62;4c", delay=1.5)
    try:
        got = probe(term.slave, term.slave, timeout=0.3)
        assert got.da1 is None and not got.kitty and got.seconds < 1.0
    finally:
        term.close()


def fake_tmux(value: str):
    def run(argv, **kwargs):
        assert argv[:2] == ["tmux", "show"]
        return subprocess.CompletedProcess(argv, 0, stdout=f"{value}\n", stderr="")
    return run


def test_tmux_without_passthrough_is_detected_and_said():
    env = {"TMUX": "/tmp/tmux-1000/default,1,0"}
    g = detect("auto", env=env, run=fake_tmux("off"))
    assert g == Graphics("halfblock", "tmux allow-passthrough is off: set -g allow-passthrough "
                         "on", "off")
    forced = detect("kitty", env=env, run=fake_tmux("off"))
    assert forced.protocol == "kitty" and "allow-passthrough is off" in forced.reason


def test_tmux_with_passthrough_wraps_the_probe():
    term = FakeTerminal(None)
    term.answer = None
    env = {"TMUX": "x"}
    try:
        # The fake terminal waits for the unwrapped query, so it never answers: half-blocks.
        g = detect("auto", env=env, fd_in=term.slave, fd_out=term.slave, timeout=0.2,
                   run=fake_tmux("on"))
        assert g.protocol == "halfblock" and g.tmux == "on"
        assert tmux_wrap(KITTY_QUERY).encode() in term.wait_for(b"\r\x1b[2K")
    finally:
        term.close()
    assert tmux_wrap("\x1b_Ga=d\x1b\\") == "\x1bPtmux;\x1b\x1b_Ga=d\x1b\x1b\\\x1b\\"


def test_no_terminal_and_bad_choices():
    r, w = os.pipe()
    try:
        assert detect("auto", env={}, fd_in=r, fd_out=w).reason == "not a terminal"
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(ValueError, match="pixel protocol"):
        detect("png", env={})


@pytest.mark.parametrize("mode", ["overlay", "heatmap", "image"])
def test_the_per_token_gather_draws_what_compose_pixels_draws(mode):
    """The regions style's fast path against the half-block path's own composition, on a map
    with a token that has no region and a margin no token covers (a centre crop's sides)."""
    from flowtui.render.cells import compose_pixels, owner_map, paint, resize_image

    rng = np.random.default_rng(1)
    h, w = 30, 50
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    regions = grid_regions(3, 4, h, 40)  # x 40..50 is never seen
    regions[5] = np.nan
    values = rng.random((2, 12)).astype(np.float32)
    size = (100, 60)
    got = PixelRenderer(image, values, regions).pixels(1, size, mode, 0.4, "magma")
    img = resize_image(image, size)
    own = owner_map(regions, np.arange(12), (h, w), size)
    assert (got == compose_pixels(img, paint(values[1], own), mode, 0.4, "magma")).all()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.parametrize("setting", ["off", "on"])
def test_a_real_tmux(tmp_path, setting):
    """The probe inside a real tmux server of its own: its allow-passthrough read back, and an
    answer (tmux's own DA1) within the time."""
    conf, out = tmp_path / "tmux.conf", tmp_path / "out.txt"
    conf.write_text(f"set -g allow-passthrough {setting}\n")
    code = ("import time; from flowtui.render.terminal import detect; t = time.monotonic(); "
            f"g = detect(); open({str(out)!r}, 'w').write(f'{{g.protocol}}|{{g.tmux}}|"
            "{g.reason}|{time.monotonic() - t:.2f}')")
    server = ["tmux", "-L", f"flowtui-test-{os.getpid()}-{setting}", "-f", str(conf)]
    env = {k: v for k, v in os.environ.items() if k != "TMUX"}
    subprocess.run([*server, "new-session", "-d", "-x", "100", "-y", "30",
                    f"{sys.executable} -c {shlex.quote(code)}; sleep 5"], check=True, env=env)
    try:
        end = time.monotonic() + 20
        while not out.exists() and time.monotonic() < end:
            time.sleep(0.1)
        protocol, tmux, reason, seconds = out.read_text().split("|")
    finally:
        subprocess.run([*server, "kill-server"], env=env)
    assert protocol == "halfblock" and tmux == setting and float(seconds) < 1.0
    if setting == "off":
        assert "allow-passthrough is off" in reason
    else:  # tmux answers DA1 itself; no terminal outside it answers kitty's query
        assert reason == "no image protocol answered"
