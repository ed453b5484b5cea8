"""The run store's writer: an observer that only appends, and one task that commits in batches.

``on_event`` never awaits: it appends ``(event, payload, time)`` to a list, one function
call per event on the engine's hot path. A single writer task in the engine's loop takes
the whole list every ``flush_interval`` (sooner once it holds ``flush_rows`` events),
folds it into row tuples and commits them in ONE transaction: item updates, attempt rows
and run status together. An item is done only once that commit has happened.

Folding merges each item's events within a flush (an item that starts and finishes
between two flushes costs one item update and one attempt row), which makes the
statements independent of their order; the rare item that starts a new session within
the same flush (a retry added while the run goes on) begins a new segment, applied after
the first one in the same transaction.
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
from .encode import encode_output
from .errors import StoreError

logger = logging.getLogger("async_batch_llm.store")

_STARTED = ProcessingEvent.ITEM_STARTED
_COMPLETED = ProcessingEvent.ITEM_COMPLETED
_FAILED = ProcessingEvent.ITEM_FAILED
_RETRY = ProcessingEvent.ITEM_RETRY
_RATE_LIMIT = ProcessingEvent.RATE_LIMIT_HIT
_BATCH_STARTED = ProcessingEvent.BATCH_STARTED
_BATCH_COMPLETED = ProcessingEvent.BATCH_COMPLETED

# A session is one pass of the engine over an item (attempts 1..n). ``attempt_base`` holds
# the attempts of earlier sessions, set when a session's first attempt starts, so attempt
# numbers go on across resumes and retries by hand: stored attempt = base + engine attempt.
_SESSION_BASE = "CASE WHEN ?1 THEN attempts ELSE attempt_base END"

ITEM_RUNNING_SQL = f"""
UPDATE items SET
  status = 'running',
  attempt_base = {_SESSION_BASE},
  attempts = MAX(attempts, {_SESSION_BASE} + ?2),
  started_at = CASE WHEN ?1 THEN ?3 ELSE started_at END,
  output = CASE WHEN ?1 THEN NULL ELSE output END,
  output_json = CASE WHEN ?1 THEN 0 ELSE output_json END,
  error = CASE WHEN ?1 THEN NULL ELSE error END,
  error_category = CASE WHEN ?1 THEN NULL ELSE error_category END,
  finished_at = CASE WHEN ?1 THEN NULL ELSE finished_at END,
  duration = CASE WHEN ?1 THEN NULL ELSE duration END
WHERE run_id = ?4 AND item_id = ?5
"""

# Tokens and cost add up over sessions: a failed session's tokens were paid for.
ITEM_FINAL_SQL = f"""
UPDATE items SET
  status = ?15,
  attempt_base = {_SESSION_BASE},
  attempts = MAX(attempts, {_SESSION_BASE} + ?2),
  started_at = COALESCE(?3, started_at),
  output = ?6, output_json = ?7, error = ?8, error_category = ?9,
  input_tokens = input_tokens + ?10,
  output_tokens = output_tokens + ?11,
  cached_tokens = cached_tokens + ?12,
  cost = CASE WHEN ?13 IS NULL THEN cost ELSE COALESCE(cost, 0) + ?13 END,
  finished_at = ?14, duration = ?16
WHERE run_id = ?4 AND item_id = ?5
"""

# Upsert, so an attempt started in one flush is closed in a later one; the first outcome
# wins (a rate-limited last attempt stays rate_limited when the item then fails). Items
# the store does not hold are skipped by the join, never an error.
ATTEMPT_SQL = """
INSERT INTO attempts (run_id, item_id, attempt, started_at, ended_at, duration, outcome,
                      error, error_category, wait)
SELECT ?1, ?2, attempt_base + ?3, ?4, ?5, ?5 - ?4, ?6, ?7, ?8, ?9
FROM items WHERE run_id = ?1 AND item_id = ?2
ON CONFLICT (run_id, item_id, attempt) DO UPDATE SET
  started_at = COALESCE(attempts.started_at, excluded.started_at),
  ended_at = CASE WHEN attempts.outcome IS NULL THEN excluded.ended_at
                  ELSE attempts.ended_at END,
  duration = CASE WHEN attempts.outcome IS NULL
                  THEN excluded.ended_at - COALESCE(attempts.started_at, excluded.started_at)
                  ELSE attempts.duration END,
  error = CASE WHEN attempts.outcome IS NULL THEN excluded.error ELSE attempts.error END,
  error_category = CASE WHEN attempts.outcome IS NULL THEN excluded.error_category
                        ELSE attempts.error_category END,
  wait = CASE WHEN attempts.outcome IS NULL THEN excluded.wait ELSE attempts.wait END,
  outcome = COALESCE(attempts.outcome, excluded.outcome)
"""

RUN_STARTED_SQL = """
UPDATE runs SET status = 'running', started_at = COALESCE(started_at, ?1), finished_at = NULL
WHERE id = ?2
"""

# A batch that ends with items not done (a cancel, or only part of the run was sent)
# leaves the run resumable: interrupted, not completed.
RUN_COMPLETED_SQL = """
UPDATE runs SET
  finished_at = ?1,
  status = CASE WHEN EXISTS (SELECT 1 FROM items WHERE run_id = ?2
                             AND status IN ('pending', 'running', 'interrupted'))
           THEN 'interrupted' ELSE 'completed' END
