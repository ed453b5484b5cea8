"""Themes as data: TOML files turned into Textual :class:`~textual.theme.Theme` objects.

Built-in themes ship inside the wheel as ``abl_tui/builtin_themes`` (an editable install
reads the repository's ``themes/`` folder instead); users add their own in
``$ABL_THEMES_DIR`` or ``~/.config/abl/themes``. A theme file holds ``name``, ``dark``,
a ``[colors]`` table of Theme colours and a ``[variables]`` table, where our semantic
item-state colours (``status-ok``, ``status-failed``, ...) live next to any Textual variable.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual.color import Color, ColorParseError
from textual.theme import Theme

logger = logging.getLogger(__name__)

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


def user_themes_dir() -> Path | None:
    """Where user themes live: ``$ABL_THEMES_DIR``, else ``~/.config/abl/themes`` (None when
    there is no home folder to look in)."""
    configured = os.environ.get("ABL_THEMES_DIR")
    try:
        if configured:
            return Path(configured).expanduser()
        return Path.home() / ".config" / "abl" / "themes"
    except (RuntimeError, KeyError):  # no $HOME and no password-database entry
        return None


def _color(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ThemeFileError(f"{path.name}: {key} must be a colour string, got {value!r}")
    try:
        Color.parse(value)
    except ColorParseError:
        raise ThemeFileError(f"{path.name}: {key} = {value!r} is not a colour") from None
    return value


def _colors(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """The ``[colors]`` table, checked: known names, ``primary`` present, parseable colours."""
    colors = data.get("colors", {})
    if not isinstance(colors, dict):
        raise ThemeFileError(f"{path.name}: [colors] must be a table")
    bad = sorted(set(colors) - set(_COLOR_KEYS))
    if bad:
        raise ThemeFileError(f"{path.name}: unknown colour(s) {', '.join(bad)}")
    if "primary" not in colors:
        raise ThemeFileError(f"{path.name}: [colors] needs at least 'primary'")
    return {key: _color(path, key, value) for key, value in colors.items()}


def _variables(data: dict[str, Any], path: Path) -> dict[str, str]:
    """The ``[variables]`` table, checked: names to strings, our status colours parseable."""
    variables = data.get("variables", {})
    if not isinstance(variables, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in variables.items()
    ):
        raise ThemeFileError(f"{path.name}: [variables] must map names to strings")
    for key in STATUS_VARIABLES:
        if key in variables:
            _color(path, key, variables[key])
    return dict(variables)


def _extras(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """``luminosity_spread`` and ``text_alpha``, each a number from 0 to 1, when given."""
    extra: dict[str, Any] = {}
    for key in ("luminosity_spread", "text_alpha"):
        if key in data:
            value = data[key]
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
                raise ThemeFileError(f"{path.name}: '{key}' must be a number from 0 to 1")
            extra[key] = float(value)
    return extra


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
    fields = {**_colors(data, path), **_extras(data, path)}
    return Theme(name=name.strip(), dark=dark, variables=_variables(data, path), **fields)


@functools.cache
def _textual_variables() -> frozenset[str]:
    """The CSS variables Textual derives from a theme (``scrollbar``, ``footer-key-foreground``)."""
    return frozenset(Theme(name="probe", primary="#000000").to_color_system().generate())


def check_theme_css(theme: Theme, path: Path) -> None:
    """Raise ThemeFileError unless Textual's CSS can use every ``[variables]`` value.

    Each value is parsed the way the app will use it (colour variables in a colour rule,
    ``*-style`` ones as a text style, unknown ones as bare CSS tokens), one at a time so the
    message names the culprit: a bad value would otherwise stop the dashboard at start-up.
    """
    if not theme.variables:
        return
    from textual.css.stylesheet import Stylesheet

    plain = dataclasses.replace(theme, variables={})
    base = {**STATUS_VARIABLES, **plain.to_color_system().generate()}
    known = _textual_variables() | set(STATUS_VARIABLES)
    for name, value in theme.variables.items():
        kind = "a text style" if name.endswith("-style") else "a colour"
        rule = f"{'text-style' if kind == 'a text style' else 'color'}: ${name};"
        sheet = Stylesheet(variables={**base, name: value})
        sheet.add_source(f"Screen {{ {rule if name in known else ''} }}", read_from=(str(path), ""))
        try:
            sheet.parse()
        except Exception:  # the parser's errors are many classes; any of them means "unusable"
            what = kind if name in known else "CSS"
            msg = f"{path.name}: [variables] {name} = {value!r} is not usable as {what}"
            raise ThemeFileError(msg) from None


def load_theme(path: Path, *, check_css: bool = True) -> Theme:
    """Read one theme file; raises ThemeFileError (unreadable, bad TOML or bad values)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise ThemeFileError(f"{path.name}: cannot read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ThemeFileError(f"{path.name}: not valid TOML ({exc})") from None
    theme = theme_from_data(data, path)
    if check_css:
        check_theme_css(theme, path)
    return theme


def load_themes_from(folder: Path | None, *, check_css: bool = True) -> LoadedThemes:
    """Every ``*.toml`` theme in ``folder`` (sorted by file name); a missing folder is empty.

    A file that cannot be used is skipped, logged as a warning, and listed in ``problems``
    for the app to show; the other themes load as usual.
    """
    loaded = LoadedThemes()
    try:
        paths = sorted(folder.glob("*.toml")) if folder is not None and folder.is_dir() else []
    except OSError as exc:  # an unreadable folder: no themes from it, and say so
        assert folder is not None
        paths = []
        loaded.problems.append((folder, f"{folder}: cannot list themes ({exc.strerror or exc})"))
    for path in paths:
        try:
            loaded.themes.append(load_theme(path, check_css=check_css))
        except ThemeFileError as exc:
            loaded.problems.append((path, str(exc)))
    for path, problem in loaded.problems:
        logger.warning("theme %s skipped: %s", path, problem)
    return loaded


def load_all_themes(user_dir: Path | None = None) -> LoadedThemes:
    """Built-in themes, then user themes (a user theme may replace a built-in of the same name).

    Only user themes get the CSS check (a few ms each): the built-in ones are tested.
    """
    builtin = load_themes_from(builtin_themes_dir(), check_css=False)
    user = load_themes_from(user_dir if user_dir is not None else user_themes_dir())
    return LoadedThemes(builtin.themes + user.themes, builtin.problems + user.problems)
