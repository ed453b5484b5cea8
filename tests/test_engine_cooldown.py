"""Bounded, sensible rate-limit waits: the cooldown ceiling, storms, and default waits.

The decisions are checked on :class:`CooldownCoordinator` directly (no clock involved: a
storm is recognised by cooldown generations, not by time) and end to end with realistic
durations on a virtual clock, asserting on events, outcomes and virtual time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from async_batch_llm import (
    ErrorInfo,
    GeminiErrorClassifier,
    LLMCallStrategy,
    ParallelBatchProcessor,
    ProcessingEvent,
    ProcessorConfig,
    RetryState,
    TokenUsage,
)
from async_batch_llm.core.cooldown import ESCALATE_AFTER, CooldownCoordinator, provider_wait
from async_batch_llm.testing import VirtualClock
from support import results_by_id

EV = ProcessingEvent
Config = Callable[..., ProcessorConfig]


def limited(wait: float | None = None, *, default: bool = False) -> ErrorInfo:
    return ErrorInfo(True, True, False, "rate_limit", wait, suggested_wait_is_default=default)


class Http429(Exception):
    """A provider's 429, optionally with the Retry-After it sent."""

    status_code = 429

    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("429 Too Many Requests")
        self.response = type("R", (), {"headers": {}})()
        if retry_after is not None:
            self.response.headers = {"retry-after": str(retry_after)}


# --------------------------------------------------------------------------- decisions


def test_provider_wait_ignores_a_classifiers_default() -> None:
    assert provider_wait(limited(12.0)) == 12.0
    assert provider_wait(limited(300.0, default=True)) is None
    assert provider_wait(limited(None)) is None


def test_cooldown_is_the_providers_wait_else_the_policy_within_the_ceiling() -> None:
    cooldowns = CooldownCoordinator(max_cooldown=600.0, calm_after=2)
    assert cooldowns.begin(limited(7.5), policy_duration=30.0) == (7.5, 1)
    assert cooldowns.begin(limited(None), policy_duration=45.0) == (45.0, 2)
    assert cooldowns.begin(limited(None), policy_duration=5000.0) == (600.0, 3)
    cooldowns.succeeded()  # one success in a row of the two that end a storm
    assert cooldowns.storm
    cooldowns.refused()
    cooldowns.succeeded()
    assert cooldowns.storm  # the 429 between them started the count again
    cooldowns.succeeded()
    assert not cooldowns.storm
    assert cooldowns.begin(limited(None), policy_duration=30.0) == (30.0, 1)


def test_within_a_storm_a_429_without_a_wait_backs_off_alone() -> None:
    cooldowns = CooldownCoordinator(max_cooldown=600.0)
    assert not cooldowns.backs_off_alone(limited(None), 1)  # no storm yet: start a cooldown
    cooldowns.begin(limited(None), 10.0)
    assert cooldowns.backs_off_alone(limited(None), 1)
    assert cooldowns.backs_off_alone(limited(None), ESCALATE_AFTER - 1)
    assert not cooldowns.backs_off_alone(limited(None), ESCALATE_AFTER)  # still refused
    assert not cooldowns.backs_off_alone(limited(5.0), 1)  # the provider's wait is honoured
    cooldowns.succeeded()
    assert not cooldowns.backs_off_alone(limited(None), 1)


def test_a_wait_past_the_ceiling_fails_naming_what_the_provider_asked() -> None:
    cooldowns = CooldownCoordinator(max_cooldown=600.0)
    cooldowns.check_wait(limited(600.0), "429")  # at the ceiling: fine
    try:
        cooldowns.check_wait(limited(100000.0), "RateLimitError: 429")
    except Exception as error:
        text = str(error)
    else:
        raise AssertionError("a 100000 s Retry-After must not be accepted")
    assert "100000s" in text and "max_cooldown_seconds=600" in text and "429" in text
    cooldowns.check_wait(limited(100000.0, default=True), "429")  # a default is no demand


def test_only_a_request_sent_after_the_latest_cooldown_began_can_start_another() -> None:
    cooldowns = CooldownCoordinator(max_cooldown=600.0)
    sent_before = cooldowns.generation
    cooldowns.begin(limited(None), 1.0)
    assert cooldowns.is_echo(sent_before)
    assert not cooldowns.is_echo(cooldowns.generation)


# --------------------------------------------------------------------------- end to end


class StormStrategy(LLMCallStrategy[str]):
    """Every item's first call is answered 429 only once all of them are in flight."""

    def __init__(self, items: int, retry_after: float | None = None) -> None:
        self.items = items
        self.retry_after = retry_after
        self.in_flight = 0
        self.all_sent = asyncio.Event()
        self.calls: dict[str, int] = {}

    async def execute(
        self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
    ) -> tuple[str, TokenUsage]:
        self.calls[prompt] = self.calls.get(prompt, 0) + 1
        if self.calls[prompt] == 1:
            self.in_flight += 1
            if self.in_flight == self.items:
                self.all_sent.set()
            await self.all_sent.wait()
            raise Http429(self.retry_after)
        return prompt, {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}


