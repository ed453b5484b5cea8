"""Event dispatch to observers, cheap enough for the per-item hot path.

Each event goes only to the observers that want it (``ProcessorObserver.wanted_events``).
Observers with a synchronous handler (``on_event_sync``: the built-in ones, the run store,
the app's) are called in place where the event is emitted. Every other observer gets its
own delivery task: events queue for it in order and the task awaits each ``on_event``.
The coroutine always runs in the observer's own task, so its own ``asyncio.timeout`` can
never cancel a worker, and a slow or hanging observer holds up only its own deliveries,
until more than ``BACKLOG_LIMIT`` events wait for it: then the workers wait for it to
catch up, so memory stays bounded. No timer is armed per event: a watchdog ticking a few
times per ``observer_timeout`` abandons a delivery that has made no
progress for that long.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from ..observers import payloads as p
from ..observers.base import ProcessingEvent, ProcessorObserver

logger = logging.getLogger("async_batch_llm.observers")

#: Watchdog ticks per observer timeout: a hang is abandoned 1 to 1.25 timeouts after it began.
_TICKS_PER_TIMEOUT = 4

#: Events an async observer may have waiting before the workers wait for it to catch up:
#: memory stays bounded however slow an observer is, and no event is dropped.
BACKLOG_LIMIT = 100_000

#: How one observer is handed one event.
Deliver = Callable[[ProcessingEvent, dict[str, Any]], None]

_P = TypeVar("_P")
#: A function delivering one kind of event, given its payload.
Emit = Callable[[_P], None]


def sync_handler(observer: ProcessorObserver) -> Deliver | None:
    """The observer's ``on_event_sync``, if its class offers one and did not override ``on_event``.

    Built-in observers that never await implement both; calling the plain function skips
    creating a coroutine per event. A subclass that overrides only ``on_event`` keeps it.
    """
    handler = getattr(observer, "on_event_sync", None)
    if handler is None:
        return None
    for cls in type(observer).__mro__:
        if "on_event_sync" in cls.__dict__:
            return handler if type(observer).on_event is cls.__dict__.get("on_event") else None
    return None


class _Delivery:
    """One async observer's queue of events and the task that delivers them in order."""

    def __init__(self, observer: ProcessorObserver, timeout: float) -> None:
        self.observer = observer
        self.timeout = timeout
        self.queue: deque[tuple[ProcessingEvent, dict[str, Any]]] = deque()
        self.task: asyncio.Task[None] | None = None
        self.waiter: asyncio.Future[None] | None = None  # set while the task waits for events
        self.idle: asyncio.Event | None = None  # made in the loop, by the first push
        self.started = 0  # deliveries begun: the watchdog's measure of progress
        self._watchdog: asyncio.TimerHandle | None = None
        self._last_seen = -1
        self._stalled_ticks = 0

    def push(self, event: ProcessingEvent, payload: dict[str, Any]) -> None:
        """Queue one event; wake the delivery task (starting it if need be)."""
        self.queue.append((event, payload))
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            self.idle.clear()  # type: ignore[union-attr]
            if not waiter.done():
                waiter.set_result(None)
        elif self.task is None:
            if self.idle is None:
                self.idle = asyncio.Event()
            self.idle.clear()
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        queue, on_event, observer = self.queue, self.observer.on_event, self.observer
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        while self.task is me:
            self._arm_watchdog(loop)
            while queue and self.task is me:
                event, payload = queue.popleft()
                self.started += 1
                try:
                    await on_event(event, payload)
                except Exception:
                    logger.exception("observer %r failed on %s; skipped", observer, event.value)
            if self.task is not me:
                return  # abandoned by the watchdog while it was busy
            self.waiter = waiter = loop.create_future()
            self.idle.set()  # type: ignore[union-attr]
            await waiter

    def _arm_watchdog(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._watchdog is None:
            self._last_seen, self._stalled_ticks = -1, 0
            self._watchdog = loop.call_later(self.timeout / _TICKS_PER_TIMEOUT, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        """Abandon the delivery in progress if it began a whole observer timeout ago."""
        self._watchdog = None
        if self.task is None or self.waiter is not None:
            return  # idle: the next burst of events arms the watchdog again
        if self.started != self._last_seen:
            self._last_seen, self._stalled_ticks = self.started, 0
        else:
            self._stalled_ticks += 1
            if self._stalled_ticks >= _TICKS_PER_TIMEOUT:
                self._abandon()
                return
        self._watchdog = loop.call_later(self.timeout / _TICKS_PER_TIMEOUT, self._tick, loop)

    def _abandon(self) -> None:
        """Cancel a hung delivery and skip what queued behind it: one hang, one timeout."""
        skipped = len(self.queue)
        self.queue.clear()
        logger.warning(
            "observer %r took over %.1fs on an event; skipped it and %d queued events",
            self.observer,
            self.timeout,
            skipped,
        )
        self._stop()

    def _stop(self) -> None:
        task, self.task, self.waiter = self.task, None, None
        if task is not None:
            task.cancel()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self.idle is not None:
            self.idle.set()

    async def drain(self) -> None:
        """Wait until every queued event has been delivered (or skipped)."""
        while self.idle is not None and not self.idle.is_set():
            await self.idle.wait()

    def close(self) -> None:
        """Stop the delivery task (call after :meth:`drain`)."""
        self._stop()


class EventDispatcher:
    """Delivers each event to every observer that wants it, each with its own payload dict."""

    def __init__(self, observers: list[ProcessorObserver], timeout: float) -> None:
        self.observers = list(observers)
        self.timeout = timeout
        #: The observers' ``hold_workers`` hooks, awaited by workers between items.
        self.holds: list[Callable[[], Awaitable[None]]] = [
            hold for observer in self.observers if (hold := getattr(observer, "hold_workers", None))
        ]
        self._deliveries: list[_Delivery] = []
        handlers: list[Deliver] = []
        for observer in self.observers:
            handler = sync_handler(observer)
            if handler is None:
                delivery = _Delivery(observer, timeout)
                self._deliveries.append(delivery)
                handler = delivery.push
            handlers.append(handler)
        # Per event: (handler, whether it needs a copy). Borrowers read the shared dict in
        # place and go first; after them every taker gets a copy but the last, which keeps
        # the original (nobody reads it after that).
        self._routes: dict[ProcessingEvent, tuple[tuple[Deliver, bool], ...]] = {}
        for event in ProcessingEvent:
            borrowers: list[Deliver] = []
            owners: list[Deliver] = []
            for observer, handler in zip(self.observers, handlers, strict=True):
                if _wants(observer, event):
                    (borrowers if _borrows(observer) else owners).append(handler)
            self._routes[event] = tuple((handler, False) for handler in borrowers) + tuple(
                (handler, index != len(owners) - 1) for index, handler in enumerate(owners)
            )

    def emitter(self, event: ProcessingEvent) -> Emit[p.Payload] | None:
        """A function delivering ``event`` with the payload it is given; None if nobody wants it.

        The hot path holds one per event (see :class:`Emitters`): no enum lookup per call,
        and no payload is built for an event no observer takes.
        """
        routes = self._routes[event]
        if not routes:
            return None

        def deliver(payload: p.Payload) -> None:
            data = cast(dict[str, Any], payload)  # a typed dict is a plain dict at run time
            for handler, copy in routes:
                try:
                    handler(event, data.copy() if copy else data)
                except Exception:
                    logger.exception("observer %r failed on %s; skipped", handler, event.value)

        return deliver

    def emit(self, event: ProcessingEvent, payload: p.Payload) -> None:
        """Deliver ``event``: in place to sync handlers, queued to async observers."""
        data = cast(dict[str, Any], payload)
        for handler, copy in self._routes[event]:
            try:
                handler(event, data.copy() if copy else data)
            except Exception:
                logger.exception("observer %r failed on %s; skipped", handler, event.value)

    @property
    def has_async_observers(self) -> bool:
        """Whether any observer is delivered to through a queue of its own."""
        return bool(self._deliveries)

    def lagging(self) -> bool:
        """Whether some async observer has more than :data:`BACKLOG_LIMIT` events waiting."""
        return any(len(delivery.queue) > BACKLOG_LIMIT for delivery in self._deliveries)

    async def drain(self) -> None:
        """Wait until every async observer has had every event (each bounded by the timeout)."""
        for delivery in self._deliveries:
            await delivery.drain()

    def close(self) -> None:
        """Stop the delivery tasks (call after :meth:`drain`)."""
        for delivery in self._deliveries:
            delivery.close()


def _borrows(observer: ProcessorObserver) -> bool:
    """Whether the observer reads the payload in place (only a synchronous handler can)."""
    return bool(getattr(observer, "borrows_payload", False)) and sync_handler(observer) is not None


def _wants(observer: ProcessorObserver, event: ProcessingEvent) -> bool:
    wanted = getattr(observer, "wanted_events", None)
    return wanted is None or event in wanted


class Emitters:
    """One typed delivery function per event, None when no observer takes that event.

    The engine builds a payload only after checking its emitter is there, and mypy checks
    every payload against its event's ``TypedDict`` (:mod:`..observers.payloads`).
    """

    __slots__ = (
        "batch_completed",
        "batch_started",
        "cooldown_ended",
        "cooldown_started",
        "item_completed",
        "item_failed",
        "item_retry",
        "item_started",
        "limits_learned",
        "rate_limit_hit",
        "worker_started",
        "worker_stopped",
    )

    def __init__(self, dispatcher: EventDispatcher) -> None:
        emitter, event = dispatcher.emitter, ProcessingEvent
        self.batch_started: Emit[p.BatchStarted] | None = emitter(event.BATCH_STARTED)
        self.batch_completed: Emit[p.BatchCompleted] | None = emitter(event.BATCH_COMPLETED)
        self.worker_started: Emit[p.WorkerStarted] | None = emitter(event.WORKER_STARTED)
        self.worker_stopped: Emit[p.WorkerStopped] | None = emitter(event.WORKER_STOPPED)
        self.item_started: Emit[p.ItemStarted] | None = emitter(event.ITEM_STARTED)
        self.item_completed: Emit[p.ItemCompleted] | None = emitter(event.ITEM_COMPLETED)
        self.item_failed: Emit[p.ItemFailed] | None = emitter(event.ITEM_FAILED)
        self.item_retry: Emit[p.ItemRetry] | None = emitter(event.ITEM_RETRY)
        self.rate_limit_hit: Emit[p.RateLimitHit] | None = emitter(event.RATE_LIMIT_HIT)
        self.cooldown_started: Emit[p.CooldownStarted] | None = emitter(event.COOLDOWN_STARTED)
        self.cooldown_ended: Emit[p.CooldownEnded] | None = emitter(event.COOLDOWN_ENDED)
        self.limits_learned: Emit[p.LimitsLearned] | None = emitter(event.LIMITS_LEARNED)
