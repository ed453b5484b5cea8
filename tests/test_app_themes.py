"""Themes as data: the built-in TOML files, user themes, bad files, and switching."""

from __future__ import annotations

from pathlib import Path

import pytest

from abl_tui.app import DashboardApp
from abl_tui.themes import (
    DEFAULT_THEME,
    STATUS_VARIABLES,
    ThemeFileError,
    builtin_themes_dir,
    load_all_themes,
    load_theme,
    user_themes_dir,
)
from test_app_fakes import demo_runner, frozen_clock

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
