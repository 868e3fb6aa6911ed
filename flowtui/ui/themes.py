"""Theme files: flowtui's built-in themes (shipped in `flowtui.themes`) plus the user's own.

A theme file is JSON (or TOML) with the fields of `textual.theme.Theme`::

    {"name": "my-theme", "primary": "#4EA8DE", "background": "#101010", "dark": true, ...}

User themes live in `$XDG_CONFIG_HOME/flowtui/themes/` (default `~/.config/flowtui/themes/`),
one `*.json` or `*.toml` file per theme. A broken user file is skipped, never fatal.
"""

from __future__ import annotations

import json
import os
import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Any

DEFAULT_THEME = "flowtui-dark"
_FIELDS = (
    "name primary secondary warning error success accent foreground background surface panel "
    "boost dark luminosity_spread text_alpha variables"
).split()


def user_theme_dir() -> Path:
    """Where users put their own theme files (honours $XDG_CONFIG_HOME)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "flowtui" / "themes"


def _parse(text: str, suffix: str, origin: str) -> dict[str, Any]:
    data = tomllib.loads(text) if suffix == ".toml" else json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise ValueError(f"{origin}: a theme needs a string 'name'")
    if not isinstance(data.get("primary"), str):
        raise ValueError(f"{origin}: a theme needs a 'primary' colour")
    return {k: v for k, v in data.items() if k in _FIELDS}


def _builtin_specs() -> list[dict[str, Any]]:
    specs = []
    for entry in sorted(files("flowtui.themes").iterdir(), key=lambda p: p.name):
        suffix = Path(entry.name).suffix
        if suffix in (".json", ".toml"):
            specs.append(_parse(entry.read_text(encoding="utf-8"), suffix, entry.name))
    return specs


def _user_specs(errors: list[str] | None = None) -> list[dict[str, Any]]:
    folder = user_theme_dir()
    specs: list[dict[str, Any]] = []
    if not folder.is_dir():
        return specs
    for path in sorted(folder.iterdir()):
        if path.suffix not in (".json", ".toml"):
            continue
        try:
            specs.append(_parse(path.read_text(encoding="utf-8"), path.suffix, str(path)))
        except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
            if errors is not None:
                errors.append(f"skipped theme file {path}: {str(exc).splitlines()[0]}")
    return specs


def load_themes(errors: list[str] | None = None) -> list[Any]:
    """flowtui's themes then the user's, as `textual.theme.Theme` objects (user wins on a name clash)."""
    from textual.color import Color, ColorParseError
    from textual.theme import Theme

    themes: dict[str, Theme] = {}
    for spec in _builtin_specs() + _user_specs(errors):
        try:
            for key in ("primary", "secondary", "background", "foreground", "surface", "panel"):
                if spec.get(key) is not None:
                    Color.parse(spec[key])
            themes[spec["name"]] = Theme(**spec)
        except (ColorParseError, TypeError) as exc:
            if errors is not None:
                errors.append(f"skipped theme {spec.get('name')!r}: {str(exc).splitlines()[0]}")
    return list(themes.values())


def available_themes() -> list[str]:
    """Every name `--theme` accepts: flowtui's, the user's and Textual's built-in themes."""
    from textual.theme import BUILTIN_THEMES

    names = [t.name for t in load_themes()]
    return names + sorted(n for n in BUILTIN_THEMES if n not in names)
