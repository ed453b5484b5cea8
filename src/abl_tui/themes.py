"""Themes as data: TOML files turned into Textual :class:`~textual.theme.Theme` objects.

Built-in themes ship inside the wheel as ``abl_tui/builtin_themes`` (an editable install
reads the repository's ``themes/`` folder instead); users add their own in
``$ABL_THEMES_DIR`` or ``~/.config/abl/themes``. A theme file holds ``name``, ``dark``,
a ``[colors]`` table of Theme colours and a ``[variables]`` table, where our semantic
item-state colours (``status-ok``, ``status-failed``, ...) live next to any Textual variable.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual.color import Color, ColorParseError
from textual.theme import Theme

#: The theme the dashboard starts with.
DEFAULT_THEME = "abl-dark"

#: Our semantic variables and their fallbacks (used when a theme, e.g. one of Textual's
#: own, does not define them; app.tcss would not parse without a value for each).
STATUS_VARIABLES: dict[str, str] = {
    "status-ok": "#57AB5A",
    "status-failed": "#E5534B",
    "status-running": "#4C9BE8",
    "status-retry": "#C69026",
    "status-cooldown": "#D17DD7",
}

_COLOR_KEYS = (
    "primary",
    "secondary",
    "warning",
    "error",
    "success",
    "accent",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
)
_TOP_KEYS = {"name", "dark", "colors", "variables", "luminosity_spread", "text_alpha"}


class ThemeFileError(Exception):
    """A theme file that cannot be used, with the reason (shown to the user as a warning)."""


@dataclass
class LoadedThemes:
    """Themes found in some folders, and the files that were refused (path, reason)."""

    themes: list[Theme] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)


def builtin_themes_dir() -> Path | None:
    """The folder of shipped themes: inside the installed package, else the repo's ``themes/``."""
    packaged = Path(__file__).resolve().parent / "builtin_themes"
    if packaged.is_dir():
        return packaged
    repo = Path(__file__).resolve().parents[2] / "themes"  # src/abl_tui/themes.py -> repo
    return repo if repo.is_dir() else None


def user_themes_dir() -> Path:
    """Where user themes live: ``$ABL_THEMES_DIR``, else ``~/.config/abl/themes``."""
    configured = os.environ.get("ABL_THEMES_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".config" / "abl" / "themes"


def _color(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ThemeFileError(f"{path.name}: {key} must be a colour string, got {value!r}")
    try:
        Color.parse(value)
    except ColorParseError:
        raise ThemeFileError(f"{path.name}: {key} = {value!r} is not a colour") from None
    return value


def theme_from_data(data: dict[str, Any], path: Path) -> Theme:
    """Build a Theme from a parsed theme file; raises ThemeFileError naming what is wrong."""
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ThemeFileError(f"{path.name}: unknown key(s) {', '.join(unknown)}")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ThemeFileError(f"{path.name}: 'name' must be a non-empty string")
    dark = data.get("dark", True)
    if not isinstance(dark, bool):
        raise ThemeFileError(f"{path.name}: 'dark' must be true or false")
    colors = data.get("colors", {})
    if not isinstance(colors, dict):
        raise ThemeFileError(f"{path.name}: [colors] must be a table")
    bad = sorted(set(colors) - set(_COLOR_KEYS))
    if bad:
        raise ThemeFileError(f"{path.name}: unknown colour(s) {', '.join(bad)}")
    if "primary" not in colors:
        raise ThemeFileError(f"{path.name}: [colors] needs at least 'primary'")
    parsed = {key: _color(path, key, value) for key, value in colors.items()}
    variables = data.get("variables", {})
    if not isinstance(variables, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in variables.items()
    ):
        raise ThemeFileError(f"{path.name}: [variables] must map names to strings")
    for key in STATUS_VARIABLES:
        if key in variables:
            _color(path, key, variables[key])
    extra: dict[str, Any] = {}
    for key in ("luminosity_spread", "text_alpha"):
        if key in data:
            value = data[key]
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
                raise ThemeFileError(f"{path.name}: '{key}' must be a number from 0 to 1")
            extra[key] = float(value)
    return Theme(name=name.strip(), dark=dark, variables=dict(variables), **parsed, **extra)


def load_theme(path: Path) -> Theme:
    """Read one theme file; raises ThemeFileError (unreadable, bad TOML or bad values)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ThemeFileError(f"{path.name}: cannot read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ThemeFileError(f"{path.name}: not valid TOML ({exc})") from None
    return theme_from_data(data, path)


def load_themes_from(folder: Path | None) -> LoadedThemes:
    """Every ``*.toml`` theme in ``folder`` (sorted by file name); a missing folder is empty."""
    loaded = LoadedThemes()
    if folder is None or not folder.is_dir():
        return loaded
    for path in sorted(folder.glob("*.toml")):
        try:
            loaded.themes.append(load_theme(path))
        except ThemeFileError as exc:
            loaded.problems.append((path, str(exc)))
    return loaded


def load_all_themes(user_dir: Path | None = None) -> LoadedThemes:
    """Built-in themes, then user themes (a user theme may replace a built-in of the same name)."""
    builtin = load_themes_from(builtin_themes_dir())
    user = load_themes_from(user_dir if user_dir is not None else user_themes_dir())
    return LoadedThemes(builtin.themes + user.themes, builtin.problems + user.problems)
