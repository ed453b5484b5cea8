"""Pilot tests of the operator's controls (issue 14, second half): the dashboard closing when
a signal stopped the run, the theme remembered, and the live controls of a running run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from abl_tui import cli
from abl_tui.app import DashboardApp
from abl_tui.preferences import Preferences, config_dir
from test_app_fakes import demo_runner, frozen_clock


def make_app(**overrides: Any) -> DashboardApp:
    """The dashboard on the scripted demo run and the frozen clock."""
    return DashboardApp(demo_runner(**overrides), clock=frozen_clock)


async def settle(pilot: Pilot[Any]) -> None:
    """Let the app mount, drain and redraw."""
    await pilot.pause()
    pilot.app.tick()  # type: ignore[attr-defined]
    await pilot.pause()


# ---------------------------------------------------------------------- a signal ends it all


async def test_a_signal_that_stopped_the_run_closes_the_dashboard() -> None:
    runner = demo_runner()
    app = DashboardApp(runner, clock=frozen_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert not app._exit
        runner.cancel()  # what cli's SIGTERM handler does, from the main thread
        app.tick()
        assert app._exit  # the app leaves, so the process exits 143
        await pilot.pause()


async def test_a_run_that_ends_by_itself_keeps_the_dashboard_open() -> None:
    runner = demo_runner()
    app = DashboardApp(runner, clock=frozen_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        runner.done.set()  # finished, not cancelled: the operator reads the result
        app.tick()
        assert not app._exit and app.dashboard.ended


# ---------------------------------------------------------------------- the theme is remembered


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """XDG_CONFIG_HOME in a temporary folder (the user's own is never touched)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config"


def test_preferences_live_in_the_xdg_config_folder(config_home: Path) -> None:
    assert config_dir() == config_home / "abl"
    preferences = Preferences()
    assert preferences.theme() is None
    preferences.save_theme("abl-light")
    saved = json.loads((config_home / "abl" / "preferences.json").read_text())
    assert saved == {"theme": "abl-light"}
    assert Preferences().theme() == "abl-light"


def test_a_broken_preferences_file_reads_as_nothing_saved(config_home: Path) -> None:
    path = config_home / "abl" / "preferences.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert Preferences().theme() is None
    Preferences().save_theme("abl-dark")  # and is replaced by the next save
    assert Preferences().theme() == "abl-dark"


def test_theme_flag_is_checked_saved_and_used_next_time(config_home: Path) -> None:
    assert cli._theme(argparse.Namespace(theme=None)) is None
    assert cli._theme(argparse.Namespace(theme="abl-light")) == "abl-light"
    assert cli._theme(argparse.Namespace(theme=None)) == "abl-light"  # the next start
    with pytest.raises(cli._UsageError, match=r"unknown theme 'no-such'.*abl-dark"):
        cli._theme(argparse.Namespace(theme="no-such"))
    assert Preferences().theme() == "abl-light"


def test_an_unknown_theme_exits_2_before_anything_runs(
    config_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text('{"id": "a", "prompt": "hi"}\n')
    db = tmp_path / "runs.db"
    status = cli.main(["run", str(items), "--dry-run", "--db", str(db), "--theme", "nope"])
    assert status == cli.EXIT_USAGE
    assert "unknown theme 'nope'" in capsys.readouterr().err
    assert not db.exists()


async def test_a_theme_picked_in_the_dashboard_is_saved(config_home: Path) -> None:
    chosen: list[str] = []
    app = DashboardApp(
        demo_runner(), clock=frozen_clock, theme="abl-dark", on_theme_chosen=chosen.append
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.theme == "abl-dark"
        app.theme = "abl-light"  # what the palette's theme picker does
        await pilot.pause()
    assert chosen == ["abl-light"]
