"""Where the engine's time comes from: cooldowns, pacing, slow start and backoff read it.

The engine takes any :class:`Clock`; :data:`SYSTEM_CLOCK` (monotonic time, ``asyncio.sleep``)
is the default, and ``async_batch_llm.testing.VirtualClock`` lets tests of minutes-long
cooldowns run in no time at all.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds, and a way to wait for some of them to pass."""

    def now(self) -> float:
        """Seconds on a monotonic scale (only differences mean anything)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` have passed on this clock."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic`` and ``asyncio.sleep``."""

    def now(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep(seconds)``."""
        await asyncio.sleep(seconds)


SYSTEM_CLOCK: Clock = SystemClock()
