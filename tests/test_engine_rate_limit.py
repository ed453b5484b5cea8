"""Rate limits (coordinated cooldown, Retry-After, budgets, slow start) and proactive pacing."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest

from async_batch_llm import (
    FixedDelayStrategy,
    LLMCallStrategy,
    LLMWorkItem,
    ParallelBatchProcessor,
    ProcessingEvent,
    ProcessorConfig,
    RateLimitStrategy,
    RetryState,
    TokenUsage,
)
from async_batch_llm.core.pacing import SAFETY_MARGIN
from async_batch_llm.testing import FakeStrategy, VirtualClock
from support import results_by_id

EV = ProcessingEvent
Config = Callable[..., ProcessorConfig]


def starts_during_cooldowns(recorder: Any) -> list[tuple[str, int]]:
    """ITEM_STARTED events delivered while a cooldown was in force."""
    bad: list[tuple[str, int]] = []
    cooling = False
    for _, event, data in recorder.records:
        if event is EV.COOLDOWN_STARTED:
            cooling = True
        elif event is EV.COOLDOWN_ENDED:
            cooling = False
        elif event is EV.ITEM_STARTED and cooling:
            bad.append((data["item_id"], data["attempt"]))
    return bad


class Recording(RateLimitStrategy):
    """A rate-limit strategy that logs its calls into a shared timeline."""

    def __init__(
        self,
        timeline: list[tuple[str, Any]],
        cooldowns: list[float],
        slow_start: Callable[[int], tuple[bool, float]],
    ) -> None:
        self.timeline = timeline
        self.cooldowns = list(cooldowns)
        self.slow_start = slow_start
        self.on_rate_limit_calls: list[tuple[int, int]] = []
        self.slow_start_calls: list[int] = []
        self.limited_at: list[float] = []  # monotonic times of the calls
        self.slow_start_at: list[float] = []

    async def on_rate_limit(self, worker_id: int, consecutive_limit_count: int) -> float:
        self.on_rate_limit_calls.append((worker_id, consecutive_limit_count))
        self.limited_at.append(time.monotonic())
        self.timeline.append(("on_rate_limit", consecutive_limit_count))
        return self.cooldowns.pop(0) if len(self.cooldowns) > 1 else self.cooldowns[0]

    def should_apply_slow_start(self, items_since_resume: int) -> tuple[bool, float]:
        self.slow_start_calls.append(items_since_resume)
        self.slow_start_at.append(time.monotonic())
        self.timeline.append(("slow_start", items_since_resume))
        return self.slow_start(items_since_resume)


# --------------------------------------------------------------------------- coordination


async def test_one_coordinator_for_a_burst_of_rate_limits(
    fast_config: Config, recorder: Any
) -> None:
    workers = 4
    prompts = [f"p{n}" for n in range(workers)]
    clock = VirtualClock()
    strategy = FakeStrategy(latency=1.0, clock=clock, script={p: ["rate_limit"] for p in prompts})
    processor = ParallelBatchProcessor(
        config=fast_config(max_workers=workers, rate_limit={"cooldown_seconds": 30.0}),
        observers=[recorder],
        clock=clock,
    )
    results = await results_by_id(processor, strategy, prompts)
    assert all(r.success for r in results.values())
    # Every first call took 1 s, the one cooldown 30 s, every second call 1 s.
    assert clock.now() == pytest.approx(32.0)
    hits = recorder.of(EV.RATE_LIMIT_HIT)
    assert len(hits) == workers
    assert len({h["worker_id"] for h in hits}) == workers
    (cooldown,) = recorder.of(EV.COOLDOWN_STARTED)
    assert cooldown["duration"] == pytest.approx(30.0)
    assert cooldown["consecutive"] == 1
    assert len(recorder.of(EV.COOLDOWN_ENDED)) == 1
    assert starts_during_cooldowns(recorder) == []
    assert (await processor.get_stats())["rate_limit_count"] == workers


async def test_no_attempt_starts_during_a_cooldown(fast_config: Config, recorder: Any) -> None:
    prompts = [f"p{n}" for n in range(12)]
    script = {"p1": ["rate_limit"], "p5": ["rate_limit", "rate_limit"], "p9": ["server_error"]}
    clock = VirtualClock()
    strategy = FakeStrategy(latency=0.5, clock=clock, script=script)
    processor = ParallelBatchProcessor(
        config=fast_config(max_workers=3, rate_limit={"cooldown_seconds": 20.0}),
        observers=[recorder],
        clock=clock,
    )
    results = await results_by_id(processor, strategy, prompts)
    assert all(r.success for r in results.values())
    assert len(recorder.of(EV.COOLDOWN_STARTED)) >= 2
    assert starts_during_cooldowns(recorder) == []
    # Timestamps agree with the order of delivery.
    stamps = [t for t, _, _ in recorder.records]
    assert stamps == sorted(stamps)


async def test_no_attempt_starts_during_a_cooldown_with_pacing(
    fast_config: Config, recorder: Any
) -> None:
    """A worker waiting for its pacing slot must not start while a cooldown is in force."""
    clock = VirtualClock()
    strategy = FakeStrategy(latency=1.0, clock=clock, script={"a": ["rate_limit:30"]})
    processor = ParallelBatchProcessor(
        config=fast_config(max_workers=2, max_requests_per_minute=60),
        observers=[recorder],
        clock=clock,
    )
    results = await results_by_id(processor, strategy, ["a", "b"])
    assert all(r.success for r in results.values())
    assert clock.now() >= 31.0  # a's second call waited out the 30 s Retry-After
    assert len(recorder.of(EV.COOLDOWN_STARTED)) == 1
    assert starts_during_cooldowns(recorder) == []


async def test_no_attempt_starts_during_a_cooldown_after_slow_start_delay(
    fast_config: Config, recorder: Any
) -> None:
    """A worker sleeping its slow-start delay must not start while a new cooldown is in force
    (the second comes from "a" refused again after backing off alone: an escalation)."""
    timeline: list[tuple[str, Any]] = []
    limiter = Recording(
        timeline,
        cooldowns=[2.0, 15.0, 2.0],
        slow_start=lambda n: (n < 2, 10.0 if n == 1 else 0.0),
    )
    clock = VirtualClock()
    strategy = FakeStrategy(latency=1.0, clock=clock, script={"a": ["rate_limit"] * 3})
    processor = ParallelBatchProcessor(
        config=fast_config(max_workers=2),
        rate_limit_strategy=limiter,
        observers=[recorder],
        clock=clock,
    )
    results = await results_by_id(processor, strategy, ["a", "b", "c"])
    assert all(r.success for r in results.values())
    assert len(recorder.of(EV.COOLDOWN_STARTED)) == 2
    assert starts_during_cooldowns(recorder) == []


async def test_retry_backoff_does_not_start_during_cooldown(
    fast_config: Config, recorder: Any
) -> None:
    clock = VirtualClock()
    strategy = FakeStrategy(
        latency=0.5,
        clock=clock,
        script={"slow-retry": ["server_error"], "limited": ["rate_limit"]},
    )
    processor = ParallelBatchProcessor(
        config=fast_config(
            max_workers=2,
            retry={"initial_wait": 2.0, "max_wait": 2.0, "jitter": False},
            rate_limit={"cooldown_seconds": 10.0},
        ),
        observers=[recorder],
        clock=clock,
    )
    results = await results_by_id(processor, strategy, ["slow-retry", "limited"])
    assert all(r.success for r in results.values())
    assert starts_during_cooldowns(recorder) == []


async def test_retry_after_is_honoured(fast_config: Config, recorder: Any) -> None:
    clock = VirtualClock()
    strategy = FakeStrategy(script={"x": ["rate_limit:45"]})
    processor = ParallelBatchProcessor(
        config=fast_config(rate_limit={"cooldown_seconds": 300.0}),  # not this
        observers=[recorder],
        clock=clock,
    )
    results = await results_by_id(processor, strategy, ["x"])
    assert results["x"].success
    assert clock.now() == pytest.approx(45.0)
    (cooldown,) = recorder.of(EV.COOLDOWN_STARTED)
    assert cooldown["duration"] == pytest.approx(45.0)
    (ended,) = recorder.of(EV.COOLDOWN_ENDED)
    assert ended["duration"] == pytest.approx(45.0)


async def test_rate_limits_do_not_use_up_max_attempts(fast_config: Config) -> None:
    strategy = FakeStrategy(script={"x": ["rate_limit:0.001"] * 5 + ["ok"]})
    processor = ParallelBatchProcessor(config=fast_config(retry={"max_attempts": 2}))
    results = await results_by_id(processor, strategy, ["x"])
    assert results["x"].success
    assert [a for _, a in strategy.calls] == [1, 2, 3, 4, 5, 6]


async def test_rate_limits_and_errors_counted_separately(fast_config: Config) -> None:
    steps = ["rate_limit:0.001", "server_error", "rate_limit:0.001", "rate_limit:0.001", "ok"]
    strategy = FakeStrategy(script={"x": steps})
    processor = ParallelBatchProcessor(config=fast_config(retry={"max_attempts": 2}))
    results = await results_by_id(processor, strategy, ["x"])
    assert results["x"].success
    assert len(strategy.calls) == 5


async def test_rate_limit_retries_have_their_own_budget(fast_config: Config, recorder: Any) -> None:
    strategy = FakeStrategy(script={"x": ["rate_limit:0.001"] * 10})
    processor = ParallelBatchProcessor(
        config=fast_config(retry={"max_attempts": 10}, rate_limit={"max_rate_limit_retries": 3}),
        observers=[recorder],
    )
    results = await results_by_id(processor, strategy, ["x"])
    assert not results["x"].success
    assert len(strategy.calls) == 4  # the first call plus 3 rate-limit retries
    assert results["x"].error_category == "rate_limit"
    (failed,) = recorder.of(EV.ITEM_FAILED)
    assert failed["error_category"] == "rate_limit"


async def test_default_rate_limit_budget_is_twenty(fast_config: Config) -> None:
    strategy = FakeStrategy(script={"x": ["rate_limit:0.0001"] * 30})
    processor = ParallelBatchProcessor(config=fast_config(rate_limit={"cooldown_seconds": 0.0}))
    results = await results_by_id(processor, strategy, ["x"])
    assert not results["x"].success
    assert len(strategy.calls) == 21


# --------------------------------------------------------------------------- slow start


class Logging(FakeStrategy):
    """A FakeStrategy that writes its calls into a shared timeline."""

    def __init__(self, timeline: list[tuple[str, Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeline = timeline

    async def execute(
        self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
    ) -> Any:
        self.timeline.append(("execute", prompt))
        return await super().execute(prompt, attempt, timeout, state)


async def test_slow_start_applied_after_the_cooldown(fast_config: Config) -> None:
    timeline: list[tuple[str, Any]] = []
    cooldown = 0.02
    limiter = Recording(timeline, cooldowns=[cooldown], slow_start=lambda n: (n < 3, 0.001))
    strategy = Logging(timeline, script={"a": ["rate_limit"]})
    processor = ParallelBatchProcessor(
        config=fast_config(max_workers=1), rate_limit_strategy=limiter
    )
    results = await results_by_id(processor, strategy, ["a", "b", "c", "d", "e"])
    assert all(r.success for r in results.values())
    assert limiter.on_rate_limit_calls == [(0, 1)]
    # Asked once per attempt after the cooldown, counting up, until it says stop;
    # each decision comes before the attempt it delays.
    assert timeline == [
        ("execute", "a"),
        ("on_rate_limit", 1),
        ("slow_start", 0),
        ("execute", "a"),
        ("slow_start", 1),
        ("execute", "b"),
        ("slow_start", 2),
        ("execute", "c"),
        ("slow_start", 3),
        ("execute", "d"),
        ("execute", "e"),
    ]
    # Slow start begins once the cooldown is over, not during it.
    assert min(limiter.slow_start_at) >= limiter.limited_at[0] + cooldown - 0.002


async def test_default_strategy_slow_start_from_config(fast_config: Config) -> None:
    processor = ParallelBatchProcessor(
        config=fast_config(
            rate_limit={
                "slow_start_items": 4,
                "slow_start_initial_delay": 0.004,
                "slow_start_final_delay": 0.001,
            }
        )
    )
    limiter = processor.rate_limit_strategy
    delays = [limiter.should_apply_slow_start(n) for n in range(6)]
    assert [apply for apply, _ in delays] == [True, True, True, True, False, False]
    assert delays[0][1] == pytest.approx(0.004)
    assert delays[3][1] == pytest.approx(0.00175)
    assert all(d[1] >= 0.001 for d in delays[:4])


async def test_one_storm_one_cooldown_without_retry_after(
    fast_config: Config, recorder: Any
) -> None:
    """An item answered 429 twice, no Retry-After: the first 429 pauses every worker; the
    second, within the same storm, backs the item off alone per the retry policy instead of
    starting a longer cooldown for everybody."""
    strategy = FakeStrategy(script={"x": ["rate_limit", "rate_limit"]})
    processor = ParallelBatchProcessor(
        config=fast_config(
            max_workers=1, rate_limit={"cooldown_seconds": 0.01, "backoff_multiplier": 2.0}
        ),
        observers=[recorder],
    )
    results = await results_by_id(processor, strategy, ["x"])
    assert results["x"].success
    assert len(recorder.of(EV.RATE_LIMIT_HIT)) == 2
    assert [c["consecutive"] for c in recorder.of(EV.COOLDOWN_STARTED)] == [1]


async def test_a_storm_that_outlasts_the_backoffs_grows_the_cooldown(
    fast_config: Config, recorder: Any
) -> None:
    """Refused again after backing off alone, an item escalates the storm: the cooldowns
    grow by the policy's multiplier (1, 2, 3 in a row)."""
    strategy = FakeStrategy(script={"x": ["rate_limit"] * 4})
    processor = ParallelBatchProcessor(
        config=fast_config(
            max_workers=1, rate_limit={"cooldown_seconds": 0.01, "backoff_multiplier": 2.0}
        ),
        observers=[recorder],
    )
    results = await results_by_id(processor, strategy, ["x"])
    assert results["x"].success
    cooldowns = recorder.of(EV.COOLDOWN_STARTED)
    assert [c["consecutive"] for c in cooldowns] == [1, 2, 3]
    assert [c["duration"] for c in cooldowns] == pytest.approx([0.01, 0.02, 0.04])


