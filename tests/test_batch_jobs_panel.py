"""The batch-jobs panel on its own: rows built from chunk records (pure), the panel in a tiny
Textual app (what it shows, what a narrow panel drops), one SVG snapshot at 80x24, and the
lines headless mode prints as batches change."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult

from abl_tui.batch_jobs_state import BATCH_EVENT, BatchJobs, job_rows, summary
from abl_tui.headless import chunk_line
from abl_tui.widgets.batch_jobs import BatchJobsPanel, batch_jobs_text
from async_batch_llm.batch_api import ChunkRecord

NOW = 1_900_000_000.0


def records() -> list[ChunkRecord]:
    """Three chunks: ended long ago, running with our deadline ahead, just planned."""
    base = ChunkRecord("abl-aaaa", "openai", "gpt-4o-mini", 500, 90_000, planned_at=NOW - 7200)
    ended = base.replace(
        state="ended",
        batch_id="batch_ended01",
        submitted_at=NOW - 7190,
        expires_at=NOW - 7190 + 86400,
        provider_status="completed",
        succeeded=498,
        failed=2,
        ended_at=NOW - 3600,
    )
    running = ChunkRecord(
        "abl-bbbb",
        "anthropic",
        "claude-haiku-4-5",
        1000,
        180_000,
        planned_at=NOW - 600,
        state="submitted",
        batch_id="msgbatch_running02",
        submitted_at=NOW - 590,
        expires_at=NOW - 590 + 86400,
        deadline_at=NOW - 590 + 3600,
        provider_status="in_progress",
        succeeded=420,
        failed=3,
    )
    planned = ChunkRecord("abl-cccc", "openai", "gpt-4o-mini", 20, 3_000, planned_at=NOW - 1)
    released = planned.replace(chunk_id="abl-dddd", state="released")
    return [ended, running, planned, released]


def test_rows_put_open_batches_first_and_count_time_left() -> None:
    rows = job_rows(records(), NOW)
    assert [row.label for row in rows] == ["msgbatch_running02", "abl-cccc", "batch_ended01"]
    running, planned, ended = rows
    assert running.status == "in_progress"
    assert (running.done, running.failed, running.total) == (420, 3, 1000)
    assert running.age == 590
    assert running.to_provider_deadline == 86400 - 590
    assert running.to_our_deadline == 3600 - 590
    assert planned.batch_id is None and planned.to_our_deadline is None
    assert ended.ended and ended.to_provider_deadline is None
    assert ended.age == 7190 - 3600  # from submission to the end, not to now


def test_a_cancelled_batch_no_longer_counts_down_to_our_deadline() -> None:
    running = records()[1].replace(state="cancelling", cancel_requested_at=NOW - 5)
    (row,) = job_rows([running], NOW)
    assert row.to_our_deadline is None and row.status == "cancelling"


def test_summary_counts_submitted_and_ended_batches() -> None:
    assert summary(records()) == "batches: 2 submitted, 1 ended, 1 being submitted"
    assert summary([]) == ""
    jobs = BatchJobs()
    jobs.apply_events([(BATCH_EVENT, {"record": records()[0]}, NOW), ("item_completed", {}, NOW)])
    assert jobs.summary() == "batches: 1 submitted, 1 ended" and jobs.version == 1


def test_narrow_text_drops_columns_instead_of_wrapping() -> None:
    rows = job_rows(records(), NOW)
    wide = batch_jobs_text(rows, 78).plain.splitlines()
    narrow = batch_jobs_text(rows, 40).plain.splitlines()
    assert "expires" in wide[0] and "ours" in wide[0] and "via" in wide[0]
    assert "ours" not in narrow[0] and "expires" not in narrow[0]
    assert all(len(line) <= 40 for line in narrow)
    assert "23h50" in wide[1] and "50m10" in wide[1]  # provider's window and our deadline


def test_headless_prints_a_line_per_change_of_state_not_per_poll() -> None:
    running = records()[1]
    assert chunk_line(running, None) == (
        "batch msgbatch_running02 (anthropic, 1000 requests): submitted"
    )
    assert chunk_line(running.replace(succeeded=421), running) is None
    ended = running.replace(state="ended", provider_status="ended", succeeded=997)
    said = chunk_line(ended, running)
    assert said == "batch msgbatch_running02: ended (ended), 997 done, 3 failed"


class PanelApp(App[None]):
    """The panel alone, fed once at mount."""

    CSS = "BatchJobsPanel { border: round $accent; height: auto; }"

    def __init__(self, shown: list[ChunkRecord]) -> None:
        super().__init__()
        self.shown = shown

    def compose(self) -> ComposeResult:
        yield BatchJobsPanel(id="batches")

    def on_mount(self) -> None:
        self.query_one(BatchJobsPanel).show(self.shown, NOW)


def panel_text(app: PanelApp) -> str:
    content = app.query_one(BatchJobsPanel).content
    assert isinstance(content, Text)
    return content.plain


async def test_the_panel_shows_each_batch_and_the_summary() -> None:
    app = PanelApp(records())
    async with app.run_test(size=(80, 12)) as pilot:
        await pilot.pause()
        panel = app.query_one(BatchJobsPanel)
        lines = panel_text(app).splitlines()
        assert panel.border_subtitle == "2 submitted, 1 ended, 1 being submitted"
        assert lines[1].startswith("msgbatch_running02")
        assert "420/3/1000" in lines[1] and "anthropic" in lines[1]
        assert lines[3].startswith("batch_ended01") and "completed" in lines[3]
        panel.show([], NOW)
        await pilot.pause()
        assert "no batch submitted yet" in panel_text(app)


async def test_a_narrow_panel_redraws_without_the_deadline_columns() -> None:
    app = PanelApp(records())
    async with app.run_test(size=(40, 12)) as pilot:
        await pilot.pause()
        lines = panel_text(app).splitlines()
        assert "ours" not in lines[0]
        assert all(len(line) <= 38 for line in lines)


def test_panel_snapshot(snap_compare: Any) -> None:
    assert snap_compare(PanelApp(records()), terminal_size=(80, 24))


async def test_the_dashboard_shows_the_panel_only_for_a_batch_api_run() -> None:
    """The live feed copies the runner's ``batch_chunks`` into the model each tick; the main
    screen shows the panel, with one line per batch, only while there are batches."""
    from abl_tui.app import DashboardApp
    from app_support import demo_runner, frozen_clock, settle

    runner = demo_runner()
    app = DashboardApp(runner, clock=frozen_clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        panel = app.main.query_one("#batches", BatchJobsPanel)
        assert not panel.display  # an online run: no panel
        chunks = {record.chunk_id: record for record in records()}
        runner.batch_chunks = chunks  # type: ignore[attr-defined]
        await settle(pilot)
        assert panel.display
        shown = str(panel.render())
        assert "batch_ended01" in shown and "msgbatch_running02" in shown
