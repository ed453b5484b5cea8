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
from async_batch_llm.testing import FakeStrategy
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
    strategy = FakeStrategy(latency=0.01, script={p: ["rate_limit"] for p in prompts})
    processor = ParallelBatchProcessor(
        config=fast_config(max_workers=workers, rate_limit={"cooldown_seconds": 0.05}),
        observers=[recorder],
    )
    results = await results_by_id(processor, strategy, prompts)
    assert all(r.success for r in results.values())
    hits = recorder.of(EV.RATE_LIMIT_HIT)
    assert len(hits) == workers
    assert len({h["worker_id"] for h in hits}) == workers
    (cooldown,) = recorder.of(EV.COOLDOWN_STARTED)
    assert cooldown["duration"] == pytest.approx(0.05)
    assert cooldown["consecutive"] == 1
    assert len(recorder.of(EV.COOLDOWN_ENDED)) == 1
    assert starts_during_cooldowns(recorder) == []
    assert (await processor.get_stats())["rate_limit_count"] == workers


async def test_no_attempt_starts_during_a_cooldown(fast_config: Config, recorder: Any) -> None:
    prompts = [f"p{n}" for n in range(12)]
    script = {"p1": ["rate_limit"], "p5": ["rate_limit", "rate_limit"], "p9": ["server_error"]}
    strategy = FakeStrategy(latency=0.005, script=script)
    processor = ParallelBatchProcessor(
        config=fast_config(max_workers=3, rate_limit={"cooldown_seconds": 0.02}),
        observers=[recorder],
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
    strategy = FakeStrategy(latency=0.01, script={"a": ["rate_limit:0.3"]})
    processor = ParallelBatchProcessor(
        config=fast_config(max_workers=2, max_requests_per_minute=600), observers=[recorder]
    )
    results = await results_by_id(processor, strategy, ["a", "b"])
    assert all(r.success for r in results.values())
    assert len(recorder.of(EV.COOLDOWN_STARTED)) == 1
    assert starts_during_cooldowns(recorder) == []


async def test_no_attempt_starts_during_a_cooldown_after_slow_start_delay(
    fast_config: Config, recorder: Any
) -> None:
    """A worker sleeping its slow-start delay must not start while a new cooldown is in force."""
    timeline: list[tuple[str, Any]] = []
    limiter = Recording(
        timeline,
        cooldowns=[0.02, 0.15, 0.02],
        slow_start=lambda n: (n < 2, 0.1 if n == 1 else 0.0),
    )
    strategy = FakeStrategy(latency=0.01, script={"a": ["rate_limit", "rate_limit"]})
    processor = ParallelBatchProcessor(
        config=fast_config(max_workers=2), rate_limit_strategy=limiter, observers=[recorder]
    )
    results = await results_by_id(processor, strategy, ["a", "b", "c"])
    assert all(r.success for r in results.values())
    assert len(recorder.of(EV.COOLDOWN_STARTED)) == 2
    assert starts_during_cooldowns(recorder) == []


async def test_retry_backoff_does_not_start_during_cooldown(
    fast_config: Config, recorder: Any
) -> None:
    strategy = FakeStrategy(
        latency=0.005, script={"slow-retry": ["server_error"], "limited": ["rate_limit"]}
    )
    processor = ParallelBatchProcessor(
        config=fast_config(
            max_workers=2,
            retry={"initial_wait": 0.02, "max_wait": 0.02, "jitter": False},
            rate_limit={"cooldown_seconds": 0.1},
        ),
        observers=[recorder],
    )
    results = await results_by_id(processor, strategy, ["slow-retry", "limited"])
    assert all(r.success for r in results.values())
    assert starts_during_cooldowns(recorder) == []


async def test_retry_after_is_honoured(fast_config: Config, recorder: Any) -> None:
    strategy = FakeStrategy(script={"x": ["rate_limit:0.05"]})
    processor = ParallelBatchProcessor(
        # The configured cooldown (300 s) would make this test hang if used.
        config=fast_config(rate_limit={"cooldown_seconds": 300.0}),
        observers=[recorder],
    )
    results = await results_by_id(processor, strategy, ["x"])
    assert results["x"].success
    (cooldown,) = recorder.of(EV.COOLDOWN_STARTED)
    assert cooldown["duration"] == pytest.approx(0.05)
    (ended,) = recorder.of(EV.COOLDOWN_ENDED)
    assert ended["duration"] == pytest.approx(0.05)


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


async def test_consecutive_limits_grow_the_cooldown(fast_config: Config, recorder: Any) -> None:
    strategy = FakeStrategy(script={"x": ["rate_limit", "rate_limit", "rate_limit"]})
    processor = ParallelBatchProcessor(
        config=fast_config(
            max_workers=1, rate_limit={"cooldown_seconds": 0.01, "backoff_multiplier": 2.0}
        ),
        observers=[recorder],
    )
    results = await results_by_id(processor, strategy, ["x", "y"])
    assert all(r.success for r in results.values())
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
    """Records the monotonic time of every call; known token estimate."""

    def __init__(self, estimate: int = 10, tokens: int = 10) -> None:
        self.starts: list[float] = []
        self.estimate = estimate
        self.tokens = tokens

    def estimate_tokens(self, prompt: str) -> int:
        return self.estimate

    async def execute(
        self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
    ) -> tuple[str, TokenUsage]:
        self.starts.append(time.monotonic())
        half = self.tokens // 2
        usage: TokenUsage = {
            "input_tokens": half,
            "output_tokens": self.tokens - half,
            "total_tokens": self.tokens,
        }
        return prompt, usage


TOLERANCE = 0.01


async def test_requests_per_minute_spaces_starts(fast_config: Config) -> None:
    strategy = StartTimes()
    processor = ParallelBatchProcessor(
        config=fast_config(max_workers=4, max_requests_per_minute=600)
    )
    await results_by_id(processor, strategy, [f"p{n}" for n in range(4)])
    starts = sorted(strategy.starts)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) == 3
    assert all(gap >= 0.1 - TOLERANCE for gap in gaps), gaps


async def test_tokens_per_minute_spaces_starts(fast_config: Config) -> None:
    """Like requests per minute, the token budget is spent evenly, not in a first burst.

    6000 tokens/min = 100 tokens/s; 10 tokens per call -> one call per 0.1 s. A bucket that
    starts full lets the first minute's 6000 tokens go at once and, refilled meanwhile,
    lets a sliding minute carry up to twice the budget.
    """
    strategy = StartTimes(estimate=10, tokens=10)
    processor = ParallelBatchProcessor(
        config=fast_config(max_workers=4, max_tokens_per_minute=6000)
    )
    await results_by_id(processor, strategy, [f"p{n}" for n in range(4)])
    starts = sorted(strategy.starts)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap >= 0.1 - TOLERANCE for gap in gaps), gaps