async def test_a_storm_of_429s_starts_one_cooldown_and_escalates_nothing(
    fast_config: Config, recorder: Any
) -> None:
    strategy = StormStrategy(items=8)
    processor: ParallelBatchProcessor[str, str, None] = ParallelBatchProcessor(
        config=fast_config(max_workers=8, rate_limit={"cooldown_seconds": 60.0}),
        observers=[recorder],
        clock=VirtualClock(),
    )
    results = await results_by_id(processor, strategy, [f"i{n}" for n in range(8)])
    assert all(r.success for r in results.values())
    started = recorder.of(EV.COOLDOWN_STARTED)
    assert len(started) == 1 and started[0]["consecutive"] == 1
    assert len(recorder.of(EV.RATE_LIMIT_HIT)) == 8


async def test_retry_after_past_the_ceiling_fails_the_item_at_once(
    fast_config: Config, recorder: Any
) -> None:
    strategy = StormStrategy(items=1, retry_after=100000)
    processor: ParallelBatchProcessor[str, str, None] = ParallelBatchProcessor(
        config=fast_config(rate_limit={"max_cooldown_seconds": 30.0}), observers=[recorder]
    )
    result = (await results_by_id(processor, strategy, ["a"]))["a"]
    assert not result.success and result.error_category == "rate_limit"
    assert "100000s" in (result.error or "") and "max_cooldown_seconds=30" in (result.error or "")
    assert recorder.of(EV.COOLDOWN_STARTED) == []
    assert strategy.calls == {"a": 1}


async def test_retry_after_within_the_ceiling_is_the_cooldown(
    fast_config: Config, recorder: Any
) -> None:
    strategy = StormStrategy(items=1, retry_after=30)
    clock = VirtualClock()
    processor: ParallelBatchProcessor[str, str, None] = ParallelBatchProcessor(
        config=fast_config(rate_limit={"cooldown_seconds": 100.0}),
        observers=[recorder],
        clock=clock,
    )
    result = (await results_by_id(processor, strategy, ["a"]))["a"]
    assert result.success
    (started,) = recorder.of(EV.COOLDOWN_STARTED)
    assert started["duration"] == 30.0 and started["provider_wait"] == 30.0
    assert clock.now() == 30.0


async def test_a_classifiers_default_wait_leaves_the_configured_cooldown(
    fast_config: Config, recorder: Any
) -> None:
    """GeminiErrorClassifier reports the reference's 300 s default: the run keeps its policy."""
    strategy = StormStrategy(items=1)
    processor: ParallelBatchProcessor[str, str, None] = ParallelBatchProcessor(
        config=fast_config(rate_limit={"cooldown_seconds": 20.0}),
        error_classifier=GeminiErrorClassifier(),
        observers=[recorder],
        clock=VirtualClock(),
    )
    assert (await results_by_id(processor, strategy, ["a"]))["a"].success
    (started,) = recorder.of(EV.COOLDOWN_STARTED)
    assert started["duration"] == 20.0 and started["provider_wait"] is None


class LateEchoes(StormStrategy):
    """Item ``i0``'s 429 comes at once; the others' arrive only after its cooldown ended."""

    def __init__(self, items: int) -> None:
        super().__init__(items)
        self.cooldown_over = asyncio.Event()

    async def execute(
        self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
    ) -> tuple[str, TokenUsage]:
        if self.calls.get(prompt, 0) == 0 and prompt != "i0":
            self.calls[prompt] = 1
            self.in_flight += 1
            if self.in_flight == self.items:
                self.all_sent.set()
            await self.cooldown_over.wait()
            raise Http429()
        return await super().execute(prompt, attempt, timeout, state)


async def test_late_echoes_of_a_storm_start_no_second_cooldown(
    fast_config: Config, recorder: Any
) -> None:
    strategy = LateEchoes(items=6)

    class Release:
        wanted_events = None
        borrows_payload = False

        async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
            if event is EV.COOLDOWN_ENDED:
                strategy.cooldown_over.set()

    processor: ParallelBatchProcessor[str, str, None] = ParallelBatchProcessor(
        config=fast_config(max_workers=6, rate_limit={"cooldown_seconds": 60.0}),
        observers=[recorder, Release()],  # type: ignore[list-item]
        clock=VirtualClock(),
    )
    results = await results_by_id(processor, strategy, [f"i{n}" for n in range(6)])
    assert all(r.success for r in results.values())
    assert len(recorder.of(EV.RATE_LIMIT_HIT)) == 6
    assert [s["consecutive"] for s in recorder.of(EV.COOLDOWN_STARTED)] == [1]
