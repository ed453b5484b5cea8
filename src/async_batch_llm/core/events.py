"""Event dispatch to observers, cheap enough for the per-item hot path.

Observers with a synchronous handler (the built-in ones) are called in place. Every other
observer gets its own delivery task: events queue for it in order, and the task steps each
``on_event`` coroutine once (most finish without awaiting: no timer, no ``wait_for``); one
that awaits carries on under the observer timeout. The coroutine always runs in the
observer's own task, so its own ``asyncio.timeout`` can never cancel a worker, and a slow
or hanging observer holds up only its own deliveries.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from ..observers.base import ProcessingEvent, ProcessorObserver

logger = logging.getLogger("async_batch_llm.observers")


class ResumedCoroutine:
    """Awaitable that carries on a coroutine already stepped once (which yielded ``first``)."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, to_yield = self._coro, self._first
        while True:
            try:
                sent = yield to_yield
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # delivered into the coroutine, as `await` would
                try:
                    to_yield = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    to_yield = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


def sync_handler(
    observer: ProcessorObserver,
) -> Callable[[ProcessingEvent, dict[str, Any]], None] | None:
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
        self.wake: asyncio.Event | None = None
        self.idle: asyncio.Event | None = None

    def push(self, event: ProcessingEvent, payload: dict[str, Any]) -> None:
        self.queue.append((event, payload))
        if self.task is None:
            self.wake, self.idle = asyncio.Event(), asyncio.Event()
            self.task = asyncio.get_running_loop().create_task(self._run())
        assert self.wake is not None and self.idle is not None
        if not self.wake.is_set():
            self.wake.set()
            self.idle.clear()

    async def _run(self) -> None:
        wake, idle, queue, on_event = self.wake, self.idle, self.queue, self.observer.on_event
        assert wake is not None and idle is not None
        while True:
            while queue:
                event, payload = queue.popleft()
                # Step in place (this is the observer's own task): most finish at once.
                try:
                    coro = on_event(event, payload)
                    first = coro.send(None)
                except StopIteration:
                    continue
                except Exception:
                    logger.exception(
                        "observer %r failed on %s; skipped", self.observer, event.value
                    )
                    continue
                await self._finish(event, coro, first)
            wake.clear()
            idle.set()
            await wake.wait()

    async def _finish(self, event: ProcessingEvent, coro: Any, first: Any) -> None:
        """Carry on a delivery that awaited, within the observer timeout."""
        observer = self.observer
        try:
            async with asyncio.timeout(self.timeout):
                await ResumedCoroutine(coro, first)
        except TimeoutError:
            # A hung observer must not hold the run: the events that queued behind it are
            # skipped too, so each hang costs at most one timeout, however long the run.
            skipped = len(self.queue)
            self.queue.clear()
            logger.warning(
                "observer %r took over %.1fs on %s; skipped it and %d queued events",
                observer,
                self.timeout,
                event.value,
                skipped,
            )
        except Exception:
            logger.exception("observer %r failed on %s; skipped", observer, event.value)

    async def drain(self) -> None:
        """Wait until every queued event has been delivered (or skipped)."""
        while self.queue or (self.idle is not None and not self.idle.is_set()):
            assert self.idle is not None
            await self.idle.wait()

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None


class EventDispatcher:
    """Delivers each event to every observer, each with its own copy of the payload."""

    def __init__(self, observers: list[ProcessorObserver], timeout: float) -> None:
        self.observers = list(observers)
        self.timeout = timeout
        last = len(self.observers) - 1
        # (its synchronous handler or its delivery queue, whether it needs its own copy):
        # the last observer takes the payload itself, every other one a copy.
        self._routes: tuple[tuple[Callable[..., None] | None, _Delivery | None, bool], ...] = tuple(
            (
                handler := sync_handler(observer),
                None if handler is not None else _Delivery(observer, timeout),
                index != last,
            )
            for index, observer in enumerate(self.observers)
        )

    def emit(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        """Deliver ``event``: in place to sync handlers, queued to async observers."""
        for sync, delivery, copy in self._routes:
            payload = data.copy() if copy else data
            if sync is not None:
                try:
                    sync(event, payload)
                except Exception:
                    logger.exception("observer %r failed on %s; skipped", sync, event.value)
            else:
                delivery.push(event, payload)  # type: ignore[union-attr]

    async def drain(self) -> None:
        """Wait until every async observer has had every event (each bounded by the timeout)."""
        for _, delivery, _ in self._routes:
            if delivery is not None:
                await delivery.drain()

    def close(self) -> None:
        """Stop the delivery tasks (call after :meth:`drain`)."""
        for _, delivery, _ in self._routes:
            if delivery is not None:
                delivery.close()
