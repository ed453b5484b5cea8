"""Themes as data: the built-in TOML files, user themes, bad files, and switching."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from abl_tui.app import DashboardApp
from abl_tui.themes import (
    DEFAULT_THEME,
    STATUS_VARIABLES,
    ThemeFileError,
    builtin_themes_dir,
    check_theme_css,
    load_all_themes,
    load_theme,
    load_themes_from,
    user_themes_dir,
)
from app_support import demo_runner, frozen_clock

GOOD = """
name = "ocean"
dark = true
[colors]
primary = "#1E88E5"
background = "#0B1A2A"
[variables]
status-failed = "#FF5577"
"""


def test_builtin_themes_are_dark_light_and_high_contrast(tmp_path: Path) -> None:
    folder = builtin_themes_dir()
    assert folder is not None and (folder / "dark.toml").is_file()
    loaded = load_all_themes(user_dir=tmp_path)
    assert loaded.problems == []
    themes = {theme.name: theme for theme in loaded.themes}
    assert set(themes) == {"abl-dark", "abl-light", "abl-high-contrast"}
    assert DEFAULT_THEME in themes
    assert themes["abl-dark"].dark and themes["abl-high-contrast"].dark
    assert not themes["abl-light"].dark
    for theme in themes.values():
        assert set(STATUS_VARIABLES) <= set(theme.variables), theme.name
        assert theme.background and theme.foreground and theme.primary
    assert themes["abl-high-contrast"].text_alpha == 1.0


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("name = ", "not valid TOML"),
        ('dark = true\n[colors]\nprimary = "#fff"', "'name'"),
        ('name = "x"\n[colors]\nprimary = "#fff"\nshiny = "#000"', "unknown colour"),
        ('name = "x"\n[colors]\nprimary = "blurple"', "is not a colour"),
        ('name = "x"\n[colors]\nsecondary = "#fff"', "needs at least 'primary'"),
        ('name = "x"\nfont = "serif"\n[colors]\nprimary = "#fff"', "unknown key"),
        ('name = "x"\ndark = "yes"\n[colors]\nprimary = "#fff"', "'dark'"),
        ('name = "x"\n[colors]\nprimary = "#fff"\n[variables]\nstatus-ok = "nope"', "status-ok"),
        ('name = "x"\ntext_alpha = 2\n[colors]\nprimary = "#fff"', "text_alpha"),
    ],
)
def test_bad_theme_files_are_refused_with_the_reason(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ThemeFileError, match=problem):
        load_theme(path)


def test_user_themes_come_from_abl_themes_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ABL_THEMES_DIR", str(tmp_path))
    assert user_themes_dir() == tmp_path
    (tmp_path / "ocean.toml").write_text(GOOD)
    (tmp_path / "broken.toml").write_text("name = [")
    loaded = load_all_themes()
    assert "ocean" in [theme.name for theme in loaded.themes]
    assert [path.name for path, _ in loaded.problems] == ["broken.toml"]
    monkeypatch.delenv("ABL_THEMES_DIR")
    assert user_themes_dir() == Path.home() / ".config" / "abl" / "themes"


async def test_app_registers_themes_warns_about_bad_ones_and_switches(tmp_path: Path) -> None:
    (tmp_path / "ocean.toml").write_text(GOOD)
    (tmp_path / "broken.toml").write_text('name = "broken"\n[colors]\nprimary = "nope"')
    app = DashboardApp(demo_runner(), clock=frozen_clock, themes_dir=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.theme == DEFAULT_THEME
        assert {"abl-dark", "abl-light", "abl-high-contrast", "ocean"} <= set(app.available_themes)
        warnings = [note for note in app._notifications if note.severity == "warning"]
        assert len(warnings) == 1 and "broken.toml" in warnings[0].title
        assert "Theme" in [command.title for command in app.get_system_commands(app.screen)]
        app.theme = "ocean"
        await pilot.pause()
        assert app.theme_variables["status-failed"] == "#FF5577"
        assert app.theme_variables["status-ok"] == STATUS_VARIABLES["status-ok"]  # fallback
        app.theme = "textual-light"  # Textual's own themes work too, with our fallbacks
        await pilot.pause()
        assert app.theme_variables["status-running"] == STATUS_VARIABLES["status-running"]
        app.theme = "abl-high-contrast"
        await pilot.pause()
        assert app.theme_variables["status-failed"] == "#FF4040"


# --- issue 11: a theme Textual's CSS cannot use is reported and skipped, never fatal ----------

BROKEN_VARIABLES = {
    "scrollbar-not-a-colour": (
        'scrollbar = "nope"',
        "scrollbar = 'nope' is not usable as a colour",
    ),
    "css-injection": (
        '"footer-key-foreground" = "red; } Screen { color: red"',
        "footer-key-foreground",
    ),
    "unknown-variable-bad-tokens": ('"my-var" = "{{"', "my-var = '{{' is not usable as CSS"),
    "text-style-given-a-colour": (
        '"block-cursor-text-style" = "#fff"',
        "is not usable as a text style",
    ),
    "variable-reference": ('"status-ok" = "$primary"', "status-ok"),
}


@pytest.mark.parametrize(
    ("variables", "problem"), list(BROKEN_VARIABLES.values()), ids=list(BROKEN_VARIABLES)
)
def test_variables_the_css_cannot_use_are_refused(
    tmp_path: Path, variables: str, problem: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'name = "x"\n[colors]\nprimary = "#123456"\n[variables]\n{variables}\n')
    with pytest.raises(ThemeFileError, match=re.escape(problem)):
        load_theme(path)


def test_usable_variables_of_every_kind_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(
        'name = "kinds"\n[colors]\nprimary = "#123456"\n[variables]\n'
        'scrollbar = "#334455"\n"block-cursor-text-style" = "bold underline"\n'
        '"link-background" = "initial"\n"text-muted" = "auto 60%"\n"my-own" = "anything"\n'
    )
    theme = load_theme(path)
    assert theme.variables["block-cursor-text-style"] == "bold underline"


def test_builtin_themes_pass_the_css_check_they_skip_at_start_up() -> None:
    folder = builtin_themes_dir()
    assert folder is not None
    for path in sorted(folder.glob("*.toml")):
        check_theme_css(load_theme(path, check_css=False), path)


def test_unusable_theme_files_are_listed_logged_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "ocean.toml").write_text(GOOD)
    (tmp_path / "bom.toml").write_bytes(b"\xef\xbb\xbf" + GOOD.replace("ocean", "bom").encode())
    (tmp_path / "latin1.toml").write_bytes(b'name = "caf\xe9"\n')
    (tmp_path / "folder.toml").mkdir()
    (tmp_path / "dangling.toml").symlink_to(tmp_path / "nowhere.toml")
    (tmp_path / "scroll.toml").write_text(GOOD + 'scrollbar = "nope"\n')
    with caplog.at_level(logging.WARNING, logger="abl_tui.themes"):
        loaded = load_themes_from(tmp_path)
    assert sorted(theme.name for theme in loaded.themes) == ["bom", "ocean"]
    refused = {path.name: problem for path, problem in loaded.problems}
    assert set(refused) == {"latin1.toml", "folder.toml", "dangling.toml", "scroll.toml"}
    assert "not valid TOML" in refused["latin1.toml"]
    assert "cannot read" in refused["folder.toml"] and "cannot read" in refused["dangling.toml"]
    assert "scrollbar" in refused["scroll.toml"]
    logged = [record.getMessage() for record in caplog.records]
    assert len(logged) == 4 and all("skipped" in message for message in logged)


async def test_a_broken_user_theme_replacing_the_default_does_not_stop_the_dashboard(
    tmp_path: Path,
) -> None:
    """A user's `abl-dark` whose variables break the CSS: the built-in one is used instead."""
    (tmp_path / "mine.toml").write_text(
        'name = "abl-dark"\n[colors]\nprimary = "#123456"\n'
        '[variables]\n"block-cursor-background" = "{{"\n'
    )
    (tmp_path / "garbage.toml").write_bytes(b"\x00\xff not toml at all [[[")
    app = DashboardApp(demo_runner(), clock=frozen_clock, themes_dir=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.theme == DEFAULT_THEME
        assert app.current_theme.primary == "#4C9BE8"  # the built-in abl-dark's
        titles = sorted(note.title for note in app._notifications if note.severity == "warning")
        assert titles == ["Theme garbage.toml skipped", "Theme mine.toml skipped"]
        assert app.screen is app.main  # the dashboard is up