async def test_fixed_delay_strategy_in_a_run(fast_config: Config, recorder: Any) -> None:
    limiter = FixedDelayStrategy(cooldown=0.02, delay_between_requests=0.001)
    strategy = FakeStrategy(script={"a": ["rate_limit"]})
    processor = ParallelBatchProcessor(
        config=fast_config(max_workers=1), rate_limit_strategy=limiter, observers=[recorder]
    )
    results = await results_by_id(processor, strategy, ["a", "b"])
    assert all(r.success for r in results.values())
    assert [c["duration"] for c in recorder.of(EV.COOLDOWN_STARTED)] == [0.02]
    assert limiter.should_apply_slow_start(1000) == (True, 0.001)


async def test_get_stats_reports_cooldown_while_cooling(fast_config: Config) -> None:
    strategy = FakeStrategy(script={"x": ["rate_limit:5"]})
    processor = ParallelBatchProcessor(config=fast_config())
    await processor.start(collect_results=False)
    try:
        await processor.add_work(LLMWorkItem("x", strategy, "x"))
        for _ in range(2000):
            stats = await processor.get_stats()
            if stats["rate_limit_count"]:
                break
            await asyncio.sleep(0)
        assert stats["rate_limit_count"] == 1
        assert 0 < stats["cooldown_remaining"] <= 5
        assert stats["processed"] == 0
    finally:
        await asyncio.wait_for(processor.shutdown(), 20)  # ends the cooldown early


