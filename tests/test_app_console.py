"""Pilot tests of the operator's console (issue 14): help, moves, categories, copy, the
event log, Ctrl-C, the detail screen following a retry, watch mode's honest labels, and
the headless summary's retry hint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from textual.widgets import Static

from abl_tui.app import DashboardApp
from abl_tui.formatting import provider_message
from abl_tui.headless import resume_command
from abl_tui.report import retry_hint, status_line
from abl_tui.screens import ConfirmScreen, HelpScreen, ItemDetailScreen, MainScreen
from abl_tui.screens.help import help_table
from abl_tui.state import RunState
from abl_tui.watch import Snapshot
from abl_tui.widgets import FailedTable
from app_support import (
    FAILED,
    FAILURES,
    NOW,
    RUN_ID,
    RUNNING,
    FakeSource,
    Run,
    demo_runner,
    finished_script,
    frozen_clock,
    settle,
    until,
    watch_app,
)

FAILED_IDS = [failure[0] for failure in FAILURES]


def make_app(**overrides: Any) -> DashboardApp:
    """The dashboard on the scripted demo run and the frozen clock."""
    return DashboardApp(demo_runner(**overrides), clock=frozen_clock)


def text(app: DashboardApp, selector: str) -> str:
    """The plain text a Static on the main screen shows."""
    return str(app.main.query_one(selector, Static).render())


def table(app: DashboardApp) -> FailedTable:
    """The failed-items table."""
    return app.main.query_one(FailedTable)


# ---------------------------------------------------------------------- the provider's words


def test_the_failed_table_shows_the_providers_own_words() -> None:
    litellm = (
        "ServiceUnavailableError: litellm.ServiceUnavailableError: ServiceUnavailableError: "
        "OpenAIException - The server is overloaded, try again later"
    )
    assert provider_message(litellm) == "The server is overloaded, try again later"
    native = "ProviderStatusError: openai returned HTTP 400: invalid request: bad max_tokens"
    assert provider_message(native) == "invalid request: bad max_tokens"
    body = 'BadRequestError: AnthropicException - {"error": {"message": "prompt is too long"}}'
    assert provider_message(body) == "prompt is too long"
    assert provider_message("attempt timed out after 20.0s") == "attempt timed out after 20.0s"


async def test_message_column_holds_the_provider_message() -> None:
    script = [
        (
            "item_failed",
            {
                "item_id": "x1",
                "worker_id": 0,
                "error": "ServiceUnavailableError: litellm.ServiceUnavailableError: "
                "OpenAIException - The server is overloaded",
                "error_category": "malformed_response",
                "attempts": 3,
            },
            NOW,
        )
    ]
    app = make_app(script=script)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        cells = [str(cell) for cell in table(app).get_row("x1")]
        assert cells[2] == "malformed_response"  # the category column fits its value
        assert cells[4] == "The server is overloaded"
        widths = {str(key.value): column.width for key, column in table(app).columns.items()}
        assert widths["category"] == len("malformed_response")


# ---------------------------------------------------------------------- keys


async def test_question_mark_opens_help_and_escape_closes_it() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert app.screen.query_one("#help-keys", Static).display
        console = Console(width=100, record=True)
        console.print(help_table())
        keys = console.export_text()
        assert "ctrl+c" in keys and "retry every failed item shown" in keys
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)


async def test_j_k_g_G_move_the_cursor() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        failed = table(app)
        await pilot.press("j", "j")
        assert failed.highlighted_key == FAILED_IDS[2]
        await pilot.press("k")
        assert failed.highlighted_key == FAILED_IDS[1]
        await pilot.press("G")
        assert failed.highlighted_key == FAILED_IDS[-1]
        await pilot.press("g")
        assert failed.highlighted_key == FAILED_IDS[0]


async def test_c_shows_one_category_and_R_retries_only_that_group() -> None:
    events = [
        (
            "item_failed",
            {"item_id": f"t{n}", "worker_id": 0, "error": "slow", "error_category": "timeout"},
            NOW,
        )
        for n in range(3)
    ]
    runner = demo_runner()
    runner.script = runner.script + events
    app = DashboardApp(runner, clock=frozen_clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert "timeout 4" in str(app.main.failed.border_title)  # the biggest group first
        await pilot.press("c")
        await settle(pilot)
        assert app.main.failed.category_filter == "timeout"
        assert table(app).keys == [FAILED_IDS[1], "t0", "t1", "t2"]
        await pilot.press("R")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        question = str(app.screen.query_one("#confirm-question", Static).render())
        assert question == "Retry the 4 failed items in timeout?"
        await pilot.press("y")
        await settle(pilot)
        assert ("retry_items", [FAILED_IDS[1], "t0", "t1", "t2"]) in runner.commands
        assert "retry_all_failed" not in runner.names()
        assert app.model.state.failed == 4  # the other categories are still failed


async def test_y_copies_the_highlighted_items_full_error() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("j", "y")
        await pilot.pause()
        assert app.clipboard == FAILURES[1][2]


async def test_l_shows_the_event_log_with_cooldowns_and_operator_actions() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        await pilot.press("l")
        await settle(pilot)
        assert app.main.query_one("#log").display and not app.main.query_one("#failed").display
        log = str(app.main.query_one("#log-body", Static).render())
        assert "round started with 4 workers" in log
        assert "429: every worker waits 15s" in log
        assert log.rstrip().endswith("paused: no new attempts start")
        await pilot.press("l")
        await settle(pilot)
        assert app.main.query_one("#failed").display and table(app).has_focus


# ---------------------------------------------------------------------- ctrl-c and the end


async def test_ctrl_c_asks_like_q_and_a_second_ctrl_c_interrupts() -> None:
    runner = demo_runner()
    app = DashboardApp(runner, clock=frozen_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert not app._notifications  # never Textual's "press ctrl+q" toast
        await pilot.press("n")
        await pilot.pause()
        assert "cancel" not in runner.names()
        await pilot.press("ctrl+c")
        await pilot.pause()
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert runner.names()[-1] == "cancel"
    assert not app.is_running


async def test_a_completed_run_cannot_be_paused_and_says_the_same_busy_everywhere() -> None:
    runner = demo_runner(script=finished_script())
    app = DashboardApp(runner, clock=frozen_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        actions = {active.binding.action for active in app.screen.active_bindings.values()}
        assert "pause" not in actions
        await pilot.press("p")
        await pilot.pause()
        assert "pause" not in runner.names()
        assert "busy 0/4" in text(app, "#counts")
        assert app.main.query_one("#workers").border_title == "Workers 0/4 busy"
        assert text(app, "#items-rate").endswith("avg")  # no longer decaying


# ---------------------------------------------------------------------- item detail


async def test_detail_shows_context_error_first_and_steps_through_items() -> None:
    runner = demo_runner()
    runner.items[FAILED_IDS[0]].context = {"row": 6, "sku": "SSD-1TB"}  # type: ignore[attr-defined]
    app = DashboardApp(runner, clock=frozen_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ItemDetailScreen)
        headings = [str(node.render()) for node in screen.query(".detail-heading")]
        assert headings[0] == "Error"  # above the fold at 80x24
        assert "SSD-1TB" in str(screen.query_one("#detail-context", Static).render())
        await pilot.press("right_square_bracket")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert screen.item_id == FAILED_IDS[1]
        assert "timed out" in str(screen.query_one("#detail-error", Static).render())
        await pilot.press("left_square_bracket", "left_square_bracket")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert screen.item_id == FAILED_IDS[0]  # no item before the first: it stays


async def test_detail_follows_its_retry_and_says_when_r_is_pressed_twice() -> None:
    runner = demo_runner()
    app = DashboardApp(runner, clock=frozen_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        item = FAILED_IDS[2]
        app.open_item(item)
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ItemDetailScreen)
        title = screen.query_one("#detail-title", Static)
        assert "4 calls" in str(title.render())
        await pilot.press("r")
        await pilot.pause()
        assert "retry queued" in str(title.render())
        await pilot.press("r")
        await pilot.pause()
        assert runner.names().count("retry_items") == 1
        assert any("sent again already" in str(note.message) for note in app._notifications)
        runner.items[item].status = "succeeded"  # what the store holds after the retry
        runner.items[item].error = None
        runner.buffer.push(
            [
                ("item_started", {"item_id": item, "worker_id": 3, "attempt": 1}, NOW),
                ("item_completed", {"item_id": item, "worker_id": 3, "tokens": {}}, NOW),
            ]
        )
        app.tick()
        screen.follow()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "succeeded" in str(title.render())
        assert runner.names().count("fetch_item") == 2  # read again once it had an outcome


async def test_detail_explains_calls_beyond_max_attempts() -> None:
    runner = demo_runner()
    record = runner.items[FAILED_IDS[4]]
    record.history[0]["outcome"] = "rate_limited"  # type: ignore[index]
    app = DashboardApp(runner, clock=frozen_clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.open_item(FAILED_IDS[4])
        await app.workers.wait_for_complete()
        await pilot.pause()
        title = str(app.screen.query_one("#detail-title", Static).render())
        assert "6 calls: 5 tries + 1 rate-limited (429s do not use up max_attempts)" in title


# ---------------------------------------------------------------------- watch mode


async def test_watch_labels_an_interrupted_run_and_counts_workers_from_its_settings() -> None:
    settings = {"model": "simulated/demo", "workers": 24}
    run = Run(status="interrupted", finished_at=NOW - 5.0, settings=settings)
    app, feed = watch_app(FakeSource(Snapshot(run, list(FAILED), [])))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: feed.polls >= 1, "a first poll")
        await pilot.pause()
        assert "interrupted" in text(app, "#run-badge")
        assert "done with failures" not in text(app, "#run-badge")
        assert text(app, "#progress-text").endswith("eta --")
        assert "busy 0/24" in text(app, "#counts")


async def test_watch_busy_is_items_under_way_against_the_configured_workers() -> None:
    settings = {"model": "simulated/demo", "workers": 24}
    app, feed = watch_app(FakeSource(Snapshot(Run(settings=settings), list(FAILED), list(RUNNING))))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: feed.polls >= 1, "a first poll")
        await pilot.pause()
        assert "busy 2/24" in text(app, "#counts")
        assert app.main.query_one("#workers").border_title == "Workers 2/24 busy"


# ---------------------------------------------------------------------- headless


def test_headless_lines_and_summary_tell_eta_and_how_to_retry(tmp_path: Path) -> None:
    state = RunState(run_id=RUN_ID, total=20, started_at=NOW - 10)
    for index in range(14):
        state.apply("item_failed", {"item_id": f"f{index:02d}", "worker_id": 0}, NOW - 5)
    line = status_line(state, NOW)
    assert "elapsed 10s" in line and "eta " in line
    hint = retry_hint(state, resume_command(RUN_ID, tmp_path / "runs.db"))
    first, second = hint.splitlines()
    assert first.startswith("failed: f00, f01") and first.endswith("and 4 more")
    assert second == (
        f"retry them: abl-tui resume {RUN_ID} --db {tmp_path / 'runs.db'} --retry-failed"
    )
    assert retry_hint(RunState(), "abl-tui resume x") == ""


def test_resume_command_leaves_out_the_default_store(monkeypatch: Any, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ABL_DB", raising=False)
    assert resume_command("r1", Path("abl-runs.db")) == "abl-tui resume r1"
