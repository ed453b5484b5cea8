"""Settings of a run through the provider batch APIs: polling, deadline, chunk limits, clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from ..providers.batch.types import BatchLimits

__all__ = ["BatchApiConfig", "RescueMode"]

RescueMode = Literal["online", "none"]


@dataclass(frozen=True, slots=True)
class BatchApiConfig:
    """How batches are chunked, polled, given up on, and how stragglers are rescued.

    Polls start every ``poll_interval`` seconds and stretch by ``poll_backoff`` while
    nothing changes, up to ``max_poll_interval`` (a change resets them). ``batch_deadline``
    (seconds after a batch's submission, None: the provider's own 24 h window) cancels a
    batch still running then; what it had not done is rescued. ``limits`` overrides the
    providers' own (50,000 requests / 200 MB OpenAI, 100,000 / 256 MB Anthropic): tests use
    tiny chunks. ``clock`` (Unix seconds) and ``sleep`` are injectable for tests.
    """

    poll_interval: float = 30.0
    max_poll_interval: float = 300.0
    poll_backoff: float = 1.5
    batch_deadline: float | None = None
    limits: BatchLimits | None = None
    completion_window: str = "24h"
    rescue: RescueMode = "online"
    submit_attempts: int = 5
    """Tries per chunk on transient errors (5xx, 429, dropped connections) while submitting."""
    clock: Callable[[], float] = field(default=time.time)
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)

    def __post_init__(self) -> None:
        for name in ("poll_interval", "max_poll_interval"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if not self.poll_backoff >= 1:
            raise ValueError(f"poll_backoff must be >= 1, got {self.poll_backoff!r}")
        if self.batch_deadline is not None and not self.batch_deadline > 0:
            raise ValueError(f"batch_deadline must be > 0 or None, got {self.batch_deadline!r}")
        if self.rescue not in ("online", "none"):
            raise ValueError(f"rescue must be 'online' or 'none', got {self.rescue!r}")
        if self.submit_attempts < 1:
            raise ValueError(f"submit_attempts must be >= 1, got {self.submit_attempts!r}")
