"""Watch mode: the dashboard, read-only, following a run another process writes.

:class:`WatchFeed` polls the store (opened read-only) every half second from a worker in
the app's loop (aiosqlite does the reading in its thread) and folds each snapshot into the
same model the live dashboard uses: counts, totals and failed items from the run, workers
from the items under way, and rates from what changed between two polls. It has no
commands, so the dashboard offers none.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from async_batch_llm.store.provider_batches import read_chunks

from .feeds import FeedUnavailable, LiveCommands
from .model import RunModel
from .state import MAX_FAILED_ROWS, WorkerState, stored_run

#: Seconds between two reads of the store.
POLL_SECONDS = 0.5
#: Seconds between two counts of the run's retries and 429s (a scan of its attempts).
OUTCOME_COUNT_SECONDS = 2.0


@dataclass
class Snapshot:
    """What one poll read: the run summary, its failed items, the items under way, and
    how many attempts so far ended in a retry or a rate limit."""

    run: Any
    failed: list[Any] = field(default_factory=list)
    running: list[Any] = field(default_factory=list)
    retries: int = 0
    rate_limits: int = 0
    batches: list[Any] = field(default_factory=list)  # provider batches (batch-API runs)


class RunSource(Protocol):
    """Where watch mode reads a run from (the store, or a fixed source in tests)."""

    async def open(self) -> str:
        """Open the source; returns the run id it follows."""
        ...

    async def snapshot(self) -> Snapshot:
        """Read the run as it is now."""
        ...

    async def item(self, item_id: str) -> Any:
        """One item with its attempt history, or None."""
        ...

    async def runs(self) -> list[Any]:
        """Every run in the store."""
        ...

    async def close(self) -> None:
        """Release the source."""
        ...


class StoreSource:
    """Reads a run from a store file opened read-only."""

    def __init__(self, db_path: Path, run_ref: str) -> None:
        self.db_path = Path(db_path)
        self.run_ref = run_ref
        self._store: Any = None
        self._run_id = ""
        self._outcomes: dict[str, int] = {}
        self._outcomes_at = float("-inf")

    async def open(self) -> str:
        from async_batch_llm.store import RunStore

        self._store = await RunStore.open(self.db_path, readonly=True)
        run = await self._store.get_run(self.run_ref)
        self._run_id = run.id
        return str(run.id)

    async def snapshot(self) -> Snapshot:
        store, run_id = self._store, self._run_id
        run = await store.get_run(run_id)
        failed = await store.failed_items(run_id, limit=MAX_FAILED_ROWS) if run.failed else []
        running = await store.items(run_id, status="running", limit=None)
        now = time.monotonic()
        if now - self._outcomes_at >= OUTCOME_COUNT_SECONDS:  # a scan: not every poll
            self._outcomes_at = now
            self._outcomes = await store.attempt_outcomes(run_id)
        outcomes = self._outcomes
        batches = await asyncio.to_thread(read_chunks, self.db_path, run_id)
        return Snapshot(
            run,
            failed,
            running,
            outcomes.get("retry", 0),
            outcomes.get("rate_limited", 0),
            batches,
        )

    async def item(self, item_id: str) -> Any:
        return await self._store.item(self._run_id, item_id)

    async def runs(self) -> list[Any]:
        return list(await self._store.list_runs())

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None


def apply_snapshot(model: RunModel, snapshot: Snapshot, now: float) -> None:
    """Fold one poll into the model: totals, failed items, workers, status and rates."""
    state = model.state
    model.batches = snapshot.batches
    before_done = state.done if model.seeded else None
    before_tokens = state.totals.input_tokens + state.totals.output_tokens
    run = snapshot.run
    # later polls keep the baselines: projections and rates use what this watch saw finish
    state.load(stored_run(run, snapshot.failed), keep_session=before_done is not None)
    if before_done is None:
        model.seeded = True
    else:
        finished = state.done - before_done
        tokens = state.totals.input_tokens + state.totals.output_tokens - before_tokens
        if finished > 0:
            state.completions.add(now, finished)
        if tokens > 0:
            state.tokens.add(now, tokens)
    # An item under way holds a worker (calling, or waiting to retry): as the live view counts.
    state.workers = {
        index: WorkerState(index, item.item_id, item.attempts or 1, item.started_at or now)
        for index, item in enumerate(
            sorted(snapshot.running, key=lambda item: item.started_at or now)
        )
    }
    if state.max_workers:  # the idle ones too, so busy reads ``2/24`` as it does live
        for index in range(len(state.workers), state.max_workers):
            state.workers[index] = WorkerState(index)
    state.retries = snapshot.retries
    state.rate_limits = snapshot.rate_limits
    state.status = run.status
    state.started_at = run.started_at
    state.finished_at = None if run.status == "running" else run.finished_at
    model.round_active = run.status == "running"


class WatchFeed:
    """The watch feed: snapshots polled from a :class:`RunSource`, and no commands."""

    def __init__(self, source: RunSource, *, poll_seconds: float = POLL_SECONDS) -> None:
        self.source = source
        self.poll_seconds = poll_seconds
        self.polls = 0  # snapshots read and handed to the app so far
        self._latest: Snapshot | None = None  # read and not folded yet
        self._problem: str | None = None  # why the last poll failed (None: it did not)
        self._problem_shown: str | None = None

    @property
    def commands(self) -> LiveCommands | None:
        """None: a watched run is another process's to command."""
        return None

    @property
    def error(self) -> str | None:
        return None

    @property
    def stopped_by_signal(self) -> bool:
        return False

    def start(self) -> None:
        """Nothing to start: :meth:`follow` opens the source."""

    async def follow(self, updated: Callable[[], None]) -> None:
        """Open the source, then read a snapshot every ``poll_seconds`` (``updated`` has the
        app pull it at once); the source is closed when the app stops following."""
        try:
            await self.source.open()
        except Exception as exc:  # no such file or run, not a store
            raise FeedUnavailable(str(exc)) from exc
        try:
            while True:
                try:
                    self._latest = await self.source.snapshot()
                    self._problem = None
                except Exception as exc:  # a lock held long, a file being replaced: poll on
                    self._problem = f"{type(exc).__name__}: {exc}"
                updated()
                self.polls += 1
                await asyncio.sleep(self.poll_seconds)
        finally:
            await self.source.close()

    def pull(self, model: RunModel, now: float) -> None:
        """Fold the snapshot read last, if it was not yet."""
        snapshot, self._latest = self._latest, None
        if snapshot is not None:
            apply_snapshot(model, snapshot, now)
        if self._problem != self._problem_shown:  # one log line when it starts and ends
            self._problem_shown = self._problem
            text = (
                f"could not read the run store ({self._problem}): polling on"
                if self._problem
                else "the run store reads again"
            )
            model.state.note(now, text, "store")

    async def load_item(self, item_id: str) -> Any:
        """An item's stored record, read from the watched store."""
        return await self.source.item(item_id)

    async def load_runs(self) -> list[Any]:
        """Every run in the watched store."""
        return await self.source.runs()


async def _probe(source: StoreSource) -> str | None:
    """Open and close the source once: None if it can be followed, else what is wrong."""
    try:
        await source.open()
    except Exception as exc:  # no such file or run, not a store
        return str(exc)
    finally:
        await source.close()
    return None


def run_watch(
    db_path: Path,
    run_ref: str,
    *,
    theme: str | None = None,
    on_theme_chosen: Callable[[str], None] | None = None,
) -> int:
    """Follow a run another process writes, until the user quits; returns the exit status.

    A store or run that cannot be read is said before the terminal is taken over, so the
    message is not preceded by the screen's control codes."""
    problem = asyncio.run(_probe(StoreSource(Path(db_path), run_ref)))
    if problem is not None:
        print(f"abl-tui: error: {problem}", file=sys.stderr)
        return 2
    from .app import DashboardApp

    feed = WatchFeed(StoreSource(Path(db_path), run_ref))
    app = DashboardApp(feed, theme=theme, on_theme_chosen=on_theme_chosen)
    app.run()
    return app.return_code or 0
