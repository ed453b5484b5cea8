"""The runner: owns the engine's thread and asyncio loop, and takes commands from the UI.

The engine thread runs the batch in rounds: the first round sends every item that has no
committed result; later rounds (dashboard only) send items the user asked to retry. The
UI never sees engine objects: the dashboard's feed (:class:`~abl_tui.feeds.RunnerFeed`)
drains :attr:`Runner.buffer` (a buffer the engine's observer appends to) into its own
:class:`~abl_tui.model.RunModel`; headless mode
reads the counts of :attr:`Runner.flight` instead (no per-event work in its thread). Both
send commands through the runner's thread-safe methods.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import signal
import sqlite3
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from async_batch_llm import LLMWorkItem, ParallelBatchProcessor, ProcessorConfig, RetryConfig
from async_batch_llm.core.config import RateLimitConfig
from async_batch_llm.observers.base import BaseObserver, ProcessingEvent
from async_batch_llm.store import RunStore, RunSummary, StoreError
from async_batch_llm.store.diagnose import describe_write_error
from async_batch_llm.store.errors import StoreUnwritable
from async_batch_llm.store.fingerprint import file_fingerprint, fingerprint_change
from async_batch_llm.store.keeper import LeaseKeeper
from async_batch_llm.store.lease import Lease, LeaseClaim, LeaseHeld, LeaseLost
from async_batch_llm.store.writer import StoreObserver

from .attempt_request import Replay, parameters_json
from .batch_jobs_state import BATCH_EVENT
from .batch_round import (
    AfterBatchAttempt,
    BatchAttempts,
    BatchTap,
    ChunkBoard,
    SyncObserver,
    wait_while,
)
from .batch_round import work_items as batch_work_items
from .batchfile import BatchFileError, iter_items
from .flight import Budget, FlightLog
from .settings import (
    RunSettings,
    batch_api_config,
    build_strategy,
    settings_from_stored,
    stored_settings,
)
from .state import stored_run

logger = logging.getLogger(__name__)

#: The key under which a run's stored settings keep its items file, for resuming an ingest.
INGEST_FILE = "items_file"
#: ... and that file's fingerprint (size, SHA-256), so a resume notices an edited file.
INGEST_FINGERPRINT = "items_fingerprint"
#: Seconds to wait for a store that refuses writes (disk full, locked) before stopping.
STORE_WAIT = 30.0
#: Seconds a write of the runner's own (heartbeat, statuses) waits for another process's
#: lock: short, so a run stopped while the store is locked ends within seconds.
STORE_BUSY_TIMEOUT = 2.0
#: Seconds the last writes of a run being given up may wait for a lock.
GIVE_UP_BUSY_TIMEOUT = 1.0


def unsettled_limit(workers: int) -> int:
    """Answers that may wait uncommitted before dispatch pauses (see StoreObserver): with
    the calls under way, at most ``workers + workers // 2`` answers are ever paid and not
    stored when the store stops taking writes."""
    return max(1, workers // 2)


#: Failed items the run's final record (:attr:`Runner.final`) names (the rest are counted).
FINAL_FAILED_ROWS = 100

#: Events the UI buffer holds at most. Past it the oldest are dropped and counted in
#: ``EventBuffer.dropped``: the screen's counts would then fall short of the store's, which
#: stays right. The UI drains it several times a second, so only a UI thread stalled for
#: minutes under a fast run gets there.
EVENT_BUFFER_LIMIT = 500_000

#: What :func:`_next_request_unless_idle` returns when the round's items are all done.
_IDLE = object()


async def _next_request_unless_idle(queue: asyncio.Queue[Any], processor: Any) -> Any:
    """The next retry request, or ``_IDLE`` once every item of the round has its result and
    no request is waiting (no polling: whichever comes first wakes us)."""
    if not queue.empty():
        return queue.get_nowait()
    request = asyncio.ensure_future(queue.get())
    idle = asyncio.ensure_future(processor.wait_idle())
    try:
        await asyncio.wait({request, idle}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        idle.cancel()
        if not request.done():
            request.cancel()  # a get cancelled before it took an item loses nothing
    if request.done() and not request.cancelled():
        return request.result()
    return _IDLE


def _work_item(item: Any, strategy: Any) -> LLMWorkItem[Any, Any, Any]:
    """The engine's work item for a stored item."""
    return LLMWorkItem(item.item_id, strategy, item.prompt, item.context)