# --------------------------------------------------------------------------- pacing


class StartTimes(LLMCallStrategy[str]):
    """Records the (virtual) time of every call; known token estimate."""

    def __init__(self, clock: VirtualClock, estimate: int = 10, tokens: int = 10) -> None:
        self.clock = clock
        self.starts: list[float] = []
        self.estimate = estimate
        self.tokens = tokens

    def estimate_tokens(self, prompt: str) -> int:
        return self.estimate

    async def execute(
        self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
    ) -> tuple[str, TokenUsage]:
        self.starts.append(self.clock.now())
        half = self.tokens // 2
        usage: TokenUsage = {
            "input_tokens": half,
            "output_tokens": self.tokens - half,
            "total_tokens": self.tokens,
        }
        return prompt, usage


async def test_requests_per_minute_spaces_starts(fast_config: Config) -> None:
    """60 requests a minute: one start a second (just over, by the safety margin)."""
    clock = VirtualClock()
    strategy = StartTimes(clock)
    processor = ParallelBatchProcessor(
        config=fast_config(max_workers=4, max_requests_per_minute=60), clock=clock
    )
    await results_by_id(processor, strategy, [f"p{n}" for n in range(4)])
    gaps = [b - a for a, b in itertools.pairwise(sorted(strategy.starts))]
    assert gaps == pytest.approx([1.0 / (1.0 - SAFETY_MARGIN)] * 3)


