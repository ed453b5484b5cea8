"""Processing semantics: lifecycle, retries, timeouts, middleware, callbacks, stats, tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pydantic
import pytest

from async_batch_llm import (
    BaseMiddleware,
    FrameworkTimeoutError,
    LLMCallStrategy,
    LLMWorkItem,
    ParallelBatchProcessor,
    ProcessingEvent,
    ProcessorConfig,
    RetryState,
    TokenTrackingError,
    TokenUsage,
    WorkItemResult,
)
from async_batch_llm.testing import FakeStrategy

EV = ProcessingEvent
Config = Callable[..., ProcessorConfig]


def usage(inp: int, out: int, cached: int = 0) -> TokenUsage:
    return {
        "input_tokens": inp,
        "output_tokens": out,
        "total_tokens": inp + out,
        "cached_input_tokens": cached,
    }


async def run(
    processor: ParallelBatchProcessor[Any, Any, Any],
    strategy: LLMCallStrategy[Any],
    prompts: list[str],
) -> dict[str, WorkItemResult[Any, Any]]:
    """Add one item per prompt (item_id = prompt), process them, return results by id."""
    for prompt in prompts:
        await processor.add_work(LLMWorkItem(prompt, strategy, prompt))
    batch = await processor.process_all()
    assert sorted(r.item_id for r in batch.results) == sorted(prompts)
    return {r.item_id: r for r in batch.results}


def validation_error() -> pydantic.ValidationError:
    try:
        pydantic.TypeAdapter(int).validate_python("not a number")
    except pydantic.ValidationError as exc:
        return exc
    raise AssertionError("pydantic accepted a non-number")


# --------------------------------------------------------------------------- lifecycle


class CountingPrepare(LLMCallStrategy[str]):
    """Counts prepare calls; prepare yields to the loop so that races would show."""

    def __init__(self, fail_first: int = 0) -> None:
        self.prepare_calls = 0
        self.prepared = 0
        self.cleanups = 0
        self.fail_first = fail_first
        self.executes = 0

    async def prepare(self) -> None:
        self.prepare_calls += 1
        await asyncio.sleep(0.005)
        if self.prepare_calls <= self.fail_first:
            raise RuntimeError(f"prepare failed (call {self.prepare_calls})")
        self.prepared += 1

    async def execute(
        self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
    ) -> tuple[str, TokenUsage]:
        assert self.prepared, "execute before prepare"
        self.executes += 1
        await asyncio.sleep(0)
        return prompt.upper(), usage(1, 1)

    async def cleanup(self) -> None:
        self.cleanups += 1


async def test_shared_strategy_prepared_once_with_many_workers(fast_config: Config) -> None:
    shared = CountingPrepare()
    other = CountingPrepare()
    processor = ParallelBatchProcessor(config=fast_config(max_workers=8))
    for i in range(20):
        await processor.add_work(LLMWorkItem(f"s{i}", shared, "p"))
        await processor.add_work(LLMWorkItem(f"o{i}", other, "p"))
    batch = await processor.process_all()
    assert batch.succeeded == 40
    assert shared.prepare_calls == 1
    assert other.prepare_calls == 1


async def test_failed_prepare_fails_that_item_and_is_retried_next(
    fast_config: Config, recorder: Any
) -> None:
    strategy = CountingPrepare(fail_first=1)
    processor = ParallelBatchProcessor(config=fast_config(max_workers=1), observers=[recorder])
    results = await run(processor, strategy, ["first", "second", "third"])
    assert not results["first"].success
    assert "prepare failed" in (results["first"].error or "")
    assert results["second"].success and results["third"].success
    assert strategy.prepare_calls == 2
    failed = recorder.of(EV.ITEM_FAILED)
    assert [d["item_id"] for d in failed] == ["first"]


async def test_failed_prepare_with_concurrent_workers_loses_no_item(fast_config: Config) -> None:
    strategy = CountingPrepare(fail_first=2)
    processor = ParallelBatchProcessor(config=fast_config(max_workers=4))
    results = await run(processor, strategy, [f"i{i}" for i in range(8)])
    failed = [r for r in results.values() if not r.success]
    assert len(failed) == 2
    assert all("prepare failed" in (r.error or "") for r in failed)
    assert strategy.prepare_calls == 3


async def test_cleanup_only_via_context_manager(fast_config: Config) -> None:
    strategy = CountingPrepare()
    processor = ParallelBatchProcessor(config=fast_config())
    async with processor:
        await run(processor, strategy, ["a", "b"])
        assert strategy.cleanups == 0
    assert strategy.cleanups == 1


async def test_cleanup_via_shutdown(fast_config: Config) -> None:
    strategy = CountingPrepare()
    processor = ParallelBatchProcessor(config=fast_config())
    await run(processor, strategy, ["a"])
    assert strategy.cleanups == 0
    await processor.shutdown()
    assert strategy.cleanups == 1


async def test_context_manager_does_not_swallow_exceptions(fast_config: Config) -> None:
    strategy = CountingPrepare()
    with pytest.raises(KeyError, match="boom"):
        async with ParallelBatchProcessor(config=fast_config()) as processor:
            await run(processor, strategy, ["a"])
            raise KeyError("boom")
    assert strategy.cleanups == 1


async def test_dry_run_calls_dry_run_never_execute(fast_config: Config) -> None:
    strategy = FakeStrategy()
    processor = ParallelBatchProcessor(config=fast_config(dry_run=True))
    results = await run(processor, strategy, ["alpha", "beta"])
    assert strategy.calls == []
    for prompt, result in results.items():
        assert result.success
        assert prompt in str(result.output)
        assert result.token_usage["input_tokens"] == 100
        assert result.token_usage["output_tokens"] == 50
        assert result.token_usage["total_tokens"] == 150


async def test_dry_run_uses_strategy_override(fast_config: Config) -> None:
    class Custom(FakeStrategy):
        async def dry_run(self, prompt: str) -> tuple[Any, TokenUsage]:
            return f"custom:{prompt}", usage(3, 4)

    strategy = Custom()
    processor = ParallelBatchProcessor(config=fast_config(dry_run=True))
    results = await run(processor, strategy, ["x"])
    assert results["x"].output == "custom:x"
    assert results["x"].token_usage["total_tokens"] == 7
    assert strategy.calls == []


class ThreeTuple(LLMCallStrategy[str]):
    async def execute(
        self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
    ) -> tuple[str, TokenUsage, dict[str, Any]]:
        return f"out:{prompt}", usage(4, 2), {"cost": 0.25, "gemini_safety_ratings": {"H": "LOW"}}


async def test_three_tuple_accepted(fast_config: Config) -> None:
    processor = ParallelBatchProcessor(config=fast_config())
    results = await run(processor, ThreeTuple(), ["a", "b"])
    assert results["a"].success and results["a"].output == "out:a"
    assert results["a"].token_usage["total_tokens"] == 6
    assert results["a"].cost == pytest.approx(0.25)
    assert results["a"].gemini_safety_ratings == {"H": "LOW"}


class MalformedReturn(LLMCallStrategy[Any]):
    async def execute(
        self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
    ) -> Any:
        if prompt.startswith("bad"):
            return None  # not an (output, usage) tuple
        return prompt, usage(1, 1)


async def test_malformed_strategy_return_fails_the_item_and_loses_nothing(
    fast_config: Config,
) -> None:
    """A strategy bug must fail its item, not kill the worker and drop the queued items."""
    processor = ParallelBatchProcessor(config=fast_config(max_workers=1))
    prompts = ["a", "bad1", "b", "c"]
    for prompt in prompts:
        await processor.add_work(LLMWorkItem(prompt, MalformedReturn(), prompt))
    batch = await asyncio.wait_for(processor.process_all(), 10)
    by_id = {r.item_id: r for r in batch.results}
    assert sorted(by_id) == sorted(prompts)
    assert not by_id["bad1"].success
    assert by_id["a"].success and by_id["b"].success and by_id["c"].success


class Recording(LLMCallStrategy[str]):
    """Fails the first ``failures`` attempts of each prompt and records what it saw."""

    def __init__(self, failures: int = 2) -> None:
        self.failures = failures
        self.seen: list[tuple[str, int, int | None, RetryState | None]] = []
        self.errors: list[tuple[str, int, RetryState | None]] = []

    async def execute(
        self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
    ) -> tuple[str, TokenUsage]:
        assert state is not None
        self.seen.append((prompt, attempt, state.get("attempts_seen"), state))
        state.set("attempts_seen", attempt)
        if attempt <= self.failures:
            raise RuntimeError(f"{prompt} attempt {attempt}")
        return prompt, usage(1, 1)

    async def on_error(
        self, exception: Exception, attempt: int, state: RetryState | None = None
    ) -> None:
        self.errors.append((str(exception), attempt, state))


async def test_attempt_is_one_based_and_retry_state_carried(fast_config: Config) -> None:
    strategy = Recording(failures=2)
    processor = ParallelBatchProcessor(config=fast_config(max_workers=2))
    results = await run(processor, strategy, ["a", "b"])
    assert results["a"].success and results["b"].success
    for prompt in ("a", "b"):
        seen = [s for s in strategy.seen if s[0] == prompt]
        assert [s[1] for s in seen] == [1, 2, 3]
        assert [s[2] for s in seen] == [None, 1, 2]
        states = {id(s[3]) for s in seen}
        assert len(states) == 1  # one RetryState per item across its attempts
        errors = [e for e in strategy.errors if e[0].startswith(prompt)]
        assert [e[1] for e in errors] == [1, 2]  # on_error after every failed attempt
        assert all(e[2] is seen[0][3] for e in errors)
    # Different items get different states.
    state_of = {prompt: state for prompt, _, _, state in strategy.seen}
    assert state_of["a"] is not state_of["b"]


async def test_on_error_called_after_every_failed_attempt(fast_config: Config) -> None:
    strategy = FakeStrategy(script={"x": ["server_error", "error", "rate_limit:0.001", "ok"]})
    processor = ParallelBatchProcessor(config=fast_config())
    results = await run(processor, strategy, ["x"])
    assert results["x"].success
    assert [e[1] for e in strategy.errors] == [1, 2, 3]
    assert [e[0] for e in strategy.errors] == [
        "FakeServerError",
        "RuntimeError",
        "FakeRateLimitError",
    ]


# --------------------------------------------------------------------------- retries


async def test_retries_up_to_max_attempts_then_fail(fast_config: Config, recorder: Any) -> None:
    strategy = FakeStrategy(default_script=["server_error"] * 10)
    processor = ParallelBatchProcessor(
        config=fast_config(retry={"max_attempts": 4}), observers=[recorder]
    )
    results = await run(processor, strategy, ["x"])
    assert not results["x"].success
    assert [a for _, a in strategy.calls] == [1, 2, 3, 4]
    assert results["x"].attempts == 4
    assert "503" in (results["x"].error or "")
    assert [d["attempt"] for d in recorder.of(EV.ITEM_STARTED)] == [1, 2, 3, 4]
    assert len(recorder.of(EV.ITEM_RETRY)) == 3
    failed = recorder.of(EV.ITEM_FAILED)
    assert len(failed) == 1 and failed[0]["item_id"] == "x"
    assert failed[0]["error_type"] == "FakeServerError"


async def test_success_on_last_attempt(fast_config: Config) -> None:
    strategy = FakeStrategy(script={"x": ["error", "error"]})
    processor = ParallelBatchProcessor(config=fast_config(retry={"max_attempts": 3}))
    results = await run(processor, strategy, ["x"])
    assert results["x"].success and results["x"].attempts == 3


async def test_max_attempts_one_means_no_retry(fast_config: Config) -> None:
    strategy = FakeStrategy(script={"x": ["error"]})
    processor = ParallelBatchProcessor(config=fast_config(retry={"max_attempts": 1}))
    results = await run(processor, strategy, ["x"])
    assert not results["x"].success
    assert len(strategy.calls) == 1


@pytest.mark.parametrize("jitter", [False, True])
async def test_backoff_waits_follow_formula(
    fast_config: Config, recorder: Any, jitter: bool
) -> None:
    initial, base, max_wait = 0.001, 3.0, 0.02
    strategy = FakeStrategy(default_script=["server_error"] * 10)
    processor = ParallelBatchProcessor(
        config=fast_config(
            retry={
                "max_attempts": 6,
                "initial_wait": initial,
                "max_wait": max_wait,
                "exponential_base": base,
                "jitter": jitter,
            }
        ),
        observers=[recorder],
    )
    await run(processor, strategy, ["a", "b", "c"])
    for item in ("a", "b", "c"):
        retries = [d for d in recorder.of(EV.ITEM_RETRY) if d["item_id"] == item]
        assert [d["attempt"] for d in retries] == [1, 2, 3, 4, 5]
        for data in retries:
            n = data["attempt"]
            expected = min(initial * base ** (n - 1), max_wait)
            if jitter:
                assert 0.5 * expected - 1e-12 <= data["wait"] <= expected + 1e-12
            else:
                assert data["wait"] == pytest.approx(expected)
            assert data["error_type"] == "FakeServerError"
    if jitter:  # jitter actually varies the waits
        waits = [d["wait"] for d in recorder.of(EV.ITEM_RETRY)]
        assert len(set(waits)) > 1


async def test_validation_errors_retry_at_once(fast_config: Config, recorder: Any) -> None:
    strategy = FakeStrategy(script={"x": [validation_error(), validation_error(), "ok"]})
    processor = ParallelBatchProcessor(
        config=fast_config(retry={"initial_wait": 5.0, "max_wait": 10.0}), observers=[recorder]
    )
    results = await run(processor, strategy, ["x"])
    assert results["x"].success and results["x"].attempts == 3
    retries = recorder.of(EV.ITEM_RETRY)
    assert [d["wait"] for d in retries] == [0.0, 0.0]
    assert all(d["error_type"] == "ValidationError" for d in retries)


async def test_non_retryable_fails_after_one_call(fast_config: Config, recorder: Any) -> None:
    strategy = FakeStrategy(script={"x": ["bad_request"]})
    processor = ParallelBatchProcessor(config=fast_config(), observers=[recorder])
    results = await run(processor, strategy, ["x"])
    assert not results["x"].success
    assert strategy.calls == [("x", 1)]
    assert recorder.of(EV.ITEM_RETRY) == []
    failed = recorder.of(EV.ITEM_FAILED)
    assert failed[0]["error_type"] == "FakeBadRequestError"
    assert failed[0]["error_category"] == "client_error"
    assert results["x"].error_category == "client_error"


async def test_timeout_becomes_retryable_framework_timeout(
    fast_config: Config, recorder: Any
) -> None:
    strategy = FakeStrategy(script={"x": ["timeout", "ok"], "y": ["timeout"] * 5})
    processor = ParallelBatchProcessor(
        config=fast_config(timeout_per_item=0.05, retry={"max_attempts": 2}),
        observers=[recorder],
    )
    results = await run(processor, strategy, ["x", "y"])
    assert results["x"].success and results["x"].attempts == 2
    assert not results["y"].success
    error = results["y"].error or ""
    assert "FrameworkTimeoutError" in error
    assert "0.05" in error and "timeout_per_item" in error
    assert results["y"].error_category == "framework_timeout"
    retry_types = {d["error_type"] for d in recorder.of(EV.ITEM_RETRY)}
    assert retry_types == {"FrameworkTimeoutError"}
    assert issubclass(FrameworkTimeoutError, TimeoutError)


async def test_timeout_error_raised_by_strategy_is_passed_on(fast_config: Config) -> None:
    """A provider's own TimeoutError is retried, not mistaken for the engine's limit."""
    strategy = FakeStrategy(script={"x": [TimeoutError("provider read timeout"), "ok"]})
    processor = ParallelBatchProcessor(config=fast_config(timeout_per_item=5.0))
    results = await run(processor, strategy, ["x"])
    assert results["x"].success and results["x"].attempts == 2


# --------------------------------------------------------------------------- middleware


class Logged(BaseMiddleware[Any, Any, Any]):
    def __init__(self, name: str, log: list[tuple[str, str, str]], **behaviour: Any) -> None:
        self.name = name
        self.log = log
        self.skip = behaviour.get("skip", False)
        self.handle = behaviour.get("handle")

    async def before_process(self, work_item: LLMWorkItem[Any, Any, Any]) -> Any:
        self.log.append((self.name, "before", work_item.item_id))
        return None if self.skip else work_item

    async def after_process(self, result: WorkItemResult[Any, Any]) -> WorkItemResult[Any, Any]:
        self.log.append((self.name, "after", result.item_id))
        return result

    async def on_error(self, work_item: LLMWorkItem[Any, Any, Any], error: Exception) -> Any:
        self.log.append((self.name, "on_error", work_item.item_id))
        return self.handle(work_item, error) if self.handle else None


async def test_middleware_before_in_order_every_attempt_after_in_reverse(
    fast_config: Config,
) -> None:
    log: list[tuple[str, str, str]] = []
    middlewares = [Logged("m1", log), Logged("m2", log), Logged("m3", log)]
    strategy = FakeStrategy(script={"x": ["error", "ok"]})
    processor = ParallelBatchProcessor(config=fast_config(), middlewares=middlewares)
    results = await run(processor, strategy, ["x"])
    assert results["x"].success
    assert [(n, h) for n, h, _ in log] == [
        ("m1", "before"),
        ("m2", "before"),
        ("m3", "before"),
        ("m1", "before"),
        ("m2", "before"),
        ("m3", "before"),
        ("m3", "after"),
        ("m2", "after"),
        ("m1", "after"),
    ]


async def test_middleware_can_replace_item_and_result(fast_config: Config) -> None:
    class Rewrite(BaseMiddleware[Any, Any, Any]):
        async def before_process(self, work_item: LLMWorkItem[Any, Any, Any]) -> Any:
            return LLMWorkItem(work_item.item_id, work_item.strategy, work_item.prompt + "!")

        async def after_process(self, result: WorkItemResult[Any, Any]) -> Any:
            result.output = f"<{result.output}>"
            return result

    strategy = FakeStrategy()
    processor = ParallelBatchProcessor(config=fast_config(), middlewares=[Rewrite()])
    results = await run(processor, strategy, ["x"])
    assert strategy.calls == [("x!", 1)]
    assert results["x"].output == "<fake:x!>"


async def test_middleware_returning_none_skips_item(fast_config: Config, recorder: Any) -> None:
    log: list[tuple[str, str, str]] = []
    skipper = Logged("skip", log, skip=True)
    after = Logged("after", log)
    strategy = FakeStrategy()
    processor = ParallelBatchProcessor(
        config=fast_config(), middlewares=[skipper, after], observers=[recorder]
    )
    results = await run(processor, strategy, ["x"])
    assert strategy.calls == []
    assert not results["x"].success
    assert results["x"].error == "Skipped by middleware"
    assert ("after", "before", "x") not in log  # the chain stops at the skipping one
    failed = recorder.of(EV.ITEM_FAILED)
    assert len(failed) == 1 and failed[0]["item_id"] == "x"
    assert {"error_type", "error_category"} <= failed[0].keys()
    assert recorder.of(EV.ITEM_STARTED) == []
    stats = await processor.get_stats()
    assert stats["failed"] == 1 and stats["processed"] == 1


async def test_middleware_on_error_in_order_once_first_non_none_wins(
    fast_config: Config, recorder: Any
) -> None:
    log: list[tuple[str, str, str]] = []

    def handled(item: LLMWorkItem[Any, Any, Any], error: Exception) -> WorkItemResult[Any, Any]:
        return WorkItemResult(item.item_id, False, error=f"handled: {type(error).__name__}")

    middlewares = [
        Logged("m1", log),
        Logged("m2", log, handle=handled),
        Logged("m3", log, handle=lambda i, e: WorkItemResult(i.item_id, False, error="m3")),
    ]
    strategy = FakeStrategy(default_script=["server_error"] * 5)
    processor = ParallelBatchProcessor(
        config=fast_config(retry={"max_attempts": 3}),
        middlewares=middlewares,
        observers=[recorder],
    )
    results = await run(processor, strategy, ["x"])
    assert len(strategy.calls) == 3
    assert [(n, h) for n, h, _ in log if h == "on_error"] == [
        ("m1", "on_error"),
        ("m2", "on_error"),
    ]
    assert results["x"].error == "handled: FakeServerError"
    assert not results["x"].success
    assert len(recorder.of(EV.ITEM_FAILED)) == 1


async def test_middleware_on_error_can_turn_failure_into_success(
    fast_config: Config, recorder: Any
) -> None:
    def rescue(item: LLMWorkItem[Any, Any, Any], error: Exception) -> WorkItemResult[Any, Any]:
        return WorkItemResult(item.item_id, True, output="fallback")

    strategy = FakeStrategy(script={"x": ["bad_request"]})
    processor = ParallelBatchProcessor(
        config=fast_config(), middlewares=[Logged("m", [], handle=rescue)], observers=[recorder]
    )
    results = await run(processor, strategy, ["x"])
    assert results["x"].success and results["x"].output == "fallback"
    assert recorder.of(EV.ITEM_FAILED) == []
    assert [d["item_id"] for d in recorder.of(EV.ITEM_COMPLETED)] == ["x"]
    assert (await processor.get_stats())["succeeded"] == 1


async def test_raising_middleware_is_not_fatal(fast_config: Config) -> None:
    class Broken(BaseMiddleware[Any, Any, Any]):
        async def before_process(self, work_item: LLMWorkItem[Any, Any, Any]) -> Any:
            raise RuntimeError("before broke")

        async def after_process(self, result: WorkItemResult[Any, Any]) -> Any:
            raise RuntimeError("after broke")

    processor = ParallelBatchProcessor(config=fast_config(), middlewares=[Broken()])
    results = await run(processor, FakeStrategy(), ["a", "b"])
    assert all(r.success for r in results.values())


# --------------------------------------------------------------------------- post-processor


async def test_post_processor_runs_for_every_result(fast_config: Config) -> None:
    seen: list[tuple[str, bool]] = []

    async def post(result: WorkItemResult[Any, Any]) -> None:
        seen.append((result.item_id, result.success))

    strategy = FakeStrategy(script={"bad": ["bad_request"]})
    processor = ParallelBatchProcessor(config=fast_config(), post_processor=post)
    await run(processor, strategy, ["a", "b", "bad"])
    assert sorted(seen) == [("a", True), ("b", True), ("bad", False)]


async def test_sync_post_processor_supported(fast_config: Config) -> None:
    seen: list[str] = []
    processor = ParallelBatchProcessor(
        config=fast_config(), post_processor=lambda r: seen.append(r.item_id)
    )
    await run(processor, FakeStrategy(), ["a", "b"])
    assert sorted(seen) == ["a", "b"]


async def test_raising_post_processor_is_not_fatal(fast_config: Config) -> None:
    calls: list[str] = []

    async def post(result: WorkItemResult[Any, Any]) -> None:
        calls.append(result.item_id)
        raise RuntimeError("post-processor broke")

    processor = ParallelBatchProcessor(config=fast_config(max_workers=1), post_processor=post)
    results = await run(processor, FakeStrategy(), ["a", "b", "c"])
    assert all(r.success for r in results.values())
    assert sorted(calls) == ["a", "b", "c"]


async def test_slow_post_processor_is_abandoned_after_timeout(fast_config: Config) -> None:
    cancelled: list[str] = []

    async def post(result: WorkItemResult[Any, Any]) -> None:
        try:
            await asyncio.Event().wait()  # never set
        except asyncio.CancelledError:
            cancelled.append(result.item_id)
            raise

    processor = ParallelBatchProcessor(
        config=fast_config(post_processor_timeout=0.02, max_workers=2), post_processor=post
    )
    results = await asyncio.wait_for(run(processor, FakeStrategy(), ["a", "b", "c"]), 10)
    assert all(r.success for r in results.values())
    assert sorted(cancelled) == ["a", "b", "c"]


# --------------------------------------------------------------------------- progress


@pytest.mark.parametrize("is_async", [False, True])
async def test_progress_every_interval_and_for_last(fast_config: Config, is_async: bool) -> None:
    calls: list[tuple[int, int, str | None]] = []

    def sync_callback(completed: int, total: int, item_id: str | None) -> None:
        calls.append((completed, total, item_id))

    async def async_callback(completed: int, total: int, item_id: str | None) -> None:
        await asyncio.sleep(0)
        calls.append((completed, total, item_id))

    processor = ParallelBatchProcessor(
        config=fast_config(progress_interval=3, max_workers=1),
        progress_callback=async_callback if is_async else sync_callback,
    )
    prompts = [f"i{n}" for n in range(7)]
    await run(processor, FakeStrategy(), prompts)
    assert [(c, t) for c, t, _ in calls] == [(3, 7), (6, 7), (7, 7)]
    assert [i for _, _, i in calls] == ["i2", "i5", "i6"]


async def test_progress_interval_one_reports_each_item(fast_config: Config) -> None:
    calls: list[int] = []
    processor = ParallelBatchProcessor(
        config=fast_config(progress_interval=1, max_workers=3),
        progress_callback=lambda c, t, i: calls.append(c),
    )
    await run(processor, FakeStrategy(), [f"i{n}" for n in range(5)])
    assert calls == [1, 2, 3, 4, 5]


async def test_raising_or_hanging_progress_callback_is_not_fatal(fast_config: Config) -> None:
    async def hang(completed: int, total: int, item_id: str | None) -> None:
        if completed == 1:
            await asyncio.Event().wait()
        raise RuntimeError("progress broke")

    processor = ParallelBatchProcessor(
        config=fast_config(progress_interval=1, progress_callback_timeout=0.02, max_workers=1),
        progress_callback=hang,
    )
    results = await asyncio.wait_for(run(processor, FakeStrategy(), ["a", "b", "c"]), 10)
    assert all(r.success for r in results.values())


# --------------------------------------------------------------------------- stats and tokens

STATS_KEYS = {
    "total",
    "processed",
    "succeeded",
    "failed",
    "start_time",
    "error_counts",
    "rate_limit_count",
    "total_input_tokens",
    "total_output_tokens",
    "total_tokens",
    "cached_input_tokens",
    "total_cached_tokens",
}


async def test_get_stats_mid_run_and_at_end(fast_config: Config) -> None:
    snapshots: list[dict[str, Any]] = []
    processor: ParallelBatchProcessor[Any, Any, Any]

    async def progress(completed: int, total: int, item_id: str | None) -> None:
        snapshots.append(await processor.get_stats())

    strategy = FakeStrategy(
        usage=usage(10, 5, 4),
        script={"bad": ["bad_request"], "limited": ["rate_limit:0.001"]},
    )
    processor = ParallelBatchProcessor(
        config=fast_config(progress_interval=1, max_workers=1), progress_callback=progress
    )
    before = await processor.get_stats()
    assert before.keys() >= STATS_KEYS
    assert before["processed"] == 0
    await run(processor, strategy, ["a", "bad", "limited", "b"])

    assert [s["processed"] for s in snapshots] == [1, 2, 3, 4]
    for snap in snapshots:
        assert snap.keys() >= STATS_KEYS
        assert snap["succeeded"] + snap["failed"] == snap["processed"]
        assert snap["total"] == 4

    stats = await processor.get_stats()
    assert stats["processed"] == 4
    assert stats["succeeded"] == 3
    assert stats["failed"] == 1
    assert stats["error_counts"] == {"client_error": 1}
    assert stats["rate_limit_count"] == 1
    assert stats["total_input_tokens"] == 30
    assert stats["total_output_tokens"] == 15
    assert stats["total_tokens"] == 45
    assert stats["cached_input_tokens"] == 12
    assert stats["total_cached_tokens"] == 12
    assert isinstance(stats["start_time"], float)


async def test_get_stats_returns_a_copy(fast_config: Config) -> None:
    processor = ParallelBatchProcessor(config=fast_config())
    await run(processor, FakeStrategy(script={"bad": ["bad_request"]}), ["bad"])
    stats = await processor.get_stats()
    stats["error_counts"]["client_error"] = 100
    stats["processed"] = 100
    again = await processor.get_stats()
    assert again["error_counts"] == {"client_error": 1}
    assert again["processed"] == 1


async def test_failed_attempt_tokens_counted(fast_config: Config, recorder: Any) -> None:
    strategy = FakeStrategy(
        usage=usage(10, 5),
        failed_usage=usage(7, 3, 2),
        script={"retried": ["error", "ok"], "failed": ["bad_request"]},
    )
    processor = ParallelBatchProcessor(config=fast_config(), observers=[recorder])
    results = await run(processor, strategy, ["retried", "failed"])
    retried = results["retried"].token_usage
    assert (retried["input_tokens"], retried["output_tokens"]) == (17, 8)
    assert retried["total_tokens"] == 25
    assert retried["cached_input_tokens"] == 2
    failed = results["failed"].token_usage
    assert (failed["input_tokens"], failed["output_tokens"], failed["total_tokens"]) == (7, 3, 10)
    assert failed["cached_input_tokens"] == 2
    stats = await processor.get_stats()
    assert stats["total_tokens"] == 35
    assert stats["total_cached_tokens"] == 4
    done = recorder.of(EV.BATCH_COMPLETED)[0]
    assert done["total_tokens"] == 35 and done["cached_input_tokens"] == 4


async def test_token_tracking_error_from_own_strategy(fast_config: Config) -> None:
    class Billing(LLMCallStrategy[str]):
        async def execute(
            self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
        ) -> tuple[str, TokenUsage]:
            if attempt < 3:
                raise TokenTrackingError("parse failed", token_usage=usage(20, 30))
            return "ok", usage(20, 30)

    processor = ParallelBatchProcessor(config=fast_config(retry={"max_attempts": 3}))
    results = await run(processor, Billing(), ["x"])
    assert results["x"].success
    assert results["x"].token_usage["input_tokens"] == 60
    assert results["x"].token_usage["output_tokens"] == 90
    assert results["x"].token_usage["total_tokens"] == 150


async def test_cached_tokens_summed_everywhere(fast_config: Config) -> None:
    strategy = FakeStrategy(usage=usage(100, 10, 60))
    processor = ParallelBatchProcessor(config=fast_config(max_workers=3))
    for i in range(5):
        await processor.add_work(LLMWorkItem(f"i{i}", strategy, f"p{i}"))
    batch = await processor.process_all()
    assert batch.total_cached_tokens == 300
    assert batch.total_input_tokens == 500
    assert batch.cache_hit_rate() == pytest.approx(60.0)
    assert batch.effective_input_tokens() == 200 + 30
    stats = await processor.get_stats()
    assert stats["total_cached_tokens"] == 300 == stats["cached_input_tokens"]


# --------------------------------------------------------------------------- batch mode rules


async def test_add_work_after_process_all_started_raises(fast_config: Config) -> None:
    processor: ParallelBatchProcessor[Any, Any, Any]
    errors: list[BaseException] = []

    class AddsDuringRun(LLMCallStrategy[str]):
        async def execute(
            self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
        ) -> tuple[str, TokenUsage]:
            try:
                await processor.add_work(LLMWorkItem("late", FakeStrategy(), "late"))
            except RuntimeError as exc:
                errors.append(exc)
            return "ok", usage(1, 1)

    processor = ParallelBatchProcessor(config=fast_config())
    await processor.add_work(LLMWorkItem("a", AddsDuringRun(), "a"))
    batch = await processor.process_all()
    assert [r.item_id for r in batch.results] == ["a"]
    assert len(errors) == 1
    with pytest.raises(RuntimeError):
        await processor.add_work(LLMWorkItem("later", FakeStrategy(), "later"))
    with pytest.raises(RuntimeError):
        await processor.process_all()


async def test_add_work_rejects_non_items(fast_config: Config) -> None:
    processor = ParallelBatchProcessor(config=fast_config())
    with pytest.raises(TypeError):
        await processor.add_work("not an item")  # type: ignore[arg-type]


async def test_empty_batch(fast_config: Config, recorder: Any) -> None:
    processor = ParallelBatchProcessor(config=fast_config(), observers=[recorder])
    batch = await asyncio.wait_for(processor.process_all(), 10)
    assert batch.results == [] and batch.total_items == 0
    assert recorder.events[0] is EV.BATCH_STARTED
    assert recorder.events.count(EV.BATCH_COMPLETED) == 1


async def test_results_carry_context_and_input_order(fast_config: Config) -> None:
    # Later items finish first: results come in completion order, the view in input order.
    latencies = {"p0": 0.03, "p1": 0.02, "p2": 0.01, "p3": 0.0}

    class Timed(LLMCallStrategy[str]):
        async def execute(
            self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
        ) -> tuple[str, TokenUsage]:
            await asyncio.sleep(latencies[prompt])
            return prompt, usage(1, 1)

    processor = ParallelBatchProcessor(config=fast_config(max_workers=4))
    strategy = Timed()
    for n in range(4):
        await processor.add_work(LLMWorkItem(f"i{n}", strategy, f"p{n}", context={"n": n}))
    batch = await processor.process_all()
    assert [r.item_id for r in batch.results] == ["i3", "i2", "i1", "i0"]
    assert [r.item_id for r in batch.in_input_order()] == ["i0", "i1", "i2", "i3"]
    assert [r.context for r in batch.in_input_order()] == [{"n": n} for n in range(4)]


class _BrokenRescue(BaseMiddleware[str, Any, None]):
    """An ``on_error`` that hands back something that is not a result: an engine-level crash."""

    async def on_error(self, work_item: Any, error: Exception) -> Any:
        return "not a WorkItemResult"


async def test_a_crashed_worker_surfaces_in_process_all_and_ends_the_run(
    fast_config: Callable[..., ProcessorConfig], recorder: Any
) -> None:
    """Workers run under one TaskGroup: a crash outside any one item is raised, not lost."""
    strategy = FakeStrategy(script={"bad": ["bad_request"]})
    processor = ParallelBatchProcessor(
        config=fast_config(max_workers=2), middlewares=[_BrokenRescue()], observers=[recorder]
    )
    async with processor:
        for prompt in ("ok-1", "bad", "ok-2"):
            await processor.add_work(LLMWorkItem(prompt, strategy, prompt))
        with pytest.raises(ExceptionGroup) as raised:
            await asyncio.wait_for(processor.process_all(), 20)
    assert raised.group_contains(AttributeError)
    (completed,) = recorder.of(ProcessingEvent.BATCH_COMPLETED)
    assert completed["cancelled"] is True
    assert (await processor.get_stats())["workers"] == 0


async def test_detailed_logging_tells_each_attempts_outcome(
    fast_config: Callable[..., ProcessorConfig], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="async_batch_llm.parallel")
    for detailed in (False, True):
        caplog.clear()
        strategy = FakeStrategy(script={"x": ["server_error"]})
        processor = ParallelBatchProcessor(
            config=fast_config(enable_detailed_logging=detailed, max_workers=1)
        )
        async with processor:
            await processor.add_work(LLMWorkItem(f"x-{detailed}", strategy, "x"))
            await processor.process_all()
        messages = [r.getMessage() for r in caplog.records if r.levelname == "DEBUG"]
        if detailed:
            assert any("attempt 1 failed (server_overloaded" in m for m in messages), messages
            assert any("succeeded on attempt 2" in m for m in messages), messages
        else:
            assert messages == []
