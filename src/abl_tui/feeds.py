"""Where the dashboard's model gets its run from: the one place live and watch mode differ.

A :class:`RunFeed` brings a run into a :class:`~abl_tui.model.RunModel` and says which
commands the run takes. The live feed (:class:`RunnerFeed`) drains a runner's event buffer
on the UI thread and hands the runner's thread-safe methods out as its commands; the watch
feed (:class:`abl_tui.watch.WatchFeed`) folds snapshots polled from a store another process
writes, and has no commands: that is all "read-only" means.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .model import Event, RunModel

#: Seconds of folding one drain may take before it leaves the rest for the next tick, so a
#: flood of events never starves key handling.
FOLD_BUDGET_SECONDS = 0.08
#: Events taken from the buffer per slice of a drain.
DRAIN_CHUNK = 10_000
#: Seconds to wait for a stopped runner's thread before switching to another run.
SWITCH_JOIN_SECONDS = 60.0


class FeedUnavailable(Exception):
    """The feed's run cannot be read (no such store or run): the dashboard exits with 2."""


class EventSource(Protocol):
    """Where engine events wait for the UI: ``drain()`` takes them, oldest first."""

    def drain(self, limit: int = ...) -> list[Event]:
        """Take up to ``limit`` buffered events."""
        ...


class RunCommands(Protocol):
    """What an operator can ask of a live run (the runner's thread-safe methods)."""

    @property
    def paused(self) -> bool:
        """True while dispatch is paused by the user."""
        ...

    def retry_items(self, item_ids: list[str]) -> None:
        """Send these failed items again."""

    def retry_all_failed(self) -> None:
        """Send every failed item again."""

    def replay(self, item_id: str, prompt: str, options: dict[str, Any] | None = None) -> None:
        """Send one item again as a new attempt with an edited prompt and options."""

    def pause(self) -> None:
        """Start no new attempts."""

    def resume(self) -> None:
        """Start attempts again."""

    def stop(self) -> None:
        """End after the current round."""

    def cancel(self) -> None:
        """Interrupt now; the run stays resumable."""

    def set_workers(self, count: int) -> None:
        """Change concurrency."""

    def set_limits(self, rpm: float | None, tpm: float | None) -> bool:
        """New pacing limits; True when applied at once, False from the next round."""
        ...

    def set_max_cost(self, max_cost: float | None) -> None:
        """Set or lift the run's cost limit."""

    def drain(self) -> None:
        """Finish the calls under way, start nothing, then end the run (resumable)."""


class RunnerLike(RunCommands, Protocol):
    """The runner surface the live feed uses (thread-safe methods, plain attributes); the real
    :class:`~abl_tui.runner.Runner` and the tests' fake both provide it."""

    initial: dict[str, Any]
    ready: threading.Event
    done: threading.Event
    run_id: str | None
    outcome: Any
    plan: Any

    @property
    def buffer(self) -> EventSource:
        """Where the engine's events wait for the UI."""
        ...

    @property
    def cancelled(self) -> bool:
        """True once the run was interrupted (a signal, or the user quitting mid-run)."""
        ...

    def start(self) -> None:
        """Start the engine thread."""

    @property
    def draining(self) -> bool:
        """True while a drain waits for the calls under way."""
        ...

    @property
    def max_cost(self) -> float | None:
        """The run's cost limit (None: none)."""
        ...

    @property
    def budget_status(self) -> str | None:
        """Why the budget holds dispatch back now (None: it does not)."""
        ...

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the engine thread to end."""
        ...

    def fetch_item(self, item_id: str) -> concurrent.futures.Future[Any]:
        """An item's stored record (or None)."""
        ...

    def fetch_runs(self) -> concurrent.futures.Future[Any]:
        """Summaries of every stored run."""
        ...


@runtime_checkable
class RunFeed(Protocol):
    """A run, as the dashboard follows it."""

    @property
    def commands(self) -> LiveCommands | None:
        """The run's commands, or None when the run cannot be commanded (watch mode)."""
        ...

    @property
    def error(self) -> str | None:
        """Why the run stopped, when an error stopped it."""
        ...

    @property
    def stopped_by_signal(self) -> bool:
        """True once a signal interrupted the run: the dashboard ends with it."""
        ...

    def start(self) -> None:
        """Begin (the live feed starts its runner unless it runs already)."""

    async def follow(self, updated: Callable[[], None]) -> None:
        """Run alongside the app for as long as the feed needs to: call ``updated`` when
        there is news to pull. Raises :class:`FeedUnavailable` if the run cannot be read."""

    def pull(self, model: RunModel, now: float) -> None:
        """Bring ``model`` up to date with the run (on the UI thread, a few times a second)."""

    async def load_item(self, item_id: str) -> Any:
        """An item's stored record with its attempt history, or None."""

    async def load_runs(self) -> list[Any]:
        """Summaries of every run in the store, newest first."""
        ...


#: Builds a runner that resumes a stored run (the runs screen switches runs with it).
RunnerFactory = Callable[..., RunnerLike]


