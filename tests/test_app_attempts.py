"""The attempt inspector (``a`` on an item) and replay with an edited prompt (``e``), driven
through the real app with Pilot on the scripted runner; snapshots at 80x24 and 120x40."""

from __future__ import annotations

from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static, TextArea

from abl_tui.app import DashboardApp
from abl_tui.screens import ItemDetailScreen
from abl_tui.screens.attempts import AttemptsScreen
from abl_tui.screens.replay import ReplayScreen
from app_support import frozen_clock, inspector_runner, settle, until

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


def _text(screen: Any, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


async def _open_item(pilot: Pilot[Any], item_id: str = "p0030") -> ItemDetailScreen:
    await settle(pilot)
    app = pilot.app
    assert isinstance(app, DashboardApp)
    app.open_item(item_id)
    await until(pilot, lambda: isinstance(app.screen, ItemDetailScreen), "the item's screen")
    screen = app.screen
    assert isinstance(screen, ItemDetailScreen)
    await until(pilot, lambda: screen.record is not None, "the item read")
    return screen


async def _open_inspector(pilot: Pilot[Any]) -> AttemptsScreen:
    await _open_item(pilot)
    await pilot.press("a")
    await until(pilot, lambda: isinstance(pilot.app.screen, AttemptsScreen), "the inspector")
    screen = pilot.app.screen
    assert isinstance(screen, AttemptsScreen)
    await pilot.pause()
    return screen


async def test_the_inspector_lists_every_attempt_with_status_and_limits() -> None:
    app = DashboardApp(inspector_runner(), clock=frozen_clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _open_inspector(pilot)
        table = screen.query_one("#attempts-table", DataTable)
        rows = [[str(cell) for cell in table.get_row_at(n)] for n in range(table.row_count)]
        assert [row[:3] for row in rows] == [
            ["1", "rate_limited", "429"],
            ["2", "failed", "503"],
            ["3", "ok", "—"],
        ]
        assert rows[1][4] == "+1.70s" and rows[0][6] == "1.50s"
        # The last attempt is highlighted: a replay, with its own prompt and parameters.
        assert screen.shown is not None and screen.shown.number == 3
        assert "Classify p0030 (edited)" in _text(screen, "#attempt-prompt")
        assert "edited for this replay" in _text(screen, "#prompt-heading")
        request = _text(screen, "#attempt-request")
        assert "this replay's own" in request and "max_tokens   20" in request
        assert "the item's output" in _text(screen, "#answer-heading")
        assert _text(screen, "#attempt-answer") == "electronics"

        await pilot.press("k", "k")  # up to the 429
        assert screen.shown is not None and screen.shown.number == 1
        assert "HTTP 429" in _text(screen, "#answer-heading")
        assert "429 Rate limit reached" in _text(screen, "#attempt-error")
        limits = _text(screen, "#attempt-limits")
        assert "requests  limit 600  remaining 0  reset 1.50s" in limits
        assert "tokens    limit 90,000  remaining 88,500  reset 0.25s" in limits
        # No replay: the item's own prompt and the run's stored settings.
        assert "the run's settings" in _text(screen, "#attempt-request")
        assert "max_tokens   64" in _text(screen, "#attempt-request")
        assert "Bluepeak" in _text(screen, "#attempt-prompt")

        await pilot.press("j")
        assert "503" in _text(screen, "#answer-heading")
        assert "declared none" in _text(screen, "#attempt-limits")
        await pilot.press("escape")
        assert isinstance(app.screen, ItemDetailScreen)


async def test_replay_sends_the_edited_prompt_and_changed_options() -> None:
    runner = inspector_runner()
    app = DashboardApp(runner, clock=frozen_clock)
    async with app.run_test(size=(120, 40)) as pilot:
        detail = await _open_item(pilot)
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, ReplayScreen), "the replay modal")
        modal = app.screen
        assert isinstance(modal, ReplayScreen)
        area = modal.query_one("#replay-prompt", TextArea)
        assert area.text.startswith("Classify the product listing p0030")
        area.text = "Classify p0030, one word: Bluepeak Portable SSD 1TB"
        modal.query_one("#replay-max-tokens", Input).value = "abc"
        await pilot.press("ctrl+s")
        assert "max_tokens: a whole number" in _text(modal, "#replay-problem")
        assert not [c for c in runner.commands if c[0] == "replay"]  # nothing sent
        modal.query_one("#replay-max-tokens", Input).value = "20"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: app.screen is detail, "back on the item")
        await until(pilot, lambda: "replay" in runner.names(), "the replay sent")
        replay = next(c for c in runner.commands if c[0] == "replay")
        # temperature was left as the run's (0.2): only max_tokens differs.
        assert replay == (
            "replay",
            "p0030",
            "Classify p0030, one word: Bluepeak Portable SSD 1TB",
            {"max_tokens": 20},
        )
        assert "replay queued" in _text(detail, "#detail-title")
        assert detail.check_action("replay", ()) is None  # sent: not twice


async def test_escape_leaves_the_item_unsent() -> None:
    runner = inspector_runner()
    app = DashboardApp(runner, clock=frozen_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        detail = await _open_item(pilot)
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, ReplayScreen), "the replay modal")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is detail, "back on the item")
        assert "replay" not in runner.names()


def test_watch_mode_offers_the_inspector_but_not_replay() -> None:
    runner = inspector_runner()
    app = DashboardApp(runner, clock=frozen_clock)
    screen = ItemDetailScreen("p0030", app, read_only=True)
    assert screen.check_action("replay", ()) is False
    assert screen.can_replay() is False


@pytest.mark.parametrize("size", SIZES)
def test_inspector_snapshot(snap_compare: Any, size: tuple[int, int]) -> None:
    async def open_inspector(pilot: Pilot[Any]) -> None:
        await _open_inspector(pilot)
        await pilot.press("k", "k")

    app = DashboardApp(inspector_runner(), clock=frozen_clock)
    assert snap_compare(app, terminal_size=size, run_before=open_inspector)


@pytest.mark.parametrize("size", SIZES)
def test_replay_modal_snapshot(snap_compare: Any, size: tuple[int, int]) -> None:
    async def open_replay(pilot: Pilot[Any]) -> None:
        await _open_item(pilot)
        await pilot.press("e")
        await until(pilot, lambda: isinstance(pilot.app.screen, ReplayScreen), "the modal")
        await pilot.pause()

    app = DashboardApp(inspector_runner(), clock=frozen_clock)
    assert snap_compare(app, terminal_size=size, run_before=open_replay)
