"""The README's install and test commands are the ones CI runs, byte for byte, and the README says
how to get the CPU-only or the GPU build of PyTorch (issue 11: the one command gets the CPU build
only where a local CPU wheel is served)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]


def _install_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Install, test, run")
    return readme[start:readme.index("\n## ", start + 1)]


def test_the_readme_commands_are_the_ones_ci_runs():
    blocks = re.findall(r"```\n(.*?)\n```", _install_section(), re.DOTALL)
    install, test, fast = blocks[0], blocks[1], blocks[2]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert install in ci, "the README's install command is not the one .ci/run runs"
    assert test in ci, "the README's test command is not the one .ci/run runs"
    assert fast in ci and '-m "not slow"' in fast, "the README's fast lane is not run by .ci/run"
    assert "pip install torch==2.13.0 &&" in install


def test_the_readme_says_which_torch_build_the_command_gets():
    text = " ".join(_install_section().split())
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in text
    assert "CUDA build" in text and "nvidia-*" in text
    assert "so pip does not pull CUDA packages" not in text  # true only with a local CPU wheel
