"""Pacing to the limits a provider declares in its headers (``ProviderLimits``, duck-typed).

A strategy reports them in ``execute``'s metadata under ``"rate_limits"`` (or on a raised
error as ``.rate_limits``); the engine paces to them, to the configured rpm/tpm, or to the
lower of both, and tells observers with ``LIMITS_LEARNED``. Pacing is checked through the
pacer's bookings (the waits it hands out), never by sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from async_batch_llm import (
    LLMCallStrategy,
    ParallelBatchProcessor,
    ProcessingEvent,
    ProcessorConfig,
    RetryState,
    TokenUsage,
)
from async_batch_llm.core.pacing import (
    SAFETY_MARGIN,
    Pacer,
    RequestPacer,
    declared_rate,
    spent_until,
)
from async_batch_llm.testing import VirtualClock
from support import results_by_id

EV = ProcessingEvent
Config = Callable[..., ProcessorConfig]


def limits(**fields: Any) -> SimpleNamespace:
    """A ProviderLimits look-alike: every field present, None unless given."""
    names = (
        "requests_limit",
        "requests_remaining",
        "requests_reset_s",
        "tokens_limit",
        "tokens_remaining",
        "tokens_reset_s",
    )
    return SimpleNamespace(**{name: fields.get(name) for name in names})


def interval(rpm: float) -> float:
    return 60.0 / (rpm * (1.0 - SAFETY_MARGIN))


# --------------------------------------------------------------------------- the rate


def test_declared_rate_is_the_limit() -> None:
    assert declared_rate(300) == 300.0
    assert declared_rate(0) is None and declared_rate(None) is None


def test_what_remains_only_tells_a_spent_budget() -> None:
    assert spent_until(0, 6.0) == 6.0
    assert spent_until(3, 6.0, in_flight=3) == 6.0  # our calls under way use up the rest
    assert spent_until(10, 30.0) is None  # some left: pace at the limit, do not spread it
    assert spent_until(None, 6.0) is None and spent_until(0, None) is None


def test_a_spent_budget_pauses_until_its_reset_then_paces_at_the_limit() -> None:
    clock = VirtualClock()
    pacer = Pacer(None, None, clock)
    pacer.learn(limits(requests_limit=300, requests_remaining=0, requests_reset_s=12.0))
    assert pacer.rpm == 300.0 and pacer.requests is not None
    waits = [pacer.requests.reserve() for _ in range(3)]
    assert waits == pytest.approx([12.0, 12.0 + interval(300), 12.0 + 2 * interval(300)])


def test_a_spent_budget_in_steady_pacing_pauses_only_until_our_oldest_start_leaves() -> None:
    """Our starts a second apart; the provider (a 10 s window) says none is left: the next
    may go when the oldest start inside the window leaves it, not after the full reset."""
    clock = VirtualClock(start=100.0)
    requests = RequestPacer(60, clock.now)
    for second in range(10):
        requests.started(100.0 + second)
    clock._now = 109.01  # just after the latest start
    requests.pause_for_spent_budget(reset_s=10.0 - 0.01)  # full again when 109 leaves
    assert requests.paused_until == pytest.approx(110.0)
    assert requests.reserve() == pytest.approx(110.0 - 109.01)


async def test_sleepers_book_again_when_the_pace_rises() -> None:
    """Slots booked at a slow pace are not kept once a faster one is declared."""
    clock = VirtualClock()
    pacer = Pacer(6, None, clock)  # one call every ~10 s
    starts: list[float] = []

    async def call() -> None:
        await pacer.acquire(0)
        starts.append(clock.now())

    tasks = [asyncio.create_task(call()) for _ in range(4)]
    await asyncio.sleep(0)
    pacer.configure(600, None)  # one every ~0.1 s from now on
    await asyncio.gather(*tasks)
    assert starts == pytest.approx([n * interval(600) for n in range(4)])


def test_learned_limit_paces_a_run_with_no_rpm_configured() -> None:
    pacer = Pacer(None, None)
    assert pacer.learn(limits(requests_limit=300, requests_remaining=299, requests_reset_s=0.2))
    assert pacer.rpm == 300.0 and pacer.requests is not None
    waits = [pacer.requests.reserve() for _ in range(3)]
    assert waits == pytest.approx([0.0, interval(300), 2 * interval(300)], abs=0.05)


def test_the_lower_of_configured_and_declared_is_in_force() -> None:
    pacer = Pacer(120, None)
    pacer.learn(limits(requests_limit=600))
    assert pacer.rpm == 120.0
    pacer.learn(limits(requests_limit=60, requests_remaining=3, requests_reset_s=6.0))
    assert pacer.rpm == pytest.approx(60.0)
    assert pacer.requests is not None
    assert pacer.requests.interval == pytest.approx(interval(60.0))


def test_declared_tokens_pace_tokens() -> None:
    pacer = Pacer(None, None)
    pacer.learn(limits(tokens_limit=60_000))
    assert pacer.tpm == 60_000 and pacer.tokens is not None
    first, second = pacer.tokens.reserve(1000), pacer.tokens.reserve(1000)
    assert first == pytest.approx(0.0, abs=0.05)
    assert second == pytest.approx(1000 / (60_000 * (1 - SAFETY_MARGIN) / 60), abs=0.05)


def test_only_a_real_change_of_pace_counts_as_news() -> None:
    pacer = Pacer(None, None)
    assert pacer.learn(limits(requests_limit=300, requests_remaining=290, requests_reset_s=1.0))
    assert not pacer.learn(limits(requests_limit=300, requests_remaining=280, requests_reset_s=2))
    assert not pacer.learn(limits(requests_limit=300, requests_remaining=2, requests_reset_s=30))
    assert pacer.learn(limits(requests_limit=200, requests_remaining=2, requests_reset_s=30.0))


# --------------------------------------------------------------------------- the engine


class Declaring(LLMCallStrategy[str]):
    """Answers with the limits a provider would declare; prompt ``limited`` raises a 429."""

    def __init__(self, declared: SimpleNamespace) -> None:
        self.declared = declared

    async def execute(
        self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
    ) -> tuple[str, TokenUsage, dict[str, Any]]:
        return prompt, {"total_tokens": 2}, {"rate_limits": self.declared}


async def test_run_paces_itself_to_the_declared_limits(fast_config: Config, recorder: Any) -> None:
    declared = limits(requests_limit=60_000, requests_remaining=59_999, requests_reset_s=0.001)
    processor: ParallelBatchProcessor[str, str, None] = ParallelBatchProcessor(
        config=fast_config(), observers=[recorder]
    )
    results = await results_by_id(processor, Declaring(declared), ["a", "b", "c"])
    assert all(r.success for r in results.values())
    pacer = processor._proactive_rate_limiter
    assert pacer is not None and pacer.rpm == 60_000
    (learned,) = recorder.of(EV.LIMITS_LEARNED)  # the pace did not move after the first
    assert learned["requests_limit"] == 60_000 and learned["rpm"] == 60_000
    assert learned["tokens_limit"] is None and learned["tpm"] is None


class DeclaredOnError(Exception):
    """A provider error carrying the limits its response declared (as the transports do)."""

    def __init__(self, declared: SimpleNamespace) -> None:
        super().__init__("503 overloaded")
        self.status_code = 503
        self.rate_limits = declared


class FailsOnce(LLMCallStrategy[str]):
    def __init__(self, declared: SimpleNamespace) -> None:
        self.declared = declared
        self.calls = 0

    async def execute(
        self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
    ) -> tuple[str, TokenUsage]:
        self.calls += 1
        if self.calls == 1:
            raise DeclaredOnError(self.declared)
        return prompt, {"total_tokens": 2}


async def test_limits_on_a_raised_error_are_learned_too(fast_config: Config, recorder: Any) -> None:
    declared = limits(tokens_limit=6_000_000, tokens_remaining=5_000_000, tokens_reset_s=1.0)
    processor: ParallelBatchProcessor[str, str, None] = ParallelBatchProcessor(
        config=fast_config(max_workers=1, max_requests_per_minute=60_000), observers=[recorder]
    )
    assert (await results_by_id(processor, FailsOnce(declared), ["a"]))["a"].success
    (learned,) = recorder.of(EV.LIMITS_LEARNED)
    assert learned["tpm"] == 6_000_000 and learned["rpm"] == 60_000
