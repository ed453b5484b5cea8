"""Pilot tests of every dashboard action: what reached the runner, and what the screen shows.

A FakeRunner (tests/app_support.py) stands in for the engine thread and records the
commands; the clock is frozen so what is shown is deterministic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.command import CommandList
from textual.widgets import Button, Input, Static

from abl_tui.app import DashboardApp
from abl_tui.screens import ConfirmScreen, ItemDetailScreen, MainScreen, RunsScreen
from abl_tui.widgets import FailedTable
from app_support import (
    FAILURES,
    RUN_ID,
    FakeRunner,
    demo_runner,
    demo_runs,
    finished_script,
    frozen_clock,
    palette,
    settle,
    until,
)

FAILED_IDS = [failure[0] for failure in FAILURES]


def make_app(runner: FakeRunner, **kwargs: Any) -> DashboardApp:
    """The app on a fake runner and the frozen clock."""
    return DashboardApp(runner, clock=frozen_clock, **kwargs)


def text(app: DashboardApp, selector: str) -> str:
    """The plain text a Static on the main screen shows."""
    return str(app.main.query_one(selector, Static).render())


def table(app: DashboardApp) -> FailedTable:
    """The failed-items table."""
    return app.main.query_one(FailedTable)


def footer_actions(app: DashboardApp) -> set[str]:
    """Actions the footer offers now (bindings check_action did not hide)."""
    return {active.binding.action for active in app.screen.active_bindings.values()}


# ---------------------------------------------------------------------- start and display


async def test_starts_the_runner_and_shows_the_run() -> None:
    runner = demo_runner()
    app = make_app(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert runner.names()[0] == "start"
        assert "Product catalogue (demo)" in text(app, "#run-title")
        assert RUN_ID in text(app, "#run-title")
        assert "cooldown" in text(app, "#run-badge")
        assert text(app, "#progress-text").startswith("60/120 50.0%")
        assert "elapsed 1m 05s" in text(app, "#progress-text")
        assert "ok 55  failed 5  retries 5  busy 3/4" in text(app, "#counts")
        assert "429s 3" in text(app, "#limits-inline")
        assert "cooldown 12.5s" in text(app, "#limits-inline")
        assert "rpm 60/600" in text(app, "#limits-inline")  # sent in the last minute / limit
        assert "in 13.2k" in text(app, "#token-counts")
        assert "cost $0.0126" in text(app, "#cost")
        assert "→ $0.0252" in text(app, "#cost")
        assert table(app).keys == FAILED_IDS
        workers = app.main.query_one("#workers")
        assert workers.border_title == "Workers 3/4 busy"
        # narrow: the rate-limit panel folds into the counts strip ...
        assert not app.main.query_one("#limits").display
        assert app.main.query_one("#limits-inline").display
        # ... wide: it is a panel of its own, in the cooldown colour
        await pilot.resize_terminal(120, 40)
        await settle(pilot)
        limits = app.main.query_one("#limits")
        assert limits.display and limits.has_class("-cooldown")
        assert "cooldown 12.5s" in str(limits.render())
        assert "429s 3 (streak 2)" in str(limits.render())
        assert not app.main.query_one("#limits-inline").display


async def test_an_already_started_runner_is_not_started_again() -> None:
    runner = demo_runner()
    runner.start()
    app = make_app(runner, started=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert runner.names() == ["start"]
        assert table(app).keys == FAILED_IDS


async def test_state_is_seeded_only_once_the_runner_is_ready() -> None:
    runner = demo_runner(ready_on_start=False)
    app = make_app(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert "starting" in text(app, "#run-badge")
        assert table(app).keys == []
        runner.ready.set()
        await settle(pilot)
        assert table(app).keys == FAILED_IDS


async def test_unknown_cost_reads_unknown() -> None:
    from app_support import demo_script

    runner = demo_runner(script=demo_script(cost=False))
    app = make_app(runner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert "cost unknown" in text(app, "#cost")
        assert "→ unknown" in text(app, "#cost")


# ---------------------------------------------------------------------- retry


async def test_r_retries_the_highlighted_item() -> None:
    runner = demo_runner()
    app = make_app(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("down", "r")
        await settle(pilot)
        assert ("retry_items", [FAILED_IDS[1]]) in runner.commands
        assert FAILED_IDS[1] not in table(app).keys
        assert "Failed 4 · retried 1" in str(app.main.failed.border_title)
        await pilot.press("f")  # the retried view shows it, queued
        await settle(pilot)
        assert table(app).keys == [FAILED_IDS[1]]
        row = table(app).row(FAILED_IDS[1])
        assert row is not None and row.state == "queued"


async def test_retried_item_follows_its_events() -> None:
    runner = demo_runner()
    app = make_app(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("r")
        item = FAILED_IDS[0]
        runner.buffer.push(
            [
                ("item_started", {"item_id": item, "worker_id": 3, "attempt": 2}, 0.0),
                ("item_completed", {"item_id": item, "worker_id": 3, "tokens": {}}, 0.0),
            ]
        )
        app.main.failed.status_filter = "retried"
        await settle(pilot)
        row = table(app).row(item)
        assert row is not None and row.state == "ok"
        assert app.model.retries.unsettled == 0


async def test_retry_all_asks_with_the_count_and_y_confirms() -> None:
    runner = demo_runner()
    app = make_app(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("R")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        question = str(app.screen.query_one("#confirm-question", Static).render())
        assert question == "Retry all 5 failed items?"
        await pilot.press("y")
        await settle(pilot)
        assert isinstance(app.screen, MainScreen)
        assert runner.commands.count(("retry_all_failed",)) == 1
        # the table turns to the retried view, where the items' new outcomes arrive
        assert app.main.failed.status_filter == "retried"
        assert table(app).keys == FAILED_IDS
        assert {table(app).row(key).state for key in FAILED_IDS} == {"queued"}  # type: ignore[union-attr]
        assert app.model.state.failed == 0


async def test_retry_all_n_and_escape_cancel() -> None:
    runner = demo_runner()
    app = make_app(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for key in ("n", "escape"):
            await pilot.press("R")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, MainScreen)
        assert "retry_all_failed" not in runner.names()
        assert table(app).keys == FAILED_IDS


async def test_retry_buttons_on_the_failed_panel() -> None:
    runner = demo_runner()
    app = make_app(runner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.click("#retry-one")
        await settle(pilot)
        assert ("retry_items", [FAILED_IDS[0]]) in runner.commands
        await pilot.click("#retry-all")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.click("#confirm-yes")
        await settle(pilot)
        assert ("retry_all_failed",) in runner.commands


async def test_retry_bindings_follow_what_is_possible() -> None:
    runner = demo_runner()
    app = make_app(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert {"retry_selected", "retry_all", "pause"} <= footer_actions(app)
        await pilot.press("R", "y")
        await settle(pilot)
        actions = footer_actions(app)
        assert "retry_all" not in actions and "retry_selected" not in actions
        assert app.main.query_one("#retry-all", Button).disabled
        await pilot.press("r", "R")  # nothing to retry: no command, no modal
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        assert runner.names().count("retry_all_failed") == 1
        assert "retry_items" not in runner.names()


# ---------------------------------------------------------------------- item detail


async def test_enter_opens_the_item_detail_with_its_history() -> None:
    runner = demo_runner()
    app = make_app(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("down", "enter")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ItemDetailScreen)
        await app.workers.wait_for_complete()
        await pilot.pause()
        item = FAILED_IDS[1]
        assert ("fetch_item", item) in runner.commands
        assert item in str(screen.query_one("#detail-title", Static).render())
        assert "Bluepeak" in str(screen.query_one("#detail-prompt", Static).render())
        assert "timed out" in str(screen.query_one("#detail-error", Static).render())
        assert screen.query_one("#detail-attempts").row_count == FAILURES[1][3]
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)


async def test_detail_retry_button_sends_the_item_again() -> None:
    runner = demo_runner()
    app = make_app(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.open_item(FAILED_IDS[2])
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        button = app.screen.query_one("#detail-retry", Button)
        assert not button.disabled
        await pilot.click("#detail-retry")
        await pilot.pause()
        assert ("retry_items", [FAILED_IDS[2]]) in runner.commands
        assert button.disabled
        await pilot.press("r")  # sent already: not twice
        assert runner.names().count("retry_items") == 1


async def test_detail_of_a_succeeded_or_unknown_item_offers_no_retry() -> None:
    runner = demo_runner()
    app = make_app(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.open_item("p0001")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "electronics" in str(app.screen.query_one("#detail-output", Static).render())
        assert app.screen.query_one("#detail-retry", Button).disabled
        await pilot.press("r")
        assert "retry_items" not in runner.names()
        await pilot.press("escape")
        app.open_item("nope")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        title = str(app.screen.query_one("#detail-title", Static).render())
        assert "not found" in title


# ---------------------------------------------------------------------- pause


async def test_p_pauses_and_resumes_dispatch() -> None:
    runner = demo_runner()
    app = make_app(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        assert runner.names()[-1] == "pause"
        assert "resume" in footer_actions(app) and "pause" not in footer_actions(app)
        assert "cooldown" in text(app, "#run-badge")  # a cooldown outranks a pause
        runner.buffer.push([("cooldown_ended", {"duration": 15.0}, 0.0)])
        await settle(pilot)
        assert "paused" in text(app, "#run-badge")
        await pilot.press("p")
        await settle(pilot)
        assert runner.names()[-1] == "resume"
        assert "pause" in footer_actions(app)


# ---------------------------------------------------------------------- quit


async def test_q_while_running_asks_then_cancels() -> None:
    runner = demo_runner()
    app = make_app(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        detail = str(app.screen.query_one("#confirm-detail", Static).render())
        assert f"abl-tui resume {RUN_ID}" in detail
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        assert "cancel" not in runner.names()
        await pilot.press("ctrl+q")  # Textual's quit key asks the same question
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("q", "y")
        await pilot.pause()
        assert runner.names()[-1] == "cancel"
        assert "stop" not in runner.names()
    assert app.return_code == 0


async def test_q_when_finished_quits_at_once() -> None:
    runner = demo_runner(script=finished_script())
    app = make_app(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert "done with failures" in text(app, "#run-badge")
        # ended with items left: no ETA to tell (never "eta 0s")
        assert text(app, "#progress-text").endswith("eta --")
        await pilot.press("q")
        await pilot.pause()
        assert runner.names()[-1] == "stop"
        assert "cancel" not in runner.names()
    assert not app.is_running


async def test_pending_retries_keep_the_run_going() -> None:
    runner = demo_runner(script=finished_script())
    app = make_app(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot)
        assert app.model.active
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")


async def test_a_runner_that_ends_with_an_error_is_reported() -> None:
    runner = demo_runner(script=[])
    app = make_app(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        runner.outcome.error = "StoreError: no run 'x'"
        runner.done.set()
        await settle(pilot)
        assert app.model.ended
        assert any("no run" in str(note.message) for note in app._notifications)
        assert "retry_all" not in footer_actions(app)
        await pilot.press("q")  # nothing is running: no question
        await pilot.pause()
    assert not app.is_running


# ---------------------------------------------------------------------- filter and search


async def test_slash_searches_by_id_or_message() -> None:
    app = make_app(demo_runner())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("slash")
        await pilot.pause()
        search = app.main.query_one("#search", Input)
        assert search.display and search.has_focus
        await pilot.press(*"timed")
        await pilot.pause()
        assert table(app).keys == [FAILED_IDS[1]]
        assert "1 match “timed”" in str(app.main.failed.border_title)
        await pilot.press("enter")  # back to the table, the filter stays
        await pilot.pause()
        assert table(app).has_focus and table(app).keys == [FAILED_IDS[1]]
        await pilot.press("escape")
        await pilot.pause()
        assert not search.display
        assert table(app).keys == FAILED_IDS
        await pilot.press("slash", *FAILED_IDS[3])
        await pilot.pause()
        assert table(app).keys == [FAILED_IDS[3]]


async def test_f_cycles_the_status_filter() -> None:
    app = make_app(demo_runner())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("down", "r")
        await settle(pilot)
        seen = []
        for _ in range(3):
            await pilot.press("f")
            await pilot.pause()
            seen.append((app.main.failed.status_filter, table(app).keys))
        rest = [key for key in FAILED_IDS if key != FAILED_IDS[1]]
        assert seen == [
            ("retried", [FAILED_IDS[1]]),
            ("all", [*rest, FAILED_IDS[1]]),
            ("failed", rest),
        ]


# ---------------------------------------------------------------------- keyed diff


async def test_table_diff_keeps_the_highlighted_row_and_touches_only_changes() -> None:
    runner = demo_runner()
    app = make_app(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        failed = table(app)
        await pilot.press("down", "down", "down")
        assert failed.highlighted_key == FAILED_IDS[3]
        updates: list[tuple[str, str]] = []
        original = failed.update_cell

        def spy(row_key: Any, column_key: Any, value: Any, **kwargs: Any) -> None:
            updates.append((str(row_key), str(column_key)))
            original(row_key, column_key, value, **kwargs)

        failed.update_cell = spy  # type: ignore[method-assign]
        runner.buffer.push(
            [
                # a row above the cursor goes away (the item succeeded on its own retry) ...
                ("item_completed", {"item_id": FAILED_IDS[0], "worker_id": 0}, 0.0),
                # ... one changes its message and attempts, and a new one arrives at the end
                (
                    "item_failed",
                    {
                        "item_id": FAILED_IDS[2],
                        "worker_id": 1,
                        "error": "503 again",
                        "error_category": "server_error",
                        "attempts": 5,
                    },
                    0.0,
                ),
                (
                    "item_failed",
                    {"item_id": "p0099", "worker_id": 2, "error": "boom", "attempts": 1},
                    0.0,
                ),
            ]
        )
        await settle(pilot)
        assert failed.highlighted_key == FAILED_IDS[3]
        assert failed.keys == [*FAILED_IDS[1:], "p0099"]
        # RunState moves a re-failed item to the end; the table keeps rows by key, in place
        assert sorted(updates) == [(FAILED_IDS[2], "attempts"), (FAILED_IDS[2], "message")]


async def test_large_removals_rebuild_and_keep_the_cursor() -> None:
    events = [
        (
            "item_failed",
            {"item_id": f"x{index:04d}", "worker_id": 0, "error": "e", "attempts": 1},
            0.0,
        )
        for index in range(300)
    ]
    runner = demo_runner(script=events)
    app = make_app(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        failed = table(app)
        failed.move_cursor(row=250)
        keep = failed.highlighted_key
        runner.buffer.push(
            [
                ("item_completed", {"item_id": f"x{index:04d}", "worker_id": 0}, 0.0)
                for index in range(200)
            ]
        )
        await settle(pilot)
        assert failed.row_count == 100
        assert failed.highlighted_key == keep


# ---------------------------------------------------------------------- palette


async def test_palette_offers_what_can_be_done_now() -> None:
    runner = demo_runner(runs=demo_runs())
    app = make_app(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        names = list(palette(app, app.main))
        assert f"Retry {FAILED_IDS[0]}" in names
        assert "Retry all failed (5)" in names
        assert "Pause dispatch" in names
        assert f"Open item {FAILED_IDS[0]}" in names
        assert "Search failed items" in names and "Runs" in names
        assert "Show retried items" in names and "Show failed items" not in names
        pause = palette(app, app.main)
        pause["Pause dispatch"]()
        names = list(palette(app, app.main))
        assert "Resume dispatch" in names and "Pause dispatch" not in names
        assert runner.names()[-1] == "pause"
        runner.done.set()  # the engine thread is gone: nothing to send commands to
        await settle(pilot)
        names = list(palette(app, app.main))
        assert not any(name.startswith(("Retry", "Pause", "Resume")) for name in names)


async def test_palette_runs_a_command() -> None:
    runner = demo_runner()
    app = make_app(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"retry all")
        palette_list = app.screen.query_one(CommandList)
        await until(pilot, lambda: palette_list.option_count > 0, "the palette's matches")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await pilot.pause()
        assert ("retry_all_failed",) in runner.commands


# ---------------------------------------------------------------------- runs screen


class Factory:
    """Records the runners the app asks for when switching runs."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.made: list[FakeRunner] = []

    def __call__(self, *, db_path: Path, run_ref: str, retry_failed: bool) -> FakeRunner:
        self.calls.append({"db_path": db_path, "run_ref": run_ref, "retry_failed": retry_failed})
        initial = {"run_id": run_ref, "name": "switched", "total": 500, "failed_items": []}
        runner = FakeRunner(initial=initial)
        self.made.append(runner)
        return runner


