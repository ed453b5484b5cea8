"""The run store's writer: an observer that only appends, folds in the loop, commits in a thread.

``on_event`` never awaits: it appends the event, its payload and the time to a list, one
function call per event on the engine's hot path. That list is folded into rows
(:mod:`.rows`) every ``FOLD_EVENTS`` events, and by a timer in the engine's loop every
``FOLD_INTERVAL`` while events come; every ``flush_interval`` (sooner once ``flush_rows``
events are folded) the rows go to the writer thread (:mod:`.committer`), which commits
them in ONE transaction: item updates, attempt rows and run totals together. An item is
done only once that commit has happened. A commit that fails keeps its rows and is tried
again.

Why fold in the loop, and so often? Folding turns payloads into flat rows of plain values,
which the garbage collector stops looking at. Payloads kept until a commit, or only until
the next timer (which a busy loop runs late), outlive young collections, and the more of
them there are, the more often the collector walks the whole heap. Measured on a dry run
of 100,000 items: six full collections where the engine alone makes one when payloads
waited for commits, three when they waited for the timer, one (as without the store) when
every 128 events are folded at once. Folding in the writer's thread would not help: a
thread waiting for the GIL behind a busy loop can wait for seconds (see
:meth:`StoreObserver.hold_workers`), and payloads would pile up meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from ..observers.base import BaseObserver, ProcessingEvent
from .committer import BACKLOG, Committer
from .errors import StoreError
from .rows import FOLDED_EVENTS, Event, Requests, Segment, fold

logger = logging.getLogger("async_batch_llm.store")

#: Seconds between folds while events come (at most ``flush_interval``).
FOLD_INTERVAL = 0.01
#: Seconds the workers pause after a fold while the writer has rows to commit (see
#: :meth:`StoreObserver.hold_workers`): at most a tenth of the loop's time.
HANDOFF = 0.001
#: Events that are folded at once, without waiting for the next fold's time.
FOLD_EVENTS = 128
#: Seconds a commit waits for another connection's write lock before it fails (and is
#: tried again, its rows kept): short, so that a lock held by another process is known
#: (and dispatch held back) within a second rather than after the store's busy timeout.
WRITER_BUSY_TIMEOUT = 1.0

_COMPLETED = ProcessingEvent.ITEM_COMPLETED
_FAILED = ProcessingEvent.ITEM_FAILED


class _Store(Protocol):
    """What the writer needs of :class:`~async_batch_llm.store.sqlite.RunStore`."""

    path: Any
    uri: str
    busy_timeout: float

    def _forget_observer(self, observer: StoreObserver) -> None: ...


class StoreObserver(BaseObserver):
    """Records one run's events in the store; attach it to a processor's observers.

    Call :meth:`close` when the processor is done (it commits everything left and stops
    the writer); :meth:`flush` commits what has been seen so far and waits for it.

    Back-pressure (``max_unsettled``): results paid for but not yet committed are money at
    risk if the store cannot take them (disk full, file locked). Given a limit, the writer
    counts final results as they come; past half the limit it hands them to the writer
    thread at once (instead of at the next flush), and at the limit, or as soon as a
    commit fails, it sets :attr:`blocked` and calls :attr:`on_pressure` (True), so the
    owner pauses dispatch; once commits catch up it calls ``on_pressure(False)``. With
    dispatch paused only the calls already under way can still be answered, so at most
    ``max_unsettled`` + the worker count answers are ever paid and not stored.
    """

    #: What the store records: worker and cooldown events are not even delivered.
    wanted_events: ClassVar[frozenset[ProcessingEvent] | None] = FOLDED_EVENTS

    def __init__(
        self,
        store: _Store,
        run_id: str,
        *,
        flush_interval: float = 0.05,
        flush_rows: int = 5_000,
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
        max_unsettled: int | None = None,
    ) -> None:
        if flush_interval <= 0:
            raise ValueError(f"flush_interval must be > 0, got {flush_interval!r}")
        if flush_rows < 1:
            raise ValueError(f"flush_rows must be >= 1, got {flush_rows!r}")
        if max_unsettled is not None and max_unsettled < 1:
            raise ValueError(f"max_unsettled must be >= 1, got {max_unsettled!r}")
        self.store = store
        self.run_id = run_id
        self.owner = owner
        self.max_unsettled = max_unsettled
        self._hurry_at = max(1, max_unsettled // 2) if max_unsettled else 0
        self._finals_seen = 0  # final results seen (counted only with max_unsettled)
        self._finals_handed = 0  # ... and handed to the writer thread
        #: True while dispatch should wait for the store (see the class docstring).
        self.blocked = False
        #: Loop time since which :attr:`blocked` has been True.
        self.blocked_since = 0.0
        #: Called with the new value of :attr:`blocked` whenever it changes.
        self.on_pressure: Callable[[bool], None] | None = None
        self.flush_interval = flush_interval
        self.flush_rows = flush_rows
        self._clock = clock
        self._fold_interval = min(flush_interval, FOLD_INTERVAL)
        self._buffer: list[Event] = []  # seen, not yet folded
        self._segments: list[Segment] = []  # folded, not yet handed over
        self._folded = 0  # events in _segments
        self._requests: Requests = {}  # what replays under way sent (see note_request)
        self._idle = True  # no fold scheduled: the next event schedules one
        self._timer: asyncio.TimerHandle | None = None
        self._handed_at = float("-inf")  # loop time of the last hand-over
        self._committer: Committer | None = None
        # Set while the workers may go on; cleared for a hand-off to the writer thread.
        self._writer_turn_over = asyncio.Event()
        self._writer_turn_over.set()
        self._turn_timer: asyncio.TimerHandle | None = None
        self._backlogged = False  # over BACKLOG events wait for a commit
        self._closed = False
        self._dropped = 0
        # The counters of a closed writer's thread, kept once it is gone.
        self._final: tuple[int, int, int, BaseException | None] = (0, 0, 0, None)

    # ------------------------------------------------------------------ the hot path

    async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        self.on_event_sync(event, data)

    def on_event_sync(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        """Append the event and return: the engine calls this in place, once per event.

        One append and a length check; every ``FOLD_EVENTS`` events it folds them at once.
        """
        buffer = self._buffer
        buffer.append((event, data, self._clock()))
        if self._hurry_at and (event is _COMPLETED or event is _FAILED):
            self._finals_seen += 1
            if self._finals_seen - self._finals_committed() >= self._hurry_at:
                self._hurry()
        if self._idle or len(buffer) >= FOLD_EVENTS:
            self._wake()

    def _wake(self) -> None:
        """Schedule the next fold (starting the writer on the first event), or fold now if
        ``FOLD_EVENTS`` wait; drop events that arrive after :meth:`close`."""
        if self._closed:
            if not self._dropped:
                logger.warning(
                    "run store: events of run %s arrived after its observer was closed; "
                    "they are not recorded",
                    self.run_id,
                )
            self._dropped += len(self._buffer)
            self._buffer.clear()
            return
        if not self._idle:  # a fold is scheduled, but this many payloads should not wait
            self._fold()
            return
        if self._committer is None:
            self._start()
        self._idle = False
        self._timer = asyncio.get_running_loop().call_later(self._fold_interval, self._tick)

    def _tick(self) -> None:
        """Fold what came since the last tick; hand the rows over once a flush is due."""
        self._timer = None
        if self._buffer:
            self._fold()
        elif not self._folded:
            self._idle = True  # nothing came: sleep until the next event
            return
        loop = asyncio.get_running_loop()
        if self._folded >= self.flush_rows or loop.time() - self._handed_at >= self.flush_interval:
            self._hand_over(None)
        self._give_writer_a_turn(loop)
        self._timer = loop.call_later(self._fold_interval, self._tick)

    def note_request(self, item_id: str, prompt: str | None, parameters: str | None) -> None:
        """The item's next session is a replay that sends ``prompt`` with ``parameters``
        (JSON, secrets already stripped; None: the item's prompt, the run's settings): its
        attempts record them. Call it before the item is given to the engine; events seen
        before are folded first, so an earlier session never takes the replay's request."""
        if self._buffer:
            self._fold()
        self._requests[item_id] = (prompt, parameters)

    def _fold(self) -> None:
        buffer, self._buffer = self._buffer, []
        self._segments = fold(buffer, self._segments, self._requests)
        self._folded += len(buffer)

    def _hand_over(self, waiter: asyncio.Future[None] | None, *, stop: bool = False) -> None:
        committer = self._committer
        assert committer is not None
        segments, events = self._segments, self._folded
        self._segments, self._folded = [], 0
        self._handed_at = asyncio.get_running_loop().time()
        finals, self._finals_handed = self._finals_seen - self._finals_handed, self._finals_seen
        committer.submit(segments, events, waiter, stop=stop, finals=finals)

    # ------------------------------------------------------------------ the writer's turn

    async def hold_workers(self) -> None:
        """Called by every worker between items now and then: wait while the writer has
        its turn (the engine's hook for observers whose work runs beside the loop).

        Why: a thread that waits for the GIL while the loop is busy can wait for seconds.
        CPython asks the GIL's holder to let go only once a waiter has waited 5 ms with no
        hand-over in between, and a busy loop lets go and takes back the GIL every time it
        polls: the waiter wakes, finds the GIL taken again, and waits anew. So after a fold,
        while the writer has rows to commit, the workers pause for ``HANDOFF`` seconds: the
        loop goes idle (timers and I/O still run), lets go of the GIL, and the writer binds
        its next statement and runs it in SQLite, without the GIL, beside the loop. Past
        ``BACKLOG`` uncommitted events the workers wait for a commit instead (memory stays
        bounded when results come faster than SQLite takes them, as a dry run's can).
        """
        if not self._writer_turn_over.is_set():
            await self._writer_turn_over.wait()

    def _give_writer_a_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """After a fold: hold the workers back briefly if the writer has rows to commit."""
        committer = self._committer
        if committer is None or committer.pending == 0 or committer.error is not None:
            return
        if committer.pending > BACKLOG and committer.alive:
            self._backlogged = True  # the next commit ends the turn (see _after_commit)
            self._writer_turn_over.clear()
        elif self._turn_timer is None and self._writer_turn_over.is_set():
            self._writer_turn_over.clear()
            self._turn_timer = loop.call_later(HANDOFF, self._end_writer_turn)

    def _end_writer_turn(self) -> None:
        self._turn_timer = None
        if not self._backlogged:
            self._writer_turn_over.set()

    # ------------------------------------------------------------------ back-pressure

    def _finals_committed(self) -> int:
        committer = self._committer
        return committer.finals_written if committer is not None else 0

    @property
    def unsettled(self) -> int:
        """Final results seen and not yet committed (counted only with ``max_unsettled``)."""
        return self._finals_seen - self._finals_committed()

    def _hurry(self) -> None:
        """Results wait uncommitted: hand them over now if the writer thread is idle, and
        at ``max_unsettled`` ask for dispatch to stop."""
        committer = self._committer
        if committer is None or self._closed:
            return
        if committer.pending == 0 and committer.error is None:
            if self._buffer:
                self._fold()
            self._hand_over(None)
        limit = self.max_unsettled
        if not self.blocked and limit is not None and self.unsettled >= limit:
            self._set_blocked(True)

    def _after_commit(self) -> None:
        """In the loop, after each commit or failed commit: end a backlogged writer's turn,
        hurry what waits, and block or unblock dispatch."""
        committer = self._committer
        if committer is None:
            return
        if self._backlogged and (committer.pending <= BACKLOG or committer.error is not None):
            self._backlogged = False
            if self._turn_timer is None:
                self._writer_turn_over.set()
        if self.max_unsettled is None:
            return
        unsettled = self.unsettled
        if unsettled >= self._hurry_at and committer.pending == 0 and committer.error is None:
            if self._buffer:
                self._fold()
            if self._folded:
                self._hand_over(None)
        blocked = committer.error is not None or unsettled >= self.max_unsettled
        if blocked != self.blocked:
            self._set_blocked(blocked)

    def _set_blocked(self, blocked: bool) -> None:
        self.blocked = blocked
        if blocked:
            self.blocked_since = asyncio.get_running_loop().time()
        if self.on_pressure is not None:
            self.on_pressure(blocked)

    # ------------------------------------------------------------------ the writer

    async def start(self) -> None:
        """Start the writer thread now (otherwise the first event starts it)."""
        if self._committer is None:
            self._start()

    def _start(self) -> None:
        if self._closed:
            raise StoreError(f"the store observer of run {self.run_id!r} is closed")
        self._committer = Committer(
            self.store.uri,
            self.run_id,
            busy_timeout=min(self.store.busy_timeout, WRITER_BUSY_TIMEOUT),
            retry_interval=self.flush_interval,
            label=str(self.store.path),
            owner=self.owner,
            notify=self._after_commit,
        )

    async def flush(self) -> None:
        """Commit everything seen so far; raises :class:`StoreError` if it cannot be written."""
        if self._committer is not None:
            await self._commit_now(stop=False)

    async def close(self, *, busy_timeout: float | None = None) -> None:
        """Commit everything left, stop the writer and detach from the store (idempotent).

        ``busy_timeout``: how long that last commit may wait for a lock another process
        holds (default: the store's), e.g. short when the run is being given up.
        """
        if self._closed:
            return
        if busy_timeout is not None and self._committer is not None:
            self._committer.busy_timeout = busy_timeout  # read when it next connects
        self._closed = True
        self._idle = True  # so that a late event finds the observer closed
        self._backlogged = False
        self._writer_turn_over.set()  # no worker waits on a writer that is going away
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            if self._committer is not None:
                await self._commit_now(stop=True)
        finally:
            committer, self._committer = self._committer, None
            if committer is not None:
                self._final = (
                    committer.events_written,
                    committer.flushes,
                    committer.largest_flush,
                    committer.error,
                )
            self.store._forget_observer(self)

    async def _commit_now(self, *, stop: bool) -> None:
        """Fold and hand over everything, then wait for its commit (and that of all before)."""
        if self._buffer:
            self._fold()
        waiter = asyncio.get_running_loop().create_future()
        self._hand_over(waiter, stop=stop)
        try:
            await waiter
        except Exception as exc:
            raise StoreError(
                f"{self.store.path}: could not record run {self.run_id}: {exc}"
            ) from exc

    # ------------------------------------------------------------------ state

    @property
    def buffered(self) -> int:
        """Events seen but not yet committed."""
        committer = self._committer
        pending = committer.pending if committer is not None else 0
        return len(self._buffer) + self._folded + pending

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._closed

    @property
    def events_written(self) -> int:
        """Events committed so far (for tests, benchmarks and a dashboard's health line)."""
        return self._counters()[0]

    @property
    def flushes(self) -> int:
        """Transactions committed so far."""
        return self._counters()[1]

    @property
    def largest_flush(self) -> int:
        """Events in the biggest commit so far."""
        return self._counters()[2]

    @property
    def error(self) -> BaseException | None:
        """The last write error; None once a later commit succeeds."""
        return self._counters()[3]

    def _counters(self) -> tuple[int, int, int, BaseException | None]:
        committer = self._committer
        if committer is None:
            return self._final
        return (
            committer.events_written,
            committer.flushes,
            committer.largest_flush,
            committer.error,
        )
