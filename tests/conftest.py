"""Shared fixtures. Append-only: several test modules rely on what is here."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from async_batch_llm import (
    BaseObserver,
    ProcessingEvent,
    ProcessorConfig,
    RateLimitConfig,
    RetryConfig,
)


class EventRecorder(BaseObserver):
    """Records every event as ``(monotonic time, event, payload)``, in delivery order."""

    def __init__(self) -> None:
        self.records: list[tuple[float, ProcessingEvent, dict[str, Any]]] = []

    async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        self.records.append((time.monotonic(), event, data))

    @property
    def events(self) -> list[ProcessingEvent]:
        """The events in delivery order."""
        return [event for _, event, _ in self.records]

    def of(self, event: ProcessingEvent) -> list[dict[str, Any]]:
        """The payloads of one kind of event, in order."""
        return [data for _, ev, data in self.records if ev is event]

    def for_item(self, item_id: str) -> list[ProcessingEvent]:
        """The events whose payload names ``item_id``, in order."""
        return [ev for _, ev, data in self.records if data.get("item_id") == item_id]


@pytest.fixture
def recorder() -> EventRecorder:
    """An observer that records every event it gets."""
    return EventRecorder()


@pytest.fixture
def fast_config() -> Callable[..., ProcessorConfig]:
    """Build a ProcessorConfig whose retry and rate-limit waits are tiny.

    Keyword arguments override ProcessorConfig fields; ``retry``/``rate_limit`` may be
    dicts of overrides to the tiny defaults.
    """

    def make(**overrides: Any) -> ProcessorConfig:
        retry = {"max_attempts": 3, "initial_wait": 0.001, "max_wait": 0.01}
        retry.update(overrides.pop("retry", {}))
        rate_limit = {"cooldown_seconds": 0.05, "slow_start_items": 0}
        rate_limit.update(overrides.pop("rate_limit", {}))
        overrides.setdefault("max_workers", 2)
        overrides.setdefault("timeout_per_item", 5.0)
        return ProcessorConfig(
            retry=RetryConfig(**retry), rate_limit=RateLimitConfig(**rate_limit), **overrides
        )

    return make
