"""The run store's writer thread: one plain ``sqlite3`` connection that commits folded rows.

The observer (:class:`~.writer.StoreObserver`) folds events into rows in the engine's
loop and hands them over here every ``flush_interval``; this thread commits each hand-over
in ONE transaction (:mod:`.statements`), or several hand-overs in one when it has fallen
behind. A commit that fails keeps its rows, which go again, first, with the next commit
(tried again after ``retry_interval`` if nothing new comes).

Why a thread of its own, with the stdlib ``sqlite3``, and not the store's aiosqlite
connection? Every awaited aiosqlite call is a round trip through the loop: a flush made
several, and while the engine kept the loop busy its statements waited on the loop far
longer than SQLite worked (measured: ~40 us per row under a dry run, ~11 us of it SQLite).
Here the loop takes no part in a commit: the thread runs it start to end, SQLite's work
and the file's syncs happen without the GIL, and the loop hears back only where it waits
(:meth:`Committer.submit` with a waiter) and through ``notify`` after each commit.
Everything else in the store stays on aiosqlite; the two connections are kept apart by
SQLite's own write lock (``BEGIN IMMEDIATE`` with a busy timeout), and WAL lets readers
carry on meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import NamedTuple

from .lease import check_owner
from .rows import Segment
from .schema import WRITER_PRAGMAS
from .statements import write_segments

logger = logging.getLogger("async_batch_llm.store")


#: Events handed over but not committed beyond which the workers wait for the thread.
BACKLOG = 100_000


class _Job(NamedTuple):
    """One hand-over: rows of ``events`` events, and who waits for their commit."""

    segments: list[Segment]
    events: int
    finals: int  # of which final results (counted only for back-pressure, else 0)
    waiter: asyncio.Future[None] | None
    stop: bool


class Committer:
    """The thread that owns the writer connection of one run; started at construction.

    :meth:`submit` is called from the loop; the counters are written by the thread only
    and may be read from anywhere.
    """

    def __init__(
        self,
        uri: str,
        run_id: str,
        *,
        busy_timeout: float,
        retry_interval: float,
        label: str,
        owner: str | None = None,
        notify: Callable[[], None] | None = None,
    ) -> None:
        self.uri = uri
        self.run_id = run_id
        self.busy_timeout = busy_timeout
        self.retry_interval = retry_interval
        self.label = label
        #: The lease owner each commit checks first (None: no check).
        self.owner = owner
        #: Called in the loop after every commit or failed commit (back-pressure).
        self._notify = notify
        self._loop = asyncio.get_running_loop() if notify is not None else None
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._committed = threading.Event()  # set after each commit (or failed commit)
        self._db: sqlite3.Connection | None = None
        self._unwritten: list[Segment] = []
        self._unwritten_events = 0
        self._unwritten_finals = 0
        self._timeout_set = busy_timeout  # the busy timeout of the open connection
        #: Events handed over (by the loop), committed, commits made, the most events in
        #: one commit, and the last write error (None once a later commit succeeds).
        self.submitted = 0
        self.events_written = 0
        self.finals_written = 0
        self.flushes = 0
        self.largest_flush = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"run-store-writer:{run_id}", daemon=True
        )
        self._thread.start()

    # ------------------------------------------------------------------ loop side

    def submit(
        self,
        segments: list[Segment],
        events: int,
        waiter: asyncio.Future[None] | None = None,
        *,
        stop: bool = False,
        finals: int = 0,
    ) -> None:
        """Hand over rows to commit; ``waiter`` is settled once they are (or fail to be).

        With ``stop=True`` the thread closes its connection and ends after that commit.
        ``finals``: how many of the events are final results (see ``finals_written``).
        """
        self.submitted += events
        self._jobs.put(_Job(segments, events, finals, waiter, stop))

    @property
    def pending(self) -> int:
        """Events handed over and not yet committed."""
        return self.submitted - self.events_written

    @property
    def alive(self) -> bool:
        """False once the thread has ended."""
        return self._thread.is_alive()

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        jobs = self._jobs
        stop = False
        try:
            while not stop:
                try:
                    job = jobs.get(timeout=self.retry_interval if self._unwritten else None)
                except queue.Empty:  # nothing new: try the rows a failed commit left again
                    batch: list[_Job] = []
                else:
                    batch = [job]
                    while not jobs.empty():  # fallen behind: one transaction for them all
                        batch.append(jobs.get_nowait())
                error = self._commit(batch)
                self._committed.set()
                if self._loop is not None and self._notify is not None:
                    with contextlib.suppress(RuntimeError):  # the loop has closed
                        self._loop.call_soon_threadsafe(self._notify)
                stop = any(job.stop for job in batch)
                if stop:
                    self._close()  # before the waiter hears: closed means closed
                for job in batch:
                    if job.waiter is not None:
                        _settle(job.waiter, error)
        finally:
            self._close()
            while not jobs.empty():  # only after a bug: nobody may wait for ever
                waiter = jobs.get_nowait().waiter
                if waiter is not None:
                    _settle(waiter, RuntimeError("the run store's writer has stopped"))

    def _commit(self, batch: list[_Job]) -> BaseException | None:
        """Commit what ``batch`` holds after what a failed commit left; None or the error."""
        segments = self._unwritten
        events, finals = self._unwritten_events, self._unwritten_finals
        for job in batch:
            segments = segments + job.segments
            events += job.events
            finals += job.finals
        if not segments:
            return None
        self._unwritten, self._unwritten_events, self._unwritten_finals = [], 0, 0
        try:
            db = self._db or self._connect()
            if self._timeout_set != self.busy_timeout:  # lowered meanwhile (see close)
                db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
                self._timeout_set = self.busy_timeout
            db.execute("BEGIN IMMEDIATE")
            if self.owner is not None:
                check_owner(db, self.run_id, self.owner)
            write_segments(db, self.run_id, segments)
            db.execute("COMMIT")
        except Exception as exc:
            # Closing rolls back whatever was begun; the next try starts on a fresh connection.
            with contextlib.suppress(Exception):
                self._close()
            self._unwritten, self._unwritten_events = segments, events
            self._unwritten_finals = finals
            if self.error is None:
                logger.error(
                    "run store %s: could not write %d events of run %s (kept, will retry): %s",
                    self.label,
                    events,
                    self.run_id,
                    exc,
                )
            self.error = exc
            return exc
        self.error = None
        self.events_written += events
        self.finals_written += finals
        self.flushes += 1
        self.largest_flush = max(self.largest_flush, events)
        return None

    def _close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        """The writer's connection, with the per-connection settings :meth:`RunStore.open` uses."""
        db = sqlite3.connect(self.uri, uri=True, isolation_level=None, timeout=self.busy_timeout)
        try:
            db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            self._timeout_set = self.busy_timeout
            for pragma in WRITER_PRAGMAS:
                db.execute(pragma)
        except BaseException:
            db.close()
            raise
        self._db = db
        return db


def _settle(waiter: asyncio.Future[None], error: BaseException | None) -> None:
    """Settle ``waiter`` from the thread, in its own loop (a closed loop has nobody waiting)."""
    with contextlib.suppress(RuntimeError):
        waiter.get_loop().call_soon_threadsafe(_set, waiter, error)


def _set(waiter: asyncio.Future[None], error: BaseException | None) -> None:
    if waiter.done():  # cancelled meanwhile
        return
    if error is None:
        waiter.set_result(None)
    else:
        waiter.set_exception(error)
