"""The run store's writer: an observer that only appends, and one task that commits in batches.

``on_event`` never awaits: it appends ``(event, payload, time)`` to a list, one function
call per event on the engine's hot path. A single writer task in the engine's loop takes
the whole list every ``flush_interval`` (sooner once it holds ``flush_rows`` events),
folds it into rows (:mod:`.rows`) and commits them in ONE transaction (:mod:`.statements`):
item updates, attempt rows and run totals together. An item is done only once that
commit has happened. A flush that fails keeps its events and is tried again next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import aiosqlite

from ..observers.base import BaseObserver, ProcessingEvent
from .errors import StoreError
from .rows import Event, fold
from .statements import write_segments

logger = logging.getLogger("async_batch_llm.store")


class _Store(Protocol):
    """What the writer needs of :class:`~async_batch_llm.store.sqlite.RunStore`."""

    path: Any

    def transaction(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

    def _forget_observer(self, observer: StoreObserver) -> None: ...


class StoreObserver(BaseObserver):
    """Records one run's events in the store; attach it to a processor's observers.

    Call :meth:`close` when the processor is done (it commits everything left and stops
    the writer); :meth:`flush` commits what has been seen so far and waits for it.
    """

    def __init__(
        self,
        store: _Store,
        run_id: str,
        *,
        flush_interval: float = 0.05,
        flush_rows: int = 5_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if flush_interval <= 0:
            raise ValueError(f"flush_interval must be > 0, got {flush_interval!r}")
        if flush_rows < 1:
            raise ValueError(f"flush_rows must be >= 1, got {flush_rows!r}")
        self.store = store
        self.run_id = run_id
        self.flush_interval = flush_interval
        self.flush_rows = flush_rows
        self._clock = clock
        self._buffer: list[Event] = []
        self._unwritten: list[Event] = []
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._closing = False
        self._closed = False
        self._dropped = 0
        #: Events committed so far, flushes made, and the last write error (None once a
        #: later flush succeeds): for tests, benchmarks and a dashboard's health line.
        self.events_written = 0
        self.flushes = 0
        self.largest_flush = 0
        self.error: BaseException | None = None

    # ------------------------------------------------------------------ the hot path

    async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        self.on_event_sync(event, data)

    def on_event_sync(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        """Append the event and return: the engine calls this in place, once per event."""
        buffer = self._buffer
        buffer.append((event, data, self._clock()))
        if len(buffer) >= self.flush_rows or self._task is None:
            self._poke()

    def _poke(self) -> None:
        """Start the writer on the first event; wake it early when the buffer is full."""
        if self._task is not None:
            self._wake.set()  # type: ignore[union-attr]
        elif not self._closed:
            self._start()
        else:
            if not self._dropped:
                logger.warning(
                    "run store: events of run %s arrived after its observer was closed; "
                    "they are not recorded",
                    self.run_id,
                )
            self._dropped += len(self._buffer)
            self._buffer.clear()

    # ------------------------------------------------------------------ the writer task

    async def start(self) -> None:
        """Start the writer task now (otherwise the first event starts it)."""
        if self._task is None:
            self._start()

    def _start(self) -> None:
        if self._closed:
            raise StoreError(f"the store observer of run {self.run_id!r} is closed")
        self._lock = self._lock or asyncio.Lock()
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"run-store-writer:{self.run_id}"
        )

    async def _run(self) -> None:
        wake = self._wake
        assert wake is not None
        while not self._closing:
            try:
                async with asyncio.timeout(self.flush_interval):
                    await wake.wait()
            except TimeoutError:
                pass
            wake.clear()
            # A failed flush is logged and its rows stay buffered, to be tried again.
            with contextlib.suppress(Exception):
                await self._flush()

    async def _flush(self) -> None:
        """Commit every buffered event in one transaction (under the writer's lock)."""
        lock = self._lock
        if lock is None:
            return
        async with lock:
            batch = self._buffer
            if not batch and not self._unwritten:
                return
            self._buffer = []
            if self._unwritten:
                batch = self._unwritten + batch
                self._unwritten = []
            try:
                segments = fold(batch)
                async with self.store.transaction() as db:
                    await write_segments(db, self.run_id, segments)
            except BaseException as exc:
                self._unwritten = batch
                if self.error is None:
                    logger.error(
                        "run store %s: could not write %d events of run %s (kept, will retry): %s",
                        self.store.path,
                        len(batch),
                        self.run_id,
                        exc,
                    )
                self.error = exc
                raise
            self.error = None
            self.events_written += len(batch)
            self.flushes += 1
            self.largest_flush = max(self.largest_flush, len(batch))

    async def flush(self) -> None:
        """Commit everything seen so far; raises :class:`StoreError` if it cannot be written."""
        if self._lock is None:
            if not self._buffer:
                return
            self._lock = asyncio.Lock()
        try:
            await self._flush()
        except Exception as exc:
            raise StoreError(
                f"{self.store.path}: could not record run {self.run_id}: {exc}"
            ) from exc

    async def close(self) -> None:
        """Commit everything left, stop the writer and detach from the store (idempotent)."""
        if self._closed:
            return
        self._closing = True
        try:
            await self.flush()
        finally:
            self._closed = True
            task, self._task = self._task, None
            if task is not None:
                if self._wake is not None:
                    self._wake.set()
                try:
                    await task
                except asyncio.CancelledError:
                    if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                        raise
            self.store._forget_observer(self)

    @property
    def buffered(self) -> int:
        """Events seen but not yet committed."""
        return len(self._buffer) + len(self._unwritten)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._closed