class EventBuffer(BaseObserver):
    """Appends ``(event name, payload, wall time)`` to a deque the UI thread drains."""

    def __init__(self, limit: int = EVENT_BUFFER_LIMIT) -> None:
        self.events: deque[tuple[str, dict[str, Any], float]] = deque(maxlen=limit)
        self._limit = limit
        #: Events pushed out unread because the buffer was full (see EVENT_BUFFER_LIMIT).
        self.dropped = 0

    async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        self.on_event_sync(event, data)

    def on_event_sync(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        """Append and return: one deque append per event (thread-safe under the GIL)."""
        events = self.events
        if len(events) == self._limit:
            self.dropped += 1
        events.append((event._value_, data, time.time()))  # `.value` is a slow property

    def drain(self, limit: int = 200_000) -> list[tuple[str, dict[str, Any], float]]:
        """Take up to ``limit`` buffered events, oldest first."""
        events = self.events
        taken = []
        pop = events.popleft
        for _ in range(min(limit, len(events))):
            taken.append(pop())
        return taken


@dataclass
class RunPlan:
    """What a runner should do: start a new run from a batch, or resume a stored one."""

    db_path: Path
    settings: RunSettings | None = None
    items_path: Path | None = None
    source: str = ""
    run_ref: str | None = None
    retry_failed: bool = False
    keep_open: bool = False  # dashboard: stay alive after the run for retries by hand
    wait: bool = False  # a run leased by another live process: wait for it (else refuse)
    store_wait: float = STORE_WAIT  # see STORE_WAIT
    items_changed: str = "refuse"  # resume of an edited items file: "refuse" or "ignore"
    max_cost: float | None = None  # overrides the settings' budget (resume --max-cost)
    #: Buffer every engine event for the dashboard to fold; headless mode reads the flight
    #: log's counts instead (its buffer then carries only the provider-batch reports).
    buffer_events: bool = True


@dataclass
class RunOutcome:
    """How the run ended, for the exit status and the summary."""

    run_id: str = ""
    status: str = "pending"
    succeeded: int = 0
    failed: int = 0
    total: int = 0
    interrupted: bool = False
    error: str | None = None
    usage_error: bool = False  # the error is the user's input (a bad store file, no such run)
    busy: bool = False  # another live process runs it (or took it over from this one)
    store_failure: str | None = None  # why the store took no more writes (run stopped)
    note: str | None = None  # why the operator or the budget ended the run early (drain)
    budget_stop: bool = False  # the budget ended it (headless: nobody could raise it)
    extra: dict[str, Any] = field(default_factory=dict)


class Runner:
    """Runs a :class:`RunPlan` in its own thread and loop; every public method is thread-safe."""

    def __init__(self, plan: RunPlan) -> None:
        self.plan = plan
        self.buffer = EventBuffer()
        self.outcome = RunOutcome()
        self.run_id: str | None = None
        self.settings: RunSettings | None = plan.settings
        self.initial: dict[str, Any] = {}
        #: The stored run once it ended (totals and its first failed items, as
        #: :func:`~abl_tui.state.stored_run` gives them); None until then, or if unreadable.
        self.final: dict[str, Any] | None = None
        self.ready = threading.Event()
        self.done = threading.Event()
        #: What the runner is doing before the run is ready, in words (for a status line).
        self.phase = "opening the run store"
        #: Why dispatch waits for the store right now (None: it does not).
        self.store_status: str | None = None
        self.claim = LeaseClaim()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._store: RunStore | None = None
        self._keeper: LeaseKeeper | None = None
        self._processor: ParallelBatchProcessor[Any, Any, Any] | None = None
        self._writer: StoreObserver | None = None
        self._retry_requests: asyncio.Queue[list[str] | Replay | None] | None = None
        self._stopping = False
        self._cancelled = False  # cancel() was called (maybe before the loop existed)
        self._paused = False
        self._store_hold = False  # the store pushes back: dispatch waits
        self._give_up: asyncio.TimerHandle | None = None
        self._stop_reason: str | None = None  # the store failed or the lease was lost
        self._workers: int | None = None
        self._main_task: asyncio.Task[None] | None = None
        self._preload: asyncio.Future[Any] | None = None
        self._new_store = False  # this run created the store file
        self._bad_input = False  # the batch file was refused while being stored
        self._unwritable = False  # the store refused even the interruption's record
        #: Calls under way and what finished items cost (the engine thread's own count).
        self.flight = FlightLog()
        self.flight.on_change = self._flight_changed
        self._budget: Budget | None = None
        #: Why the budget holds dispatch back right now (None: it does not).
        self.budget_status: str | None = None
        self._draining = False
        self._limits: tuple[float | None, float | None] | None = None  # rpm, tpm set live
        #: The run's provider batches (``batch_api`` runs), as last reported.
        self._batch_board = ChunkBoard()
        self._force_online: frozenset[str] = frozenset()  # resume --retry-failed, batch runs

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the engine thread; returns at once (see :attr:`ready`)."""
        self._thread = threading.Thread(target=self._thread_main, name="abl-engine", daemon=True)
        self._thread.start()

    @property
    def started(self) -> bool:
        """True once :meth:`start` has been called."""
        return self._thread is not None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the run is set up (run id known) or has failed to start."""
        return self.ready.wait(timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the engine thread to end."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _thread_main(self) -> None:
        # Signals go to the main thread, which asks this one to stop (see cli): a signal
        # the kernel hands to this thread (or to the threads it starts, which inherit the
        # mask) would wait for the main thread to wake up by itself.
        with contextlib.suppress(AttributeError, ValueError, OSError):  # not POSIX
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self.ready.set()
            self.done.set()

    async def _main(self) -> None:
        self._main_task = asyncio.current_task()
        self._retry_requests = asyncio.Queue()
        try:
            if self._cancelled:  # interrupted before the loop was there to hear it
                raise asyncio.CancelledError
            if self.settings is not None:
                self._preload_provider(self.settings)
            self._new_store = not self.plan.db_path.exists()
            self._store = await RunStore.open(self.plan.db_path, busy_timeout=STORE_BUSY_TIMEOUT)
            self._keeper = LeaseKeeper(self._store, self.claim, on_lost=self._lease_lost)
            await self._open_run()
            left = self.initial["total"] - self.initial["succeeded"] - self.initial["failed"]
            if self.plan.settings is None and self.settings is not None and left > 0:
                self._preload_provider(self.settings)
            self.phase = "running"
            self.ready.set()
            await self._run_rounds()
        except asyncio.CancelledError:
            self._stopped(None)
        except StoreUnwritable as exc:
            self._stopped(str(exc))
        except LeaseHeld as exc:
            self.outcome.error, self.outcome.busy = str(exc), True
        except (StoreError, BatchFileError) as exc:
            self.outcome.error = str(exc)
            self.outcome.usage_error = True
            self._bad_input = isinstance(exc, BatchFileError)
        except Exception as exc:  # reported to the user, never a silent thread death
            logger.exception("the run failed")
            self.outcome.error = f"{type(exc).__name__}: {exc}"
        finally:
            await self._close()

    def _stopped(self, reason: str | None) -> None:
        """The run was stopped before its end: by the user, or by ``reason`` (the store took
        no more writes, or another process took the run over)."""
        self.outcome.interrupted = True
        reason = reason or self._stop_reason
        if reason is None:
            return
        if self.outcome.busy:
            self.outcome.error = reason
        else:
            self.outcome.store_failure = reason

    async def _finish_ingest(self, run: Any) -> None:
        """Store whatever a crash kept a never-started run from storing: the items after the
        first ``run.total`` (ingest commits in input order), so doing it twice is harmless.
        The items file must be the one the run began with (its fingerprint says)."""
        assert self._store is not None
        items_file = Path(run.settings.get(INGEST_FILE, ""))
        if not items_file.is_file():
            raise StoreError(
                f"run {run.id} stopped before it started ({run.total} items stored) and its "
                f"items file {items_file} is gone: run the batch again"
            )
        recorded = run.settings.get(INGEST_FINGERPRINT)
        change = await asyncio.to_thread(fingerprint_change, items_file, recorded)
        if change is not None and self.plan.items_changed != "ignore":
            raise StoreError(
                f"the items file {items_file} changed since run {run.id} began storing it "
                f"({change}); {run.total} of its items are stored. Run the batch again, or "
                "resume with --items-changed=ignore to store the rest from the file as it is"
            )
        self.phase = "storing the rest of the batch"
        await self._store.ingest(run.id, itertools.islice(iter_items(items_file), run.total, None))

    def _preload_provider(self, settings: RunSettings) -> None:
        """Import litellm in a thread while the batch is ingested (it takes seconds), only
        when the run goes through it: the native transport never imports it."""
        if settings.dry_run or self._preload is not None or not _uses_litellm(settings):
            return
        from async_batch_llm.providers._litellm_import import load_litellm

        self._preload = asyncio.get_running_loop().run_in_executor(None, load_litellm)

    async def _open_run(self) -> None:
        store, plan = self._store, self.plan
        assert store is not None
        if plan.run_ref is None:
            run_id = await self._create_run()
        else:
            run_id = await self._take_run(plan.run_ref)
        self.run_id = self.outcome.run_id = run_id
        run = await store.get_run(run_id)
        failed = await store.failed_items(run_id, limit=5_000)
        # A resumed run's retries and 429s carry on from the stored counts, not from 0.
        self.initial = stored_run(run, failed, await store.attempt_outcomes(run_id))
        settings_cost = self.settings.max_cost if self.settings is not None else None
        max_cost = self.plan.max_cost or settings_cost
        if max_cost is not None:
            self._budget = Budget(max_cost, spent_before=run.cost or 0.0)
        self.initial["max_cost"] = max_cost

    async def _create_run(self) -> str:
        """A new run, leased to this runner as it is created, with its batch stored."""
        store, plan, keeper = self._store, self.plan, self._keeper
        assert store is not None and keeper is not None
        assert plan.settings is not None and plan.items_path is not None
        self.phase = "reading the batch"
        fingerprint = await asyncio.to_thread(file_fingerprint, plan.items_path)
        # Where the items come from and how many there are, so a run killed while its
        # batch was being stored can finish storing it on resume (from the same file).
        settings = {
            **stored_settings(plan.settings),
            INGEST_FILE: str(plan.items_path.resolve()),
            INGEST_FINGERPRINT: fingerprint,
        }
        run_id = await store.create_run(
            name=plan.settings.name, source=plan.source, settings=settings, lease=self.claim
        )
        keeper.adopt(run_id)
        self.phase = "storing the batch"
        try:
            await store.ingest(run_id, iter_items(plan.items_path))
        except BatchFileError:
            await store.delete_run(run_id)  # a bad file costs nothing, not even a run
            keeper.run_id = None  # its lease went with it
            raise
        return run_id

    async def _take_run(self, run_ref: str) -> str:
        """Lease a stored run (waiting for its owner with ``wait``) and make it resumable."""
        store, keeper = self._store, self._keeper
        assert store is not None and keeper is not None
        run = await store.get_run(run_ref)
        await keeper.acquire(run.id, wait=self.plan.wait, on_wait=self._waiting)
        run = await store.get_run(run.id)  # as its last owner left it
        self.settings = settings_from_stored(run.settings, name=run.name)
        if run.status == "pending":  # never started: a crash may have cut its ingest short
            await self._finish_ingest(run)
        self.phase = "opening the run"
        await store.mark_interrupted(run.id)  # close what a crash left under way
        if self.plan.retry_failed:
            if self.settings.batch_api:  # their batch answered: this time they go online
                failed = await store.failed_items(run.id, limit=None)
                self._force_online = frozenset(item.item_id for item in failed)
            await store.reset_for_retry(run.id, None)
        return run.id

    def _waiting(self, holder: Lease) -> None:
        self.phase = f"waiting for run {holder.run_id}: it is run by {holder.describe()}"

    def _lease_lost(self, lost: LeaseLost) -> None:
        """Another process took the run over: stop at once, recording nothing more."""
        self.outcome.busy = True
        self._stop_now(str(lost))

    def _stop_now(self, reason: str) -> None:
        """Stop the run (in the loop) because of ``reason``; the run stays resumable."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stopping = True
        if self._main_task is not None:
            self._main_task.cancel()

    async def _run_rounds(self) -> None:
        store = self._store
        assert store is not None and self.run_id is not None
        settings = self.settings
        if settings is not None and settings.batch_api and not settings.dry_run:
            await self._batch_round(self._pending_items())
        else:
            await self._round(self._pending_items())
        # Retries by hand go online: somebody is waiting for them.
        while self.plan.keep_open and not self._stopping:
            assert self._retry_requests is not None
            request = await self._retry_requests.get()
            if request is None:
                break
            await self._round(request)

    async def _pending_items(self) -> AsyncIterator[Any]:
        assert self._store is not None and self.run_id is not None
        async for item in self._store.pending_items(self.run_id):
            yield item

    async def _items_by_id(self, item_ids: list[str]) -> AsyncIterator[Any]:
        """The stored items of a retry request that are pending: the ones it reset. An item
        that succeeded, or is on its way again, since the request was made is not sent (it
        would be paid twice)."""
        assert self._store is not None and self.run_id is not None
        for item_id in item_ids:
            item = await self._store.item(self.run_id, item_id)
            if item is not None and item.status == "pending":
                yield item

    def _make_processor(self, observers: list[Any]) -> ParallelBatchProcessor[Any, Any, Any]:
        settings = self.settings
        assert settings is not None
        rpm, tpm = self._limits if self._limits is not None else (settings.rpm, settings.tpm)
        config = ProcessorConfig(
            max_workers=self._workers or settings.workers,
            timeout_per_item=settings.timeout,
            retry=RetryConfig(max_attempts=settings.max_attempts, initial_wait=1.0, max_wait=30.0),
            rate_limit=RateLimitConfig(
                # A 429 without Retry-After pauses every worker this long (then 1.5x for the
                # next storm): short enough that a storm of them passes within a minute.
                cooldown_seconds=10.0,
                slow_start_items=settings.workers,
                slow_start_initial_delay=0.5,
            ),
            max_requests_per_minute=rpm,
            max_tokens_per_minute=tpm,
            max_queue_size=max(1_000, 4 * settings.workers),
            dry_run=settings.dry_run,
        )
        return ParallelBatchProcessor(config=config, observers=observers)

    async def _round(self, items: AsyncIterator[Any] | list[str] | Replay) -> None:
        """Send ``items`` (stored items, ids of items to retry, or a replay), plus any retries
        asked for meanwhile, and wait until all are done."""
        store, settings = self._store, self.settings
        assert store is not None and settings is not None and self.run_id is not None
        strategy = build_strategy(settings)
        writer = self._open_writer(settings)
        processor = self._make_processor([writer, *self._followers()])
        self._processor = processor
        self._apply_pause()
        self._check_budget()  # a resumed run may have spent its budget already
        await store.set_run_status(self.run_id, "running")
        await processor.start(collect_results=False)
        try:
            await self._send(processor, strategy, items)
            await self._serve_retries_until_done(processor, strategy)
            await processor.finish()
            await processor.join()
        finally:
            # Stop the workers first, so the writer's last flush holds every result made.
            await processor.shutdown()
            self._processor = None
            await self._close_writer(writer)
        await self._settle_status()

    async def _batch_round(self, items: AsyncIterator[Any]) -> None:
        """Send ``items`` through the provider's batch API, rescuing online what a batch could
        not finish (see :mod:`abl_tui.batch_round`), and wait until all are done."""
        from async_batch_llm.batch_api import ProviderBatchRunner, rescue_online
        from async_batch_llm.store.provider_batches import SqliteBatchJournal

        store, settings = self._store, self.settings
        assert store is not None and settings is not None and self.run_id is not None
        run_id = self.run_id
        strategy = build_strategy(settings)
        config = batch_api_config(settings)
        # A journal write waits for a locked store as long as the run's writer would.
        wait = max(self.plan.store_wait, STORE_BUSY_TIMEOUT)
        journal = await SqliteBatchJournal.open(self.plan.db_path, run_id, busy_timeout=wait)
        try:
            for record in await journal.chunks():  # what earlier sessions sent
                self._batch_status(record)
            writer = self._open_writer(settings)
            attempts = BatchAttempts()
            observers = self._followers()
            followers: list[SyncObserver] = list(observers)
            wrapped = [AfterBatchAttempt(o, attempts) for o in (writer, *observers)]
            processor = self._make_processor(list(wrapped))
            self._processor = processor
            self._apply_pause()
            self._check_budget()
            await store.set_run_status(run_id, "running")
            tap = BatchTap(
                writer,
                followers,
                attempts,
                mode=settings.rescue,
                force_online=self._force_online,
                ready=lambda: wait_while(lambda: self._store_hold),
            )
            batches = ProviderBatchRunner(journal, config, on_status=self._batch_status)

            async def lookup(item_id: str) -> LLMWorkItem[Any, Any, Any] | None:
                item = await store.item(run_id, item_id)
                return None if item is None else _work_item(item, strategy)

            outcomes = tap.outcomes(batches.outcomes(batch_work_items(items, strategy)))
            try:
                async for result in rescue_online(outcomes, lookup, processor, mode="online"):
                    attempts.pending.pop(result.item_id, None)
            except sqlite3.OperationalError as exc:  # the journal could not commit
                raise StoreUnwritable(self._describe(exc)) from exc
            finally:
                await processor.shutdown()
                self._processor = None
                await self._close_writer(writer)
        finally:
            await journal.close()
        await self._settle_status()

    def _followers(self) -> list[EventBuffer | FlightLog]:
        """The observers besides the store's writer: the flight log, and the UI's buffer
        unless the plan reads counts instead (headless)."""
        if self.plan.buffer_events:
            return [self.buffer, self.flight]
        return [self.flight]

    def _batch_status(self, record: Any) -> None:
        """A chunk was planned, submitted, polled, cancelled or ended (in the loop)."""
        self._batch_board.report(record)
        self.buffer.events.append((BATCH_EVENT, {"record": record}, time.time()))

    @property
    def batch_chunks(self) -> dict[str, Any]:
        """The run's provider batches by chunk id, as last reported (``ChunkRecord`` s; empty
        for an online run). Safe to read from any thread: the mapping is replaced, never
        changed in place."""
        return self._batch_board.chunks

    def _open_writer(self, settings: RunSettings) -> StoreObserver:
        """The run's writer, fenced by this runner's lease; one that pushes back on dispatch
        unless it is a dry run (nothing is paid, nothing to protect)."""
        assert self._store is not None and self.run_id is not None
        workers = self._workers or settings.workers
        writer = self._store.observer(
            self.run_id,
            owner=self.claim.owner,
            max_unsettled=None if settings.dry_run else unsettled_limit(workers),
        )
        writer.on_pressure = self._on_pressure
        self._writer = writer
        return writer

    async def _close_writer(self, writer: StoreObserver) -> None:
        """Commit what the writer holds, waiting up to ``store_wait`` seconds for a store that
        refuses; past that (or once the run is given up) raise :class:`StoreUnwritable`."""
        self._writer = None
        self._cancel_give_up()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (0.0 if self._stop_reason else self.plan.store_wait)
        while self._stop_reason is None and not isinstance(writer.error, LeaseLost):
            try:
                await writer.flush()
                break
            except StoreError:
                if loop.time() >= deadline:
                    break
                await asyncio.sleep(writer.flush_interval)
        giving_up = self._stop_reason is not None or writer.error is not None
        try:
            await writer.close(busy_timeout=GIVE_UP_BUSY_TIMEOUT if giving_up else None)
        except StoreError:
            reason = self._stop_reason or self._describe(writer.error)
            raise StoreUnwritable(reason) from None

    def _describe(self, error: BaseException | None) -> str:
        return describe_write_error(error, self.plan.db_path)

    # ------------------------------------------------------------------ back-pressure

    def _on_pressure(self, blocked: bool) -> None:
        """The writer asks dispatch to wait (answers pile up uncommitted, or commits fail)
        or lets it go on; a store that refuses for ``store_wait`` seconds stops the run."""
        writer = self._writer
        self._store_hold = blocked
        self._apply_pause()
        if not blocked:
            self.store_status = None
            self._cancel_give_up()
            return
        error = writer.error if writer is not None else None
        if error is not None:
            self.store_status = self._describe(error)
            logger.warning("dispatch waits: %s", self.store_status)
        if isinstance(error, LeaseLost):
            self.outcome.busy = True
            self._stop_now(str(error))
        elif self._give_up is None:
            loop = asyncio.get_running_loop()
            self._give_up = loop.call_later(self.plan.store_wait, self._store_gave_out)

    def _store_gave_out(self) -> None:
        self._give_up = None
        writer = self._writer
        if writer is None or not writer.blocked:
            return
        reason = self._describe(writer.error)
        self._stop_now(
            f"{reason}; {writer.unsettled} answers could not be stored and will be sent "
            "again on resume"
        )

    def _cancel_give_up(self) -> None:
        if self._give_up is not None:
            self._give_up.cancel()
            self._give_up = None

    def _apply_pause(self) -> None:
        """Pause the processor while the user or the store wants it paused."""
        processor = self._processor
        if processor is None:
            return
        if self._paused or self._store_hold or self.budget_status or self._draining:
            processor.pause()
        elif processor.paused:
            processor.resume()

    async def _serve_retries_until_done(self, processor: Any, strategy: Any) -> None:
        """While items are still under way, retries asked for join this round."""
        queue = self._retry_requests
        assert queue is not None and self._store is not None and self.run_id is not None
        while True:
            request = await _next_request_unless_idle(queue, processor)
            if request is _IDLE:
                return
            if request is None:
                queue.put_nowait(None)
                return
            await self._send(processor, strategy, request)

    async def _send(
        self, processor: Any, strategy: Any, request: AsyncIterator[Any] | list[str] | Replay
    ) -> None:
        """Give the engine stored items, the items of these ids, or one replay."""
        if isinstance(request, Replay):
            work = await self._replay_item(request, strategy)
            if work is not None:
                await processor.add_work(work)
            return
        items = self._items_by_id(request) if isinstance(request, list) else request
        async for item in items:
            await processor.add_work(_work_item(item, strategy))

    async def _replay_item(
        self, replay: Replay, strategy: Any
    ) -> LLMWorkItem[Any, Any, Any] | None:
        """The work item of a replay: its own prompt, and a strategy of its own when its
        options change the run's settings; the writer records what it sends."""
        store, settings = self._store, self.settings
        assert store is not None and settings is not None and self.run_id is not None
        item = await store.item(self.run_id, replay.item_id)
        if item is None:
            return None
        if replay.options:
            settings = settings.model_copy(update=replay.options)
            strategy = build_strategy(settings)
        if self._writer is not None:
            sent = parameters_json(stored_settings(settings))
            self._writer.note_request(item.item_id, replay.prompt, sent)
        return LLMWorkItem(item.item_id, strategy, replay.prompt, item.context)

    async def _settle_status(self) -> None:
        assert self._store is not None and self.run_id is not None
        run = await self._store.get_run(self.run_id)
        status = "completed" if run.failed == 0 and run.pending == 0 else "failed"
        if run.pending:
            status = "interrupted"
        await self._store.set_run_status(self.run_id, status)
        self.outcome.status = status
        await self._record_final(self._store, run)

    async def _record_final(self, store: RunStore, run: RunSummary) -> None:
        """The ended run's counts for the outcome, and its totals and first failed items for
        a summary (:attr:`final`)."""
        self.outcome.succeeded, self.outcome.failed, self.outcome.total = (
            run.succeeded,
            run.failed,
            run.total,
        )
        failed = await store.failed_items(run.id, limit=FINAL_FAILED_ROWS) if run.failed else []
        self.final = stored_run(run, failed)

    async def _close(self) -> None:
        store = self._store
        if store is None:
            return
        if self._bad_input and self._new_store:
            if self._keeper is not None:
                await self._keeper.release()
            await store.close()
            self._remove_store_files()  # a bad file costs nothing, not even a store file
            return
        try:
            if self.outcome.interrupted:
                await self._record_interruption(store)
        finally:
            if self._keeper is not None:
                await self._keeper.release(write=not self._unwritable)
            await store.close()

    async def _record_interruption(self, store: RunStore) -> None:
        """Items under way become interrupted and the run resumable (with the reason when
        the store stopped it). Not while its batch was being stored (it stays pending, and
        resume stores the rest), nor once another process has taken the run over."""
        processor = self._processor
        if processor is not None:
            await processor.cancel()
        if self.run_id is None or self.outcome.busy:
            return
        if self.outcome.store_failure is not None:
            await store.set_busy_timeout(GIVE_UP_BUSY_TIMEOUT)
        try:
            note = self.outcome.store_failure or self.outcome.note
            await store.mark_interrupted(self.run_id, note=note)
            run = await store.get_run(self.run_id)
        except (StoreError, sqlite3.Error) as exc:  # the next resume records it
            self._unwritable = True
            logger.warning("could not record the interruption of run %s: %s", self.run_id, exc)
            self.outcome.status = "interrupted"
            return
        self.outcome.status = "interrupted"
        with contextlib.suppress(StoreError, sqlite3.Error):  # the summary does without
            await self._record_final(store, run)

    def _remove_store_files(self) -> None:
        path = self.plan.db_path
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{path}{suffix}").unlink()

    # ------------------------------------------------------------------ commands

    def _call(self, fn: Callable[[], Any]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn)

    def _submit(self, coro_fn: Callable[[], Any]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(coro_fn(), loop)

    def retry_items(self, item_ids: list[str]) -> None:
        """Send these failed items to the provider again (history kept)."""
        ids = list(item_ids)
        if ids:
            self._submit(lambda: self._retry(ids))

    def retry_all_failed(self) -> None:
        """Send every failed item of the run again."""
        self._submit(lambda: self._retry(None))

    async def _retry(self, item_ids: list[str] | None) -> None:
        store = self._store
        if store is None or self.run_id is None or self._retry_requests is None:
            return
        if item_ids is None:
            item_ids = [row.item_id for row in await store.failed_items(self.run_id, limit=None)]
        if not item_ids:
            return
        await store.reset_for_retry(self.run_id, item_ids)
        self._retry_requests.put_nowait(item_ids)

    def replay(self, item_id: str, prompt: str, options: dict[str, Any] | None = None) -> None:
        """Send one item again as a new attempt with ``prompt`` and the run's settings changed
        by ``options`` (``max_tokens``, ``temperature``); its stored prompt stays the original,
        its result becomes the replay's."""
        replay = Replay(item_id, prompt, dict(options or {}))
        self._call(lambda: self._queue_replay(replay))

    def _queue_replay(self, replay: Replay) -> None:
        if self._retry_requests is not None and self.run_id is not None:
            self._retry_requests.put_nowait(replay)

    def pause(self) -> None:
        """Start no new attempts until :meth:`resume`."""
        self._paused = True
        self._call(self._apply_pause)

    def resume(self) -> None:
        """Start attempts again (unless the store holds dispatch back)."""
        self._paused = False
        self._call(self._apply_pause)

    # ------------------------------------------------------------------ live controls

    def _flight_changed(self) -> None:
        """A call started or ended (in the loop): check the budget, and whether a drain is done."""
        if self._budget is not None or self.budget_status is not None:
            self._check_budget()
        if self._draining and not self.flight.calling and self._processor is not None:
            self._end_round_early()

    def _check_budget(self) -> None:
        """Hold dispatch once the budget is reached, let it go once it no longer is."""
        budget = self._budget
        reason = budget.reached(self.flight) if budget is not None else None
        held = self.budget_status is not None
        if (reason is not None) != held:
            self._budget_reached(reason)
        elif held:
            self.budget_status = reason  # the same hold, with today's numbers

    def _budget_reached(self, reason: str | None) -> None:
        """Hold dispatch while the budget says so; headless (nobody can raise it), end the
        run once the calls under way are done, resumable, with the reason."""
        self.budget_status = reason
        self._apply_pause()
        if reason is None:
            return
        logger.warning("dispatch stopped: %s", reason)
        if not self.plan.keep_open:
            self.outcome.budget_stop = True
            self._begin_drain(reason)

    def _begin_drain(self, note: str) -> None:
        self._draining = True
        self.outcome.note = note
        self._apply_pause()
        if not self.flight.calling:
            self._end_round_early()

    def _end_round_early(self) -> None:
        """Nothing is calling and nothing may start: end the run here, interrupted (the items
        left stay pending: resumable)."""
        self._draining = False
        self._stopping = True
        if self._main_task is not None:
            self._main_task.cancel()

    def drain(self) -> None:
        """Finish the calls under way, start nothing more, then end the run as interrupted
        (resumable); items waiting for a retry stay pending."""
        self._call(lambda: self._begin_drain("drained by the operator"))

    @property
    def draining(self) -> bool:
        """True between :meth:`drain` and the end of the calls under way."""
        return self._draining

    @property
    def max_cost(self) -> float | None:
        """The run's cost limit in USD (None: no limit)."""
        return self._budget.max_cost if self._budget is not None else None

    def set_max_cost(self, max_cost: float | None) -> None:
        """Set (or, with None, lift) the run's cost limit; dispatch resumes if it is no longer
        reached."""
        spent_before = float(self.initial.get("cost") or 0.0)
        self._budget = None if max_cost is None else Budget(max_cost, spent_before)
        self._call(self._check_budget)

    def set_limits(self, rpm: float | None, tpm: float | None) -> bool:
        """New pacing limits: at once while a round runs (True), else from the next round
        (False: no round is under way)."""
        self._limits = (rpm, tpm)
        processor = self._processor
        if processor is None:
            return False
        self._call(lambda: processor.set_pacing(rpm, tpm))
        return True

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called (a signal, or the user quitting mid-run)."""
        return self._cancelled

    @property
    def paused(self) -> bool:
        """True while dispatch is paused by the user."""
        return self._paused

    def set_workers(self, count: int) -> None:
        """Change concurrency of the running round (and later ones)."""
        self._workers = count
        self._call(lambda: self._processor.set_max_workers(count) if self._processor else None)

    def stop(self) -> None:
        """End after the current round (dashboard: no more retry rounds)."""
        self._stopping = True
        self._call(lambda: self._retry_requests.put_nowait(None) if self._retry_requests else None)

    def cancel(self) -> None:
        """Interrupt now, whatever the phase (storing the batch too): items under way are
        recorded as interrupted; the run stays resumable."""
        self._stopping = True
        self._cancelled = True
        self._call(lambda: self._main_task.cancel() if self._main_task else None)

    def fetch_item(self, item_id: str) -> concurrent.futures.Future[Any]:
        """An item's stored detail (prompt, output, error, attempt history), read in the engine
        loop; the future's result is the store's item record, or None."""
        return self._read(lambda store: store.item(self.run_id or "", item_id))

    def fetch_runs(self) -> concurrent.futures.Future[Any]:
        """Every run in the store (summaries), newest first."""
        return self._read(lambda store: store.list_runs())

    def _read(self, query: Callable[[RunStore], Any]) -> concurrent.futures.Future[Any]:
        loop, store = self._loop, self._store
        if loop is None or loop.is_closed() or store is None:
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            future.set_exception(RuntimeError("the run is not open"))
            return future
        return asyncio.run_coroutine_threadsafe(query(store), loop)


def _uses_litellm(settings: RunSettings) -> bool:
    """True when the run's model goes through litellm (an impossible choice is reported later,
    when the strategy is built)."""
    from async_batch_llm.providers.endpoints import resolve_transport

    try:
        return resolve_transport(settings.model, settings.api_base, settings.transport) == "litellm"
    except ValueError:
        return False