WHERE id = ?2
"""


class Segment:
    """Rows of one flush (or of the part of it before an item starts a new session)."""

    __slots__ = ("attempts", "items", "run_ops")

    def __init__(self) -> None:
        # item_id -> [new session, attempts, session start, final fields or None]
        self.items: dict[str, list[Any]] = {}
        # (item_id, engine attempt) -> [started, ended, outcome, error, category, wait]
        self.attempts: dict[tuple[str, int], list[Any]] = {}
        self.run_ops: list[tuple[str, float]] = []

    def rows(self, run_id: str) -> tuple[list[tuple[Any, ...]], ...]:
        """``(running item rows, final item rows, attempt rows)`` as the statements take them."""
        running: list[tuple[Any, ...]] = []
        final: list[tuple[Any, ...]] = []
        for item_id, (new, count, start, end) in self.items.items():
            if end is None:
                running.append((new, count, start, run_id, item_id))
            else:
                final.append((new, count, start, run_id, item_id, *end))
        attempts = [
            (run_id, item_id, attempt, *fields)
            for (item_id, attempt), fields in self.attempts.items()
        ]
        return running, final, attempts


def fold(events: list[tuple[ProcessingEvent, dict[str, Any], float]]) -> list[Segment]:
    """Fold events, in order, into segments of merged rows (see the module docstring)."""
    segment = Segment()
    segments = [segment]
    for event, data, now in events:
        if event is _STARTED:
            item_id, attempt = data["item_id"], data.get("attempt", 1)
            state = segment.items.get(item_id)
            if state is not None and (attempt == 1 or state[3] is not None):
                segment = Segment()
                segments.append(segment)
                state = None
            if state is None:
                first = attempt == 1
                segment.items[item_id] = [first, attempt, now if first else None, None]
            elif attempt > state[1]:
                state[1] = attempt
            segment.attempts[(item_id, attempt)] = [now, None, None, None, None, None]
        elif event is _COMPLETED or event is _FAILED:
            item_id = data["item_id"]
            state = segment.items.get(item_id)
            if state is not None and state[3] is not None:
                segment = Segment()
                segments.append(segment)
                state = None
            count = data.get("attempts") or 0
            result = data.get("result")
            tokens = data.get("tokens") or (result.token_usage if result is not None else {})
            duration = data.get("duration")
            if event is _COMPLETED:
                text, is_json = encode_output(result.output if result is not None else None)
                status, error, category, outcome = "succeeded", None, None, "ok"
            else:
                text, is_json = None, 0
                status, outcome = "failed", "failed"
                error, category = data.get("error"), data.get("error_category")
            if state is None:
                start = now - duration if count == 0 and duration is not None else None
                state = segment.items[item_id] = [False, count, start, None]
            elif count > state[1]:
                state[1] = count
            state[3] = (
                text,
                is_json,
                error,
                category,
                tokens.get("input_tokens", 0),
                tokens.get("output_tokens", 0),
                tokens.get("cached_input_tokens", 0),
                data.get("cost"),
                now,
                status,
                duration,
            )
            if count:
                _close(segment, item_id, count, now, outcome, error, category, None)
        elif event is _RETRY:
            _close(
                segment,
                data["item_id"],
                data.get("attempt", 1),
                now,
                "retry",
                data.get("error"),
                data.get("error_category"),
                data.get("wait"),
            )
        elif event is _RATE_LIMIT:
            _close(
                segment,
                data["item_id"],
                data.get("attempt", 1),
                now,
                "rate_limited",
                data.get("error"),
                "rate_limit",
                data.get("suggested_wait"),
            )
        elif event is _BATCH_STARTED:
            segment.run_ops.append((RUN_STARTED_SQL, now))
        elif event is _BATCH_COMPLETED:
            segment.run_ops.append((RUN_COMPLETED_SQL, now))
    return segments


def _close(
    segment: Segment,
    item_id: str,
    attempt: int,
    now: float,
    outcome: str,
    error: str | None,
    category: str | None,
    wait: float | None,
) -> None:
    """End an attempt with ``outcome`` unless an earlier event already ended it."""
    fields = segment.attempts.get((item_id, attempt))
    if fields is None:
        segment.attempts[(item_id, attempt)] = [None, now, outcome, error, category, wait]
    elif fields[2] is None:
        fields[1:] = [now, outcome, error, category, wait]


async def write_segments(db: aiosqlite.Connection, run_id: str, segments: list[Segment]) -> None:
    """Apply folded segments inside the caller's transaction, in order."""
    for segment in segments:
        running, final, attempts = segment.rows(run_id)
        if running:
            await db.executemany(ITEM_RUNNING_SQL, running)
        if final:
            await db.executemany(ITEM_FINAL_SQL, final)
        if attempts:
            await db.executemany(ATTEMPT_SQL, attempts)
        for sql, now in segment.run_ops:
            await db.execute(sql, (now, run_id))


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
        self._buffer: list[tuple[ProcessingEvent, dict[str, Any], float]] = []
        self._unwritten: list[tuple[ProcessingEvent, dict[str, Any], float]] = []
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
