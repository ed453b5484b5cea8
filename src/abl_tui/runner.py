"""The runner: owns the engine's thread and asyncio loop, and takes commands from the UI.

The engine thread runs the batch in rounds: the first round sends every item that has no
committed result; later rounds (dashboard only) send items the user asked to retry. The
UI never sees engine objects: it drains :attr:`Runner.events` (a buffer the engine's
observer appends to) into its own :class:`~abl_tui.state.RunState`, and sends commands
through the runner's thread-safe methods.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
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
from async_batch_llm.store import RunStore, StoreError

from .batchfile import BatchFileError, iter_items
from .settings import RunSettings, build_strategy, settings_from_stored, stored_settings
from .state import stored_run

logger = logging.getLogger(__name__)

#: The key under which a run's stored settings keep its items file, for resuming an ingest.
INGEST_FILE = "items_file"

#: Events the UI buffer holds at most; past it the oldest detail is dropped (counts are
#: re-read from the engine's stats, so only worker and failure detail can be lost).
EVENT_BUFFER_LIMIT = 500_000


def _work_item(item: Any, strategy: Any) -> LLMWorkItem[Any, Any, Any]:
    """The engine's work item for a stored item."""
    return LLMWorkItem(item.item_id, strategy, item.prompt, item.context)


class EventBuffer(BaseObserver):
    """Appends ``(event name, payload, wall time)`` to a deque the UI thread drains."""

    def __init__(self, limit: int = EVENT_BUFFER_LIMIT) -> None:
        self.events: deque[tuple[str, dict[str, Any], float]] = deque(maxlen=limit)

    async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        self.on_event_sync(event, data)

    def on_event_sync(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        """Append and return: one deque append per event (thread-safe under the GIL)."""
        self.events.append((event._value_, data, time.time()))  # `.value` is a slow property

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
        self.ready = threading.Event()
        self.done = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._store: RunStore | None = None
        self._processor: ParallelBatchProcessor[Any, Any, Any] | None = None
        self._retry_requests: asyncio.Queue[list[str] | None] | None = None
        self._stopping = False
        self._paused = False
        self._workers: int | None = None
        self._main_task: asyncio.Task[None] | None = None
        self._preload: asyncio.Future[Any] | None = None
        self._new_store = False  # this run created the store file
        self._bad_input = False  # the batch file was refused while being stored

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
            if self.settings is not None:
                self._preload_provider(self.settings)
            self._new_store = not self.plan.db_path.exists()
            self._store = await RunStore.open(self.plan.db_path)
            await self._open_run()
            left = self.initial["total"] - self.initial["succeeded"] - self.initial["failed"]
            if self.plan.settings is None and self.settings is not None and left > 0:
                self._preload_provider(self.settings)
            self.ready.set()
            await self._run_rounds()
        except asyncio.CancelledError:
            self.outcome.interrupted = True
        except (StoreError, BatchFileError) as exc:
            self.outcome.error = str(exc)
            self.outcome.usage_error = True
            self._bad_input = isinstance(exc, BatchFileError)
        except Exception as exc:  # reported to the user, never a silent thread death
            logger.exception("the run failed")
            self.outcome.error = f"{type(exc).__name__}: {exc}"
        finally:
            await self._close()

    async def _finish_ingest(self, run: Any) -> None:
        """Store whatever a crash kept a never-started run from storing: the items after the
        first ``run.total`` (ingest commits in input order), so doing it twice is harmless."""
        assert self._store is not None
        items_file = Path(run.settings.get(INGEST_FILE, ""))
        if not items_file.is_file():
            raise StoreError(
                f"run {run.id} stopped before it started ({run.total} items stored) and its "
                f"items file {items_file} is gone: run the batch again"
            )
        await self._store.ingest(run.id, itertools.islice(iter_items(items_file), run.total, None))

    def _preload_provider(self, settings: RunSettings) -> None:
        """Import litellm in a thread while the batch is ingested (it takes seconds)."""
        if settings.dry_run or self._preload is not None:
            return
        from async_batch_llm.providers._litellm_import import load_litellm

        self._preload = asyncio.get_running_loop().run_in_executor(None, load_litellm)

    async def _open_run(self) -> None:
        store, plan = self._store, self.plan
        assert store is not None
        if plan.run_ref is None:
            assert plan.settings is not None and plan.items_path is not None
            # Where the items come from and how many there are, so a run killed while its
            # batch was being stored can finish storing it on resume.
            settings = {
                **stored_settings(plan.settings),
                INGEST_FILE: str(plan.items_path.resolve()),
            }
            run_id = await store.create_run(
                name=plan.settings.name, source=plan.source, settings=settings
            )
            try:
                await store.ingest(run_id, iter_items(plan.items_path))
            except BatchFileError:
                await store.delete_run(run_id)  # a bad file costs nothing, not even a run
                raise
        else:
            run = await store.get_run(plan.run_ref)
            run_id = run.id
            self.settings = settings_from_stored(run.settings, name=run.name)
            if run.status == "pending":  # never started: a crash may have cut its ingest short
                await self._finish_ingest(run)
            await store.mark_interrupted(run_id)  # close what a crash left under way
            if plan.retry_failed:
                await store.reset_for_retry(run_id, None)
        self.run_id = self.outcome.run_id = run_id
        run = await store.get_run(run_id)
        self.initial = stored_run(run, await store.failed_items(run_id, limit=5_000))

    async def _run_rounds(self) -> None:
        store = self._store
        assert store is not None and self.run_id is not None
        await self._round(self._pending_items())
        while self.plan.keep_open and not self._stopping:
            assert self._retry_requests is not None
            request = await self._retry_requests.get()
            if request is None:
                break
            await self._round(self._items_by_id(request))

    async def _pending_items(self) -> AsyncIterator[Any]:
        assert self._store is not None and self.run_id is not None
        async for item in self._store.pending_items(self.run_id):
            yield item

    async def _items_by_id(self, item_ids: list[str]) -> AsyncIterator[Any]:
        assert self._store is not None and self.run_id is not None
        for item_id in item_ids:
            item = await self._store.item(self.run_id, item_id)
            if item is not None:
                yield item

    def _make_processor(self, observers: list[Any]) -> ParallelBatchProcessor[Any, Any, Any]:
        settings = self.settings
        assert settings is not None
        config = ProcessorConfig(
            max_workers=self._workers or settings.workers,
            timeout_per_item=settings.timeout,
            retry=RetryConfig(max_attempts=settings.max_attempts, initial_wait=1.0, max_wait=30.0),
            rate_limit=RateLimitConfig(
                cooldown_seconds=30.0,
                slow_start_items=settings.workers,
                slow_start_initial_delay=0.5,
            ),
            max_requests_per_minute=settings.rpm,
            max_tokens_per_minute=settings.tpm,
            max_queue_size=max(1_000, 4 * settings.workers),
            dry_run=settings.dry_run,
        )
        return ParallelBatchProcessor(config=config, observers=observers)

    async def _round(self, items: AsyncIterator[Any]) -> None:
        """Send ``items`` (plus any retries asked for meanwhile) and wait until all are done."""
        store, settings = self._store, self.settings
        assert store is not None and settings is not None and self.run_id is not None
        strategy = build_strategy(settings)
        writer = store.observer(self.run_id)
        processor = self._make_processor([writer, self.buffer])
        self._processor = processor
        if self._paused:
            processor.pause()
        await store.set_run_status(self.run_id, "running")
        await processor.start(collect_results=False)
        try:
            async for item in items:
                await processor.add_work(
                    LLMWorkItem(item.item_id, strategy, item.prompt, item.context)
                )
            await self._serve_retries_until_done(processor, strategy)
            await processor.finish()
            await processor.join()
        finally:
            # Stop the workers first, so the writer's last flush holds every result made.
            await processor.shutdown()
            await writer.close()
            self._processor = None
        await self._settle_status()

    async def _serve_retries_until_done(self, processor: Any, strategy: Any) -> None:
        """While items are still under way, retries asked for join this round."""
        queue = self._retry_requests
        assert queue is not None and self._store is not None and self.run_id is not None
        while True:
            stats = await processor.get_stats()
            if stats["queued"] == 0 and queue.empty():
                return
            try:
                request = await asyncio.wait_for(queue.get(), timeout=0.05)
            except TimeoutError:
                continue
            if request is None:
                queue.put_nowait(None)
                return
            async for item in self._items_by_id(request):
                await processor.add_work(
                    LLMWorkItem(item.item_id, strategy, item.prompt, item.context)
                )

    async def _settle_status(self) -> None:
        assert self._store is not None and self.run_id is not None
        run = await self._store.get_run(self.run_id)
        status = "completed" if run.failed == 0 and run.pending == 0 else "failed"
        if run.pending:
            status = "interrupted"
        await self._store.set_run_status(self.run_id, status)
        self.outcome.status = status
        self.outcome.succeeded, self.outcome.failed, self.outcome.total = (
            run.succeeded,
            run.failed,
            run.total,
        )

    async def _close(self) -> None:
        store = self._store
        if store is None:
            return
        if self._bad_input and self._new_store:
            await store.close()
            self._remove_store_files()  # a bad file costs nothing, not even a store file
            return
        try:
            if self.outcome.interrupted and self.run_id is not None:
                processor = self._processor
                if processor is not None:
                    await processor.cancel()
                await store.mark_interrupted(self.run_id)
                run = await store.get_run(self.run_id)
                self.outcome.status = "interrupted"
                self.outcome.succeeded, self.outcome.failed, self.outcome.total = (
                    run.succeeded,
                    run.failed,
                    run.total,
                )
        finally:
            await store.close()

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

    def pause(self) -> None:
        """Start no new attempts until :meth:`resume`."""
        self._paused = True
        self._call(lambda: self._processor.pause() if self._processor else None)

    def resume(self) -> None:
        """Start attempts again."""
        self._paused = False
        self._call(lambda: self._processor.resume() if self._processor else None)

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
        """Interrupt now: items under way are recorded as interrupted; the run stays resumable."""
        self._stopping = True
        self._call(lambda: self._main_task.cancel() if self._main_task else None)

    def fetch_item(self, item_id: str) -> concurrent.futures.Future[Any]:
        """An item's stored detail (prompt, output, error, attempt history), read in the engine
        loop; the future's result is the store's item record, or None."""
        return self._read(lambda store: store.item(self.run_id, item_id))

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

    def stats(self) -> dict[str, Any] | None:
        """The engine's live counters for this round (read across threads: ints only)."""
        processor = self._processor
        return processor._stats.as_dict() if processor is not None else None
