"""Sorting the failed table and the runs table: a key steps through the columns, the same
header clicked twice reverses, and live updates keep the order."""

from __future__ import annotations

from textual.widgets import DataTable, Static

from abl_tui.app import DashboardApp
from abl_tui.screens import RunsScreen
from abl_tui.widgets import FailedTable
from app_support import NOW, RUN_ID, demo_runner, demo_runs, frozen_clock, settle


def order(app: DashboardApp) -> list[str]:
    return app.main.query_one(FailedTable).keys


async def test_s_sorts_the_failed_table_and_S_reverses_it() -> None:
    app = DashboardApp(demo_runner(), clock=frozen_clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        arrival = ["p0006", "p0018", "p0030", "p0042", "p0054"]
        assert order(app) == arrival
        await pilot.press("s", "s", "s")  # id, state, category
        await pilot.pause()
        assert app.main.failed.sort_column == "category"
        assert order(app) == ["p0006", "p0054", "p0030", "p0018", "p0042"]
        assert "by category ↓" in app.main.failed.border_title
        await pilot.press("s")  # calls
        await pilot.pause()
        assert order(app) == ["p0006", "p0042", "p0018", "p0030", "p0054"]
        await pilot.press("S")
        await pilot.pause()
        assert order(app) == ["p0054", "p0030", "p0018", "p0042", "p0006"]
        assert "by calls ↑" in app.main.failed.border_title
        # a new failure lands in its sorted place, not at the end
        event = {
            "item_id": "p0099",
            "worker_id": 0,
            "error": "x",
            "error_category": "timeout",
            "attempts": 5,
        }
        app.feed.runner.buffer.push([("item_failed", event, NOW)])  # type: ignore[union-attr]
        await settle(pilot)
        assert order(app)[:2] == ["p0054", "p0099"]


async def test_clicking_a_header_sorts_by_it_and_again_reverses() -> None:
    app = DashboardApp(demo_runner(), clock=frozen_clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = app.main.query_one(FailedTable)
        table.post_message(
            DataTable.HeaderSelected(
                table, table.columns["message"].key, 4, table.columns["message"].label
            )
        )
        await pilot.pause()
        assert app.main.failed.sort_column == "message" and not app.main.failed.sort_reverse
        messages = [table.row(key).message for key in order(app)]  # type: ignore[union-attr]
        assert messages == sorted(messages)
        table.post_message(
            DataTable.HeaderSelected(
                table, table.columns["message"].key, 4, table.columns["message"].label
            )
        )
        await pilot.pause()
        assert app.main.failed.sort_reverse


async def test_the_runs_table_sorts_by_any_column() -> None:
    app = DashboardApp(demo_runner(runs=demo_runs()), clock=frozen_clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("u")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, RunsScreen)

        def ids() -> list[str]:
            table = screen.query_one(DataTable)
            return [str(row.key.value) for row in table.ordered_rows]

        assert ids() == [RUN_ID, "r-20251123-aaaa01", "r-20251122-bbbb02"]  # newest first
        screen.sort_by("failed")
        await pilot.pause()
        assert ids() == ["r-20251122-bbbb02", RUN_ID, "r-20251123-aaaa01"]
        screen.sort_by("failed")  # again: reversed
        await pilot.pause()
        assert ids() == ["r-20251123-aaaa01", RUN_ID, "r-20251122-bbbb02"]
        assert "by failed ↑" in str(screen.query_one("#runs-title", Static).render())
        await pilot.press("s")  # the next column after "failed": took
        await pilot.pause()
        assert screen.sort_column == "took"
        screen.sort_by("cost")
        await pilot.pause()
        assert ids() == ["r-20251122-bbbb02", "r-20251123-aaaa01", RUN_ID]  # unknown last
