"""Watch mode: snapshots of a stored run folded into the model, read-only."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from textual.widgets import Static

from abl_tui.app import DashboardApp
from abl_tui.model import RunModel
from abl_tui.screens import ItemDetailScreen, MainScreen
from abl_tui.watch import Snapshot, StoreSource, WatchFeed, apply_snapshot
from abl_tui.widgets import FailedTable
from app_support import (
    FAILED,
    NOW,
    RUNNING,
    FakeSource,
    Run,
    frozen_clock,
    palette,
    until,
    watch_app,
)


def test_apply_snapshot_builds_the_state_and_rates_from_deltas() -> None:
    model = RunModel()
    apply_snapshot(model, Snapshot(Run(), list(FAILED), list(RUNNING)), NOW - 1)
    state = model.state
    assert model.seeded and model.active
    assert (state.total, state.succeeded, state.failed) == (120, 40, 2)
    assert state.model == "simulated/demo"
    assert list(state.failed_items) == ["p0006", "p0018"]
    assert [w.item_id for w in state.workers.values()] == ["p0043", "p0044"]
    assert state.workers[1].attempt == 2 and state.workers[1].since == NOW - 3.0
    assert state.elapsed(NOW) == 80.0
    later = Run(succeeded=50, input_tokens=9_900, output_tokens=300)
    apply_snapshot(model, Snapshot(later, list(FAILED), []), NOW + 1)
    assert state.completions.series(NOW + 2, 3) == [0.0, 0.0, 10.0]
    assert state.tokens.series(NOW + 2, 1) == [1_160.0]
    assert state.projected_cost() is not None  # known once this session saw items finish
    assert state.workers == {}
    apply_snapshot(model, Snapshot(Run(status="completed", finished_at=NOW), [], []), NOW)
    assert not model.active and state.finished_at == NOW


async def test_watch_is_read_only_and_follows_the_source() -> None:
    source = FakeSource(Snapshot(Run(), list(FAILED), list(RUNNING)))
    app, feed = watch_app(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: feed.polls >= 1, "a first poll")
        await pilot.pause()
        main = app.main
        assert "watching" in str(main.query_one("#watch-badge", Static).render())
        assert "running" in str(main.query_one("#run-badge", Static).render())
        assert main.query_one(FailedTable).keys == ["p0006", "p0018"]
        assert not main.query("#retry-one") and not main.query("#retry-all")
        actions = {active.binding.action for active in app.screen.active_bindings.values()}
        assert not actions & {"retry_selected", "retry_all", "pause", "resume", "runs"}
        names = list(palette(app, main))
        assert not any(name.startswith(("Retry", "Pause", "Resume", "Runs")) for name in names)
        await pilot.press("r", "R", "p", "u")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        source.current = Snapshot(Run(succeeded=42, failed=1), [FAILED[1]], [])
        polls = feed.polls
        await until(pilot, lambda: feed.polls > polls, "another poll")
        await pilot.pause()
        assert main.query_one(FailedTable).keys == ["p0018"]
        assert "43/120" in str(main.query_one("#progress-text", Static).render())
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ItemDetailScreen)
        detail = app.screen
        await until(pilot, lambda: detail.view is not None, "the item read from the source")
        assert not detail.query("#detail-retry")
        assert "timed out" in str(detail.query_one("#detail-error", Static).render())
        await pilot.press("escape", "q")  # nothing to stop: quits at once
        await pilot.pause()
    assert source.closed


async def test_watch_of_a_missing_run_exits_with_status_2(tmp_path: Path) -> None:
    feed = WatchFeed(StoreSource(tmp_path / "none.db", "latest"))
    app = DashboardApp(feed, clock=frozen_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: not app.is_running, "the app to exit")
    assert app.return_code == 2


async def test_watch_reads_a_real_store(tmp_path: Path) -> None:
    """A run written by the real runner (dry run: no provider) is followed from the file."""
    from abl_tui.batchfile import BatchSpec
    from abl_tui.runner import Runner, RunPlan

    items = tmp_path / "items.jsonl"
    items.write_text("".join(f'{{"id": "i{n}", "prompt": "p {n}"}}\n' for n in range(30)))
    spec = BatchSpec(items=str(items), model="simulated/fast", workers=4, dry_run=True)
    runner = Runner(RunPlan(db_path=tmp_path / "runs.db", settings=spec, items_path=items))
    runner.start()
    await asyncio.to_thread(runner.join, 60)
    assert runner.outcome.status == "completed"
    feed = WatchFeed(StoreSource(tmp_path / "runs.db", "latest"), poll_seconds=0.05)
    app = DashboardApp(feed)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: feed.polls >= 1, "a first poll")
        await pilot.pause()
        progress = str(app.main.query_one("#progress-text", Static).render())
        assert progress.startswith("30/30 100.0%")
        assert "completed" in str(app.main.query_one("#run-badge", Static).render())


async def test_watch_counts_retries_and_429s_from_the_attempt_history(
    tmp_path: Path, fast_config: Any
) -> None:
    """Watch mode has no engine events: retries and 429s come from the stored attempts."""
    from async_batch_llm import LLMWorkItem, ParallelBatchProcessor
    from async_batch_llm.store import RunStore
    from async_batch_llm.testing.fake import FakeStrategy

    store = await RunStore.open(tmp_path / "runs.db")
    run_id = await store.create_run(name="t")
    await store.ingest(run_id, [(f"i{n}", f"p{n}", None) for n in range(4)])
    strategy = FakeStrategy(
        script={"p0": ["server_error", "ok"], "p1": ["rate_limit:0.01", "server_error", "ok"]}
    )
    writer = store.observer(run_id)
    processor: Any = ParallelBatchProcessor(config=fast_config(), observers=[writer])
    async for item in store.pending_items(run_id):
        await processor.add_work(LLMWorkItem(item.item_id, strategy, item.prompt))
    await processor.process_all()
    await writer.close()
    await store.close()

    source = StoreSource(tmp_path / "runs.db", "latest")
    await source.open()
    try:
        snapshot = await source.snapshot()
    finally:
        await source.close()
    assert (snapshot.retries, snapshot.rate_limits) == (2, 1)
    model = RunModel()
    apply_snapshot(model, snapshot, NOW)
    assert (model.state.retries, model.state.rate_limits) == (2, 1)


class FlakySource(FakeSource):
    """A store that fails some polls (a lock held long elsewhere), then reads again."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__(snapshot)
        self.failing = False

    async def snapshot(self) -> Snapshot:
        if self.failing:
            raise RuntimeError("database is locked")
        return self.current


async def test_a_failed_poll_is_logged_and_watching_goes_on() -> None:
    """One poll that raises does not close the dashboard: the event log says so once, the
    polls go on, and the next good one folds as usual."""
    source = FlakySource(Snapshot(Run(), list(FAILED), list(RUNNING)))
    app, feed = watch_app(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: feed.polls >= 1, "a first poll")
        source.failing = True
        polls = feed.polls
        await until(pilot, lambda: feed.polls >= polls + 3, "polls while the store fails")
        app.tick()  # the app pulls the feed while the store still fails
        await pilot.pause()
        assert app.is_running
        source.failing = False
        source.current = Snapshot(Run(succeeded=42, failed=1), [FAILED[1]], [])
        polls = feed.polls
        await until(pilot, lambda: feed.polls > polls, "a poll after the store reads again")
        app.tick()
        await pilot.pause()
        assert app.is_running
        assert "43/120" in str(app.main.query_one("#progress-text", Static).render())
        texts = [entry.text for entry in app.model.state.log if entry.kind == "store"]
        assert texts == [
            "could not read the run store (RuntimeError: database is locked): polling on",
            "the run store reads again",
        ]
