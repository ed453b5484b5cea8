"""Event dispatch to observers, cheap enough for the per-item hot path.

An observer's ``on_event`` coroutine is stepped once in place: most observers finish
without awaiting, which costs one call and no task, timer or ``wait_for``. One that does
await is handed, mid-flight, to a background task bounded by the observer timeout, so a
slow or hanging observer never holds a worker.
"""

from __future__ import annotations

import asyncio
import logging
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


class EventDispatcher:
    """Delivers each event to every observer, each with its own copy of the payload."""

    def __init__(self, observers: list[ProcessorObserver], timeout: float) -> None:
        self.observers = list(observers)
        self.timeout = timeout
        self._pending: set[asyncio.Task[None]] = set()
        last = len(self.observers) - 1
        # (observer, its synchronous handler or None, whether it needs its own copy): the
        # last observer takes the payload itself, every other one a copy.
        self._routes = tuple(
            (observer, sync_handler(observer), index != last)
            for index, observer in enumerate(self.observers)
        )

    def emit(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        """Deliver ``event`` now; observers that await finish in the background."""
        for observer, sync, copy in self._routes:
            payload = data.copy() if copy else data
            if sync is not None:
                try:
                    sync(event, payload)
                except Exception:
                    logger.exception("observer %r failed on %s; skipped", observer, event.value)
                continue
            try:
                coro = observer.on_event(event, payload)
                first = coro.send(None)
            except StopIteration:
                continue
            except Exception:
                logger.exception("observer %r failed on %s; skipped", observer, event.value)
                continue
            task = asyncio.get_running_loop().create_task(
                self._finish(observer, event, ResumedCoroutine(coro, first))
            )
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _finish(
        self, observer: ProcessorObserver, event: ProcessingEvent, rest: ResumedCoroutine
    ) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await rest
        except TimeoutError:
            logger.warning(
                "observer %r took over %.1fs on %s; skipped", observer, self.timeout, event.value
            )
        except Exception:
            logger.exception("observer %r failed on %s; skipped", observer, event.value)

    async def drain(self) -> None:
        """Wait for observers still finishing an event (each bounded by the timeout)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
