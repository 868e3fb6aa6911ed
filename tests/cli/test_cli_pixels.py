"""--pixels and --map-style on the explorer commands, and the doctor's graphics check."""

from __future__ import annotations

import pytest

import flowtui.render.terminal as terminal
from flowtui.cli import main
from flowtui.render.terminal import Graphics


@pytest.mark.parametrize("argv", [["analyze", "--help"], ["open", "--help"],
                                  ["compare", "--help"], ["dataset", "show", "--help"]])
def test_every_explorer_command_takes_pixels(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "--pixels {auto,kitty,sixel,iterm,halfblock}" in out
    assert "--map-style {regions,smooth}" in out


def test_a_wrong_protocol_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["open", str(tmp_path / "x.flowtui"), "--pixels", "png"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "invalid choice: 'png'" in err[0]


def test_pixel_settings_forced_asks_no_terminal(monkeypatch):
    from flowtui.cli.common import pixel_settings

    def no_probe(*args, **kwargs):
        raise AssertionError("a forced protocol must not probe")

    monkeypatch.setattr(terminal, "probe", no_probe)
    monkeypatch.delenv("TMUX", raising=False)

    class Args:
        pixels, map_style = "sixel", "smooth"

    got = pixel_settings(Args())
    assert got == {"graphics": Graphics("sixel", "--pixels", None), "map_style": "smooth"}


@pytest.mark.parametrize("graphics,status,words", [
    (Graphics("kitty", "probed"), "ok", "real pixels: kitty graphics (probed)"),
    (Graphics("halfblock", "no answer to the probe in 0.5 s"), "warn", "half-blocks: no answer"),
    (Graphics("halfblock", "tmux allow-passthrough is off: set -g allow-passthrough on", "off"),
     "warn", "allow-passthrough on"),
    (Graphics("halfblock", "no image protocol answered"), "ok", "half-blocks: no image"),
    (Graphics("halfblock", "not a terminal"), "ok", "not asked"),
])
def test_doctor_says_the_graphics_protocol(monkeypatch, graphics, status, words):
    from flowtui.cli.doctor import graphics_item

    monkeypatch.setattr(terminal, "detect", lambda requested="auto": graphics)
    item = graphics_item()
    assert (item.section, item.name, item.status) == ("terminal", "graphics", status)
    assert words in item.detail and item.data["protocol"] == graphics.protocol