async def test_pacing_changes_while_the_run_goes_on(fast_config: Config) -> None:
    """set_pacing mid-run: 60 rpm (a start a second), then 120 rpm, then none at all."""
    clock = VirtualClock()
    processor = ParallelBatchProcessor(
        config=fast_config(max_workers=1, max_requests_per_minute=60), clock=clock
    )

    class Retuned(StartTimes):
        async def execute(
            self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
        ) -> tuple[str, TokenUsage]:
            if len(self.starts) == 3:
                processor.set_pacing(120, None)
            if len(self.starts) == 6:
                processor.set_pacing(None, None)
            return await super().execute(prompt, attempt, timeout, state)

    strategy = Retuned(clock)
    await results_by_id(processor, strategy, [f"p{n}" for n in range(9)])
    gaps = [b - a for a, b in itertools.pairwise(strategy.starts)]
    second = 1.0 / (1.0 - SAFETY_MARGIN)
    # A new pace applies at once, to the slot already booked too. Without a budget, nothing
    # waits.
    assert gaps[:3] == pytest.approx([second] * 3)
    assert gaps[3:6] == pytest.approx([second / 2] * 3)
    assert gaps[6:] == pytest.approx([0.0] * 2)
    with pytest.raises(ValueError, match="max_requests_per_minute"):
        processor.set_pacing(0, None)


async def test_tokens_per_minute_spaces_starts(fast_config: Config) -> None:
    """Like requests per minute, the token budget is spent evenly, not in a first burst.

    600 tokens/min = 10 tokens/s; 10 tokens per call -> one call a second. A bucket that
    starts full lets the first minute's 600 tokens go at once and, refilled meanwhile,
    lets a sliding minute carry up to twice the budget.
    """
    clock = VirtualClock()
    strategy = StartTimes(clock, estimate=10, tokens=10)
    processor = ParallelBatchProcessor(
        config=fast_config(max_workers=4, max_tokens_per_minute=600), clock=clock
    )
    await results_by_id(processor, strategy, [f"p{n}" for n in range(4)])
    gaps = [b - a for a, b in itertools.pairwise(sorted(strategy.starts))]
    assert gaps == pytest.approx([1.0 / (1.0 - SAFETY_MARGIN)] * 3)
