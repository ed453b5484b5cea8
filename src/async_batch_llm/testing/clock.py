"""A virtual clock for tests: cooldowns, pacing and backoff without waiting for them.

Give it to the processor (``ParallelBatchProcessor(..., clock=VirtualClock())``) and every
engine wait (a cooldown, a pacing slot, a slow-start delay, a retry's backoff) takes no
real time: time stands still while any task can run, and once they all wait it jumps to
the earliest sleeper's deadline and wakes that one. Assert on ``clock.now()``, never on
the wall clock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

#: Rounds of the event loop with nothing woken before time may jump: enough for every task
#: woken by the last jump to run on until it waits again (the engine's chains are short).
IDLE_ROUNDS = 20


class VirtualClock:
    """A :class:`~async_batch_llm.core.clock.Clock` whose time moves only when all wait."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()  # ties wake in the order they went to sleep
        self._driver: asyncio.Task[None] | None = None

    def now(self) -> float:
        """The virtual time."""
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of virtual time (no real time passes)."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), woken))
        if self._driver is None or self._driver.done():
            self._driver = loop.create_task(self._drive(), name="virtual-clock")
        await woken

    async def _drive(self) -> None:
        """Wake sleepers in deadline order, each once everything else has settled."""
        while self._sleepers:
            for _ in range(IDLE_ROUNDS):
                await asyncio.sleep(0)
            deadline, _, woken = heapq.heappop(self._sleepers)
            if woken.done():  # the sleeper was cancelled
                continue
            self._now = max(self._now, deadline)
            woken.set_result(None)