async def test_runs_screen_lists_runs_and_switches_when_finished() -> None:
    runner = demo_runner(script=finished_script(), runs=demo_runs())
    factory = Factory()
    switched: list[Any] = []  # what the command line's signal handlers would stop from then on
    app = make_app(runner, runner_factory=factory, on_runner_switched=switched.append)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("u")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)
        await app.workers.wait_for_complete()
        await pilot.pause()
        runs_table = app.screen.query_one("#runs-table")
        assert runs_table.row_count == 3
        names = list(palette(app, app.screen))
        assert f"Resume run {RUN_ID}" in names and "Back to the dashboard" in names
        assert "Runs" not in names
        await pilot.press("down", "f")  # the second run has failed items: retry them
        await app.workers.wait_for_complete()
        await settle(pilot)
        assert runner.names()[-1] == "stop"
        assert factory.calls == [
            {"db_path": runner.db_path, "run_ref": "r-20251123-aaaa01", "retry_failed": True}
        ]
        assert app.feed.runner is factory.made[0]
        assert switched == [factory.made[0]]
        assert factory.made[0].names() == ["start"]
        assert isinstance(app.screen, MainScreen)
        assert "switched" in text(app, "#run-title")
        assert table(app).keys == []


async def test_switching_while_the_run_goes_asks_first() -> None:
    runner = demo_runner(runs=demo_runs())
    factory = Factory()
    app = make_app(runner, runner_factory=factory)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("u")
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("o")  # the open run itself: nothing to switch
        await pilot.pause()
        assert isinstance(app.screen, MainScreen) and factory.calls == []
        await pilot.press("u")
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("down", "down", "o")  # resume the oldest run
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert factory.calls == [] and "cancel" not in runner.names()
        await pilot.press("o", "y")
        await app.workers.wait_for_complete()
        await settle(pilot)
        assert runner.names()[-1] == "cancel"
        assert factory.calls[0]["run_ref"] == "r-20251122-bbbb02"
        assert factory.calls[0]["retry_failed"] is False
