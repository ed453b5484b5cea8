"""SVG snapshots of every screen at 80x24 and 120x40, from a fixed script on a frozen clock.

Regenerate after an intended change with ``pytest tests/test_app_snapshots.py
--snapshot-update`` and look at the SVGs before committing them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from textual.pilot import Pilot

from abl_tui.app import DashboardApp
from abl_tui.screens import ItemDetailScreen
from abl_tui.watch import Snapshot
from app_support import (
    FAILED,
    RUNNING,
    FakeSource,
    Run,
    demo_runner,
    demo_runs,
    finished_script,
    frozen_clock,
    learned_limits_script,
    until,
    watch_app,
)

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]
#: The main screen is checked at 60x18 too: its essentials must stay readable there.
MAIN_SIZES = [*SIZES, pytest.param((60, 18), id="60x18")]


def dashboard() -> DashboardApp:
    """The dashboard on the scripted demo run (mid-run, in a cooldown, five failures)."""
    return DashboardApp(demo_runner(runs=demo_runs()), clock=frozen_clock)


@pytest.mark.parametrize("size", MAIN_SIZES)
def test_main_screen(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(dashboard(), terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_item_detail_screen(snap_compare: Any, size: tuple[int, int]) -> None:
    async def open_item(pilot: Pilot[Any]) -> None:
        await pilot.press("down", "enter")
        screen = pilot.app.screen
        assert isinstance(screen, ItemDetailScreen)
        await until(pilot, lambda: screen.view is not None, "the item read")

    assert snap_compare(dashboard(), terminal_size=size, run_before=open_item)


@pytest.mark.parametrize("size", SIZES)
def test_confirm_retry_all(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(dashboard(), terminal_size=size, press=["R"])


@pytest.mark.parametrize("size", SIZES)
def test_runs_screen(snap_compare: Any, size: tuple[int, int]) -> None:
    async def open_runs(pilot: Pilot[Any]) -> None:
        await pilot.press("u")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(dashboard(), terminal_size=size, run_before=open_runs)


@pytest.mark.parametrize("size", SIZES)
def test_watch_screen(snap_compare: Any, size: tuple[int, int]) -> None:
    app, feed = watch_app(FakeSource(Snapshot(Run(), list(FAILED), list(RUNNING))))

    async def first_poll(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: feed.polls >= 1, "a first poll")

    assert snap_compare(app, terminal_size=size, run_before=first_poll)


@pytest.mark.parametrize("size", SIZES)
def test_help_screen(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(dashboard(), terminal_size=size, press=["question_mark"])


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC for the test (the event log shows wall-clock times)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("size", SIZES)
def test_event_log(snap_compare: Any, size: tuple[int, int], utc: None) -> None:
    assert snap_compare(dashboard(), terminal_size=size, press=["p", "l"])


@pytest.mark.parametrize("size", SIZES)
def test_one_category_of_failures(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(dashboard(), terminal_size=size, press=["c"])


@pytest.mark.parametrize("size", SIZES)
def test_finished_run(snap_compare: Any, size: tuple[int, int]) -> None:
    app = DashboardApp(demo_runner(script=finished_script()), clock=frozen_clock)
    assert snap_compare(app, terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_controls_modal(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(dashboard(), terminal_size=size, press=["L"])


@pytest.mark.parametrize("size", SIZES)
def test_budget_reached(snap_compare: Any, size: tuple[int, int]) -> None:
    runner = demo_runner(max_cost=0.0125)
    runner.budget_status = "budget $0.0125 reached: $0.0126 spent"
    app = DashboardApp(runner, clock=frozen_clock)  # with the toast saying why it stopped
    assert snap_compare(app, terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_learned_limits(snap_compare: Any, size: tuple[int, int]) -> None:
    app = DashboardApp(demo_runner(script=learned_limits_script()), clock=frozen_clock)
    assert snap_compare(app, terminal_size=size)
