"""The tested dependency ranges: what pyproject admits, what start-up warns about."""

from __future__ import annotations

import re
import sys
import tomllib
import warnings
from pathlib import Path

import pytest

from flowtui import versions

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("version,ok", [
    ("5.22.0", True), ("5.25.0", True), ("5.25.3", True), ("5.23.1rc1", True),
    ("5.21.9", False), ("5.26.0", False), ("6.0.0", False), ("4.57.6", False),
])
def test_in_range_takes_patch_releases_of_the_newest_minor(version, ok):
    assert versions.in_range(version, "5.22.0", "5.25.0") is ok


def test_local_build_tags_are_not_part_of_the_release():
    assert versions.release("2.13.0+cpu") == (2, 13, 0)
    assert versions.in_range("2.13.0+cu126", "2.13.0", "2.13.0")


def _requirement(name: str) -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    # The whole name: `textual` is not `textual-serve`.
    (spec,) = [d for d in deps if re.match(rf"{re.escape(name)}(?![\w.-])", d)]
    return spec[len(name):]


@pytest.mark.parametrize("name", sorted(versions.TESTED))
def test_pyproject_admits_exactly_the_tested_range(name):
    """The requirement's floor is the lowest tested minor and its cap the minor after the
    newest tested one: pip can never resolve to a release nobody tested."""
    low, high = versions.TESTED[name]
    lo, hi = versions.release(low), versions.release(high)
    spec = _requirement(name)
    floor = re.search(r">=([\d.]+)", spec).group(1)
    cap = re.search(r"<([\d.]+)", spec).group(1)
    assert versions.release(floor)[:2] == lo[:2] and versions.release(floor) <= lo, spec
    assert versions.release(cap)[:2] == (hi[0], hi[1] + 1), spec


def test_oldest_constraints_pin_the_lowest_tested_versions():
    pins = dict(line.split("==") for line in (ROOT / ".ci" / "oldest.txt").read_text().split()
                if "==" in line)
    for name, (low, _) in versions.TESTED.items():
        if name != "torch":  # one CPU wheel is served here: 2.13.0 at both ends
            assert pins[name] == low, name


@pytest.fixture
def untested(monkeypatch):
    """transformers as if outside the tested range, for this test only."""
    monkeypatch.setitem(versions.TESTED, "transformers", ("9.0.0", "9.0.0"))
    monkeypatch.setattr(versions, "_warned", False)
    versions._startup_warnings.cache_clear()
    yield
    versions._startup_warnings.cache_clear()


def test_cli_says_an_untested_transformers_in_one_line_and_goes_on(untested, tmp_path, capsys):
    from flowtui.cli import main

    out = tmp_path / "s.flowtui"
    sample = ROOT / "sample_images" / "toy_scene_1.png"
    code = main([str(sample), "Is there a red circle?", "--headless", "--out", str(out),
                 "--no-self-check"])
    err = capsys.readouterr().err.splitlines()
    warned = [line for line in err if line.startswith("flowtui: warning:")]
    assert code == 0
    assert len(warned) == 1 and "transformers" in warned[0] and "9.0.0" in warned[0]
    from flowtui.engine.snapshot import load_snapshot

    # The analysis keeps it: the explorer shows it and the snapshot carries it.
    assert any("outside the versions flowtui is tested with" in n
               for n in load_snapshot(out).notes)


def test_python_api_warns_once(untested):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        versions.warn_untested()
        versions.warn_untested()
    said = [w for w in caught if issubclass(w.category, versions.UntestedVersionWarning)]
    assert len(said) == 1 and "9.0.0" in str(said[0].message)


def test_a_tested_install_says_nothing():
    assert versions.startup_warnings() == [], "the suite runs on a tested install"
    assert sys.version_info >= (3, 11)
