"""Rate-limit strategies: how long the coordinated cooldown lasts, and how slowly to restart."""

from __future__ import annotations

from abc import ABC, abstractmethod


class RateLimitStrategy(ABC):
    """Decides the cooldown after a rate limit and the pacing of the slow start after it."""

    @abstractmethod
    async def on_rate_limit(self, worker_id: int, consecutive_limit_count: int) -> float:
        """Seconds every worker pauses after the ``consecutive_limit_count``-th rate limit."""

    @abstractmethod
    def should_apply_slow_start(self, items_since_resume: int) -> tuple[bool, float]:
        """``(delay?, seconds)`` before the next item, ``items_since_resume`` after a cooldown."""


class ExponentialBackoffStrategy(RateLimitStrategy):
    """Cooldown grows by ``backoff_multiplier`` per consecutive limit; slow start ramps linearly."""

    def __init__(
        self,
        initial_cooldown: float = 60.0,
        max_cooldown: float = 600.0,
        backoff_multiplier: float = 2.0,
        slow_start_items: int = 50,
        slow_start_initial_delay: float = 2.0,
        slow_start_final_delay: float = 0.1,
    ) -> None:
        if initial_cooldown < 0 or max_cooldown < 0:
            raise ValueError("initial_cooldown and max_cooldown must be >= 0")
        if backoff_multiplier < 1:
            raise ValueError(f"backoff_multiplier must be >= 1, got {backoff_multiplier!r}")
        if slow_start_items < 0:
            raise ValueError(f"slow_start_items must be >= 0, got {slow_start_items!r}")
        self.initial_cooldown = initial_cooldown
        self.max_cooldown = max_cooldown
        self.backoff_multiplier = backoff_multiplier
        self.slow_start_items = slow_start_items
        self.slow_start_initial_delay = slow_start_initial_delay
        self.slow_start_final_delay = slow_start_final_delay

    async def on_rate_limit(self, worker_id: int, consecutive_limit_count: int) -> float:
        exponent = max(consecutive_limit_count - 1, 0)
        return min(self.initial_cooldown * self.backoff_multiplier**exponent, self.max_cooldown)

    def should_apply_slow_start(self, items_since_resume: int) -> tuple[bool, float]:
        if items_since_resume >= self.slow_start_items:
            return (False, 0.0)
        progress = items_since_resume / self.slow_start_items
        start, end = self.slow_start_initial_delay, self.slow_start_final_delay
        return (True, max(end, start - (start - end) * progress))


class FixedDelayStrategy(RateLimitStrategy):
    """A fixed cooldown, then a fixed delay between requests from then on."""

    def __init__(self, cooldown: float = 300.0, delay_between_requests: float = 1.0) -> None:
        if cooldown < 0 or delay_between_requests < 0:
            raise ValueError("cooldown and delay_between_requests must be >= 0")
        self.cooldown = cooldown
        self.delay = delay_between_requests

    async def on_rate_limit(self, worker_id: int, consecutive_limit_count: int) -> float:
        return self.cooldown

    def should_apply_slow_start(self, items_since_resume: int) -> tuple[bool, float]:
        return (self.delay > 0, self.delay)
