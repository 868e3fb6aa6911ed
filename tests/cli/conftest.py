"""Fixtures of the command-line tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.pty_term import Term


@pytest.fixture
def term(tmp_path) -> Iterator:
    """term(*args, cwd=..., env=...) starts `flowtui ARGS`; every one is killed at teardown."""
    started: list[Term] = []

    def start(*args: str | Path, cwd: Path = tmp_path, env: dict[str, str] | None = None) -> Term:
        t = Term([str(a) for a in args], cwd, env)
        started.append(t)
        return t

    yield start
    for t in started:
        t.close()