def default_runner_factory(*, db_path: Path, run_ref: str, retry_failed: bool) -> RunnerLike:
    """A real runner resuming a stored run (kept open for retries by hand)."""
    from .runner import Runner, RunPlan

    plan = RunPlan(db_path=db_path, run_ref=run_ref, retry_failed=retry_failed, keep_open=True)
    return Runner(plan)


class LiveCommands:
    """A live run's commands: the runner's, and opening another run of the same store."""

    def __init__(self, feed: RunnerFeed) -> None:
        self._feed = feed
        self.runner: RunCommands = feed.runner

    async def open_run(self, run_id: str, *, retry_failed: bool) -> RunnerFeed:
        """A feed of another stored run, once this run's thread has ended (stop or cancel
        it first)."""
        feed = self._feed
        await asyncio.to_thread(feed.runner.join, SWITCH_JOIN_SECONDS)
        db_path = Path(feed.runner.plan.db_path)
        runner = feed.runner_factory(db_path=db_path, run_ref=run_id, retry_failed=retry_failed)
        return RunnerFeed(runner, runner_factory=feed.runner_factory)


class RunnerFeed:
    """The live feed: a runner's engine thread, its event buffer folded on the UI thread."""

    def __init__(
        self,
        runner: RunnerLike,
        *,
        started: bool = False,
        runner_factory: RunnerFactory = default_runner_factory,
        fold_budget: float | None = FOLD_BUDGET_SECONDS,
    ) -> None:
        self.runner = runner
        self.runner_factory = runner_factory
        self.fold_budget = fold_budget
        self._started = started
        self._commands = LiveCommands(self)
        self._dropped_noted = False  # the event log said the display fell behind

    @property
    def commands(self) -> LiveCommands:
        return self._commands

    @property
    def error(self) -> str | None:
        error = getattr(self.runner.outcome, "error", None)
        return str(error) if error else None

    @property
    def stopped_by_signal(self) -> bool:
        runner = self.runner
        return runner.done.is_set() and runner.cancelled

    def start(self) -> None:
        if not self._started:
            self.runner.start()
            self._started = True

    async def follow(self, updated: Callable[[], None]) -> None:
        """Nothing to run: the app's timer pulls the buffer."""

    def pull(self, model: RunModel, now: float) -> None:
        """Load the stored totals once the runner is ready, fold the buffered events (within
        the fold budget; all of them once the engine is gone), then the runner's controls."""
        runner = self.runner
        if not model.seeded and runner.ready.is_set():
            model.seed(runner.initial)
        if model.seeded:
            self._drain(model, self.fold_budget)
            if runner.done.is_set() and not model.ended:
                self._drain(model, None)
                model.ended = True
            # A runner attribute, not buffered events: it survives a drain cut short.
            model.batches = list(getattr(runner, "batch_chunks", {}).values())
            self._note_dropped(model, now)
        model.follow_controls(
            paused=runner.paused,
            max_cost=runner.max_cost,
            draining=runner.draining,
            budget_note=runner.budget_status,
            now=now,
            store_note=getattr(runner, "store_status", None),
        )

    def _note_dropped(self, model: RunModel, now: float) -> None:
        """Say once if the runner's buffer overflowed: the counts on screen are then short of
        the store's, which has every result."""
        dropped = getattr(self.runner.buffer, "dropped", 0)
        if dropped and not self._dropped_noted:
            self._dropped_noted = True
            model.state.note(
                now,
                f"the display fell behind and skipped {dropped:,} events: counts on screen "
                "may be short; the run store has every result",
                "store",
            )

    def _drain(self, model: RunModel, budget: float | None) -> None:
        """Fold buffered events in slices until the buffer is empty or the budget is spent."""
        deadline = None if budget is None else time.perf_counter() + budget
        fold, drain = model.fold, self.runner.buffer.drain
        while fold(drain(DRAIN_CHUNK)) == DRAIN_CHUNK:
            if deadline is not None and time.perf_counter() >= deadline:
                break

    async def load_item(self, item_id: str) -> Any:
        """Read in the engine's loop, awaited here; once the engine has ended (a drain, a
        stopped run), straight from the store file, read-only."""
        runner = self.runner
        if runner.done.is_set():
            run_id = runner.run_id or ""
            return await _read_store(runner, lambda store: store.item(run_id, item_id))
        return await asyncio.wrap_future(runner.fetch_item(item_id))

    async def load_runs(self) -> list[Any]:
        """Every run in the store (as :meth:`load_item` reads)."""
        runner = self.runner
        if runner.done.is_set():
            return list(await _read_store(runner, lambda store: store.list_runs()))
        return list(await asyncio.wrap_future(runner.fetch_runs()))


async def _read_store(runner: RunnerLike, query: Callable[[Any], Awaitable[Any]]) -> Any:
    """``query`` on the runner's store opened read-only in this loop (its engine has ended)."""
    from async_batch_llm.store import RunStore

    store = await RunStore.open(Path(runner.plan.db_path), readonly=True)
    try:
        return await query(store)
    finally:
        await store.close()
