"""Built-in strategies, mocks, error classification and rate-limit strategies."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pydantic
import pytest

from async_batch_llm import (
    DefaultErrorClassifier,
    ErrorClassifier,
    ErrorInfo,
    ExponentialBackoffStrategy,
    FixedDelayStrategy,
    FrameworkTimeoutError,
    GeminiStrategy,
    LLMCallStrategy,
    LLMModel,
    LLMResponse,
    LLMWorkItem,
    ManagedLLMModel,
    ParallelBatchProcessor,
    ProcessingEvent,
    ProcessorConfig,
    PydanticAIStrategy,
    RetryState,
    TokenTrackingError,
    TokenUsage,
)
from async_batch_llm.testing import FakeStrategy, MockAgent, mock_strategy
from support import results_by_id

EV = ProcessingEvent
Config = Callable[..., ProcessorConfig]


# --------------------------------------------------------------------------- base strategy


def test_llm_call_strategy_requires_execute() -> None:
    class NoExecute(LLMCallStrategy[str]):
        pass

    with pytest.raises(TypeError):
        NoExecute()  # type: ignore[abstract]


async def test_base_strategy_defaults() -> None:
    class Minimal(LLMCallStrategy[str]):
        async def execute(
            self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
        ) -> tuple[str, TokenUsage]:
            return prompt, {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}

    strategy = Minimal()
    await strategy.prepare()
    await strategy.on_error(RuntimeError("x"), 1, None)
    await strategy.cleanup()
    output, usage = await strategy.dry_run("hello")
    assert "hello" in str(output)
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (100, 50, 150)
    assert strategy.estimate_tokens("x" * 400) > 0


# --------------------------------------------------------------------------- PydanticAI / mocks


async def test_mock_agent_through_pydantic_ai_strategy(fast_config: Config) -> None:
    agent = MockAgent(latency=0.0, response_factory=lambda p: {"echo": p})
    results = await results_by_id(
        ParallelBatchProcessor(config=fast_config()), mock_strategy(agent), ["a"]
    )
    assert results["a"].success
    assert results["a"].output == {"echo": "a"}
    assert results["a"].token_usage["input_tokens"] == 10
    assert results["a"].token_usage["output_tokens"] == 20
    assert results["a"].token_usage["total_tokens"] == 30
    assert agent.call_count == 1


async def test_mock_agent_tokens_per_call_and_cache(fast_config: Config) -> None:
    agent = MockAgent(
        latency=0.0,
        tokens_per_call={"input_tokens": 200, "output_tokens": 7, "cached_input_tokens": 150},
    )
    processor = ParallelBatchProcessor(config=fast_config())
    for n in range(2):
        await processor.add_work(LLMWorkItem(f"i{n}", mock_strategy(agent), "p"))
    batch = await processor.process_all()
    assert batch.total_input_tokens == 400
    assert batch.total_output_tokens == 14
    assert batch.total_cached_tokens == 300
    assert batch.cache_hit_rate() == pytest.approx(75.0)


async def test_mock_agent_rate_limit_on_call(fast_config: Config, recorder: Any) -> None:
    agent = MockAgent(latency=0.0, rate_limit_on_call=2)
    processor = ParallelBatchProcessor(
        config=fast_config(max_workers=1, rate_limit={"cooldown_seconds": 0.02}),
        observers=[recorder],
    )
    results = await results_by_id(processor, mock_strategy(agent), ["a", "b", "c"])
    assert all(r.success for r in results.values())
    assert len(recorder.of(EV.RATE_LIMIT_HIT)) == 1
    assert [d["duration"] for d in recorder.of(EV.COOLDOWN_STARTED)] == [0.02]
    assert agent.call_count == 4


async def test_mock_agent_timeout_on_call(fast_config: Config, recorder: Any) -> None:
    agent = MockAgent(latency=0.0, timeout_on_call=1)
    processor = ParallelBatchProcessor(
        config=fast_config(max_workers=1, timeout_per_item=0.05), observers=[recorder]
    )
    results = await results_by_id(processor, mock_strategy(agent), ["a"])
    assert results["a"].success and results["a"].attempts == 2
    (retry,) = recorder.of(EV.ITEM_RETRY)
    assert retry["error_type"] == FrameworkTimeoutError.__name__


async def test_mock_agent_failure_rate(fast_config: Config) -> None:
    agent = MockAgent(latency=0.0, failure_rate=1.0)
    processor = ParallelBatchProcessor(config=fast_config(retry={"max_attempts": 2}))
    results = await results_by_id(processor, mock_strategy(agent), ["a"])
    assert not results["a"].success
    assert "random mock failure" in (results["a"].error or "")
    assert agent.call_count == 2


def test_mock_agent_validation() -> None:
    with pytest.raises(ValueError, match="failure_rate"):
        MockAgent(failure_rate=1.5)
    with pytest.raises(ValueError, match="latency"):
        MockAgent(latency=-1)


async def test_mock_agent_seed_is_reproducible() -> None:
    async def outcomes(seed: int) -> list[bool]:
        agent = MockAgent(latency=0.0, failure_rate=0.5, seed=seed)
        out = []
        for _ in range(30):
            try:
                await agent.run("p")
                out.append(True)
            except RuntimeError:
                out.append(False)
        return out

    first = await outcomes(7)
    assert first == await outcomes(7)
    assert True in first and False in first


async def test_pydantic_ai_strategy_with_legacy_result_shape(fast_config: Config) -> None:
    class LegacyUsage:
        request_tokens = 12
        response_tokens = 8

    class LegacyResult:
        data = "legacy output"

        def usage(self) -> LegacyUsage:
            return LegacyUsage()

    class Agent:
        async def run(self, prompt: str) -> LegacyResult:
            return LegacyResult()

    results = await results_by_id(
        ParallelBatchProcessor(config=fast_config()), PydanticAIStrategy(Agent()), ["a"]
    )
    assert results["a"].output == "legacy output"
    assert results["a"].token_usage["input_tokens"] == 12
    assert results["a"].token_usage["output_tokens"] == 8
    assert results["a"].token_usage["total_tokens"] == 20


def test_pydantic_ai_strategy_rejects_non_agents() -> None:
    with pytest.raises(ValueError):
        PydanticAIStrategy(None)
    with pytest.raises(ValueError):
        PydanticAIStrategy(object())


def test_pydantic_ai_strategy_works_without_pydantic_ai() -> None:
    code = (
        "import sys\n"
        "from async_batch_llm import PydanticAIStrategy\n"
        "from async_batch_llm.testing import MockAgent\n"
        "PydanticAIStrategy(MockAgent())\n"
        "print('pydantic_ai' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- Gemini / LLMModel


class Model:
    """An LLMModel: records temperatures; optional prepare/cleanup."""

    def __init__(self, fail_first: int = 0) -> None:
        self.temperatures: list[float] = []
        self.fail_first = fail_first
        self.prepared = 0
        self.cleaned = 0

    async def generate(self, prompt: str, *, temperature: float = 0.0) -> LLMResponse:
        self.temperatures.append(temperature)
        if len(self.temperatures) <= self.fail_first:
            raise RuntimeError("503 overloaded")
        return LLMResponse(
            text=f"gen:{prompt}",
            input_tokens=3,
            output_tokens=4,
            total_tokens=7,
            metadata={"safety_ratings": {"HARM_CATEGORY_HATE_SPEECH": "NEGLIGIBLE"}},
        )


class ManagedModel(Model):
    async def prepare(self) -> None:
        self.prepared += 1

    async def cleanup(self) -> None:
        self.cleaned += 1


def test_llm_model_protocols() -> None:
    assert isinstance(Model(), LLMModel)
    assert not isinstance(Model(), ManagedLLMModel)
    assert isinstance(ManagedModel(), ManagedLLMModel)
    response = LLMResponse("x", 2, 1, 3)
    assert response.token_usage == {"input_tokens": 2, "output_tokens": 1, "total_tokens": 3}
    assert LLMResponse("x", 2, 1, 3, cached_input_tokens=1).token_usage["cached_input_tokens"] == 1


async def test_gemini_strategy_output_usage_and_safety_ratings(fast_config: Config) -> None:
    model = Model()
    results = await results_by_id(
        ParallelBatchProcessor(config=fast_config()), GeminiStrategy(model), ["a"]
    )
    result = results["a"]
    assert result.success and result.output == "gen:a"
    assert result.token_usage["total_tokens"] == 7
    assert result.gemini_safety_ratings == {"HARM_CATEGORY_HATE_SPEECH": "NEGLIGIBLE"}


async def test_gemini_strategy_raises_temperature_on_retry(fast_config: Config) -> None:
    model = Model(fail_first=2)
    strategy = GeminiStrategy(model, temperature=0.2, retry_temperature_step=0.1)
    results = await results_by_id(
        ParallelBatchProcessor(config=fast_config(max_workers=1)), strategy, ["a"]
    )
    assert results["a"].success
    assert model.temperatures == pytest.approx([0.2, 0.3, 0.4])


async def test_gemini_strategy_manages_model_lifecycle(fast_config: Config) -> None:
    model = ManagedModel()
    strategy = GeminiStrategy(model)
    processor = ParallelBatchProcessor(config=fast_config(max_workers=3))
    async with processor:
        for n in range(5):
            await processor.add_work(LLMWorkItem(f"i{n}", strategy, "p"))
        await processor.process_all()
        assert (model.prepared, model.cleaned) == (1, 0)
    assert (model.prepared, model.cleaned) == (1, 1)


def test_gemini_strategy_rejects_none_model() -> None:
    with pytest.raises(ValueError, match="model"):
        GeminiStrategy(None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- classification


class Status(Exception):
    def __init__(self, status: int, message: str = "", headers: dict[str, str] | None = None):
        super().__init__(message or f"HTTP {status}")
        self.status_code = status
        if headers is not None:
            self.response = type("Response", (), {"headers": headers, "status_code": status})()


def validation_error() -> pydantic.ValidationError:
    try:
        pydantic.TypeAdapter(int).validate_python("x")
    except pydantic.ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("exc", "retryable", "rate_limit", "timeout"),
    [
        (Status(429), True, True, False),
        (Status(503), True, False, False),
        (Status(500), True, False, False),
        (Status(400), False, False, False),
        (Status(401), False, False, False),
        (Status(403), False, False, False),
        (Status(404), False, False, False),
        (Status(408), True, False, True),
        (FrameworkTimeoutError("over", timeout_limit=1.0), True, False, True),
        (TimeoutError(), True, False, True),
        (ConnectionError("reset"), True, False, False),
        (RuntimeError("Too Many Requests"), True, True, False),
        (RuntimeError("RESOURCE_EXHAUSTED"), True, True, False),
        (RuntimeError("invalid api key"), False, False, False),
        (RuntimeError("something odd"), True, False, False),
    ],
)
def test_default_classifier(
    exc: Exception, retryable: bool, rate_limit: bool, timeout: bool
) -> None:
    info = DefaultErrorClassifier().classify(exc)
    assert (info.is_retryable, info.is_rate_limit, info.is_timeout) == (
        retryable,
        rate_limit,
        timeout,
    )
    assert isinstance(info.error_category, str) and info.error_category


def test_default_classifier_validation_error() -> None:
    info = DefaultErrorClassifier().classify(validation_error())
    assert info.is_retryable and not info.is_rate_limit
    assert info.error_category == "validation_error"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "garbage"}, None),
        ({}, None),
    ],
)
def test_default_classifier_reads_retry_after(
    headers: dict[str, str], expected: float | None
) -> None:
    info = DefaultErrorClassifier().classify(Status(429, headers=headers))
    assert info.is_rate_limit
    if expected is None:
        assert info.suggested_wait is None
    else:
        assert info.suggested_wait == pytest.approx(expected)


def test_default_classifier_reads_retry_after_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    info = DefaultErrorClassifier().classify(Status(429, headers={"retry-after": when}))
    assert info.suggested_wait is not None
    assert 20 <= info.suggested_wait <= 31


@pytest.mark.parametrize("bad", [-1.0, float("inf"), float("nan")])
def test_error_info_drops_invalid_suggested_wait(bad: float) -> None:
    assert ErrorInfo(True, True, False, "rate_limit", suggested_wait=bad).suggested_wait is None


def test_framework_timeout_error_and_token_tracking_error() -> None:
    exc = FrameworkTimeoutError("too slow", item_id="x", elapsed=2.0, timeout_limit=1.5)
    assert isinstance(exc, TimeoutError)
    assert (exc.item_id, exc.elapsed, exc.timeout_limit) == ("x", 2.0, 1.5)
    tracked = TokenTrackingError("bad parse", token_usage={"input_tokens": 5})
    assert tracked.token_usage == {"input_tokens": 5}
    assert TokenTrackingError("x").token_usage == {}


class NeverRetry(ErrorClassifier):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def classify(self, exception: Exception) -> ErrorInfo:
        self.seen.append(type(exception).__name__)
        return ErrorInfo(False, False, False, "custom_category")


async def test_processor_error_classifier_is_used(fast_config: Config, recorder: Any) -> None:
    classifier = NeverRetry()
    strategy = FakeStrategy(script={"x": ["server_error"]})
    processor = ParallelBatchProcessor(
        config=fast_config(), error_classifier=classifier, observers=[recorder]
    )
    results = await results_by_id(processor, strategy, ["x"])
    assert not results["x"].success
    assert len(strategy.calls) == 1
    assert classifier.seen == ["FakeServerError"]
    assert results["x"].error_category == "custom_category"
    assert recorder.of(EV.ITEM_FAILED)[0]["error_category"] == "custom_category"


async def test_strategy_error_classifier_used_when_processor_has_none(fast_config: Config) -> None:
    classifier = NeverRetry()
    strategy = FakeStrategy(script={"x": ["server_error"]})
    strategy.error_classifier = classifier
    results = await results_by_id(ParallelBatchProcessor(config=fast_config()), strategy, ["x"])
    assert not results["x"].success
    assert classifier.seen == ["FakeServerError"]


async def test_raising_classifier_falls_back_to_default(fast_config: Config) -> None:
    class Broken(ErrorClassifier):
        def classify(self, exception: Exception) -> ErrorInfo:
            raise RuntimeError("classifier broke")

    strategy = FakeStrategy(script={"x": ["server_error"]})
    processor = ParallelBatchProcessor(config=fast_config(), error_classifier=Broken())
    results = await results_by_id(processor, strategy, ["x"])
    assert results["x"].success and len(strategy.calls) == 2


async def test_custom_classifier_suggested_wait_sets_cooldown(
    fast_config: Config, recorder: Any
) -> None:
    class Limited(ErrorClassifier):
        def classify(self, exception: Exception) -> ErrorInfo:
            return ErrorInfo(True, True, False, "rate_limit", suggested_wait=0.03)

    strategy = FakeStrategy(script={"x": ["error"]})
    processor = ParallelBatchProcessor(
        config=fast_config(rate_limit={"cooldown_seconds": 300.0}),
        error_classifier=Limited(),
        observers=[recorder],
    )
    results = await results_by_id(processor, strategy, ["x"])
    assert results["x"].success
    assert [d["duration"] for d in recorder.of(EV.COOLDOWN_STARTED)] == [0.03]


# --------------------------------------------------------------------------- rate-limit strategies


async def test_exponential_backoff_strategy() -> None:
    strategy = ExponentialBackoffStrategy(
        initial_cooldown=10.0,
        max_cooldown=50.0,
        backoff_multiplier=2.0,
        slow_start_items=4,
        slow_start_initial_delay=2.0,
        slow_start_final_delay=0.5,
    )
    assert [await strategy.on_rate_limit(0, n) for n in (1, 2, 3, 4)] == [10.0, 20.0, 40.0, 50.0]
    delays = [strategy.should_apply_slow_start(n) for n in range(5)]
    assert [apply for apply, _ in delays] == [True, True, True, True, False]
    values = [d for _, d in delays[:4]]
    assert values[0] == pytest.approx(2.0)
    assert values == sorted(values, reverse=True)
    assert all(v >= 0.5 for v in values)


def test_rate_limit_strategy_validation() -> None:
    with pytest.raises(ValueError):
        ExponentialBackoffStrategy(initial_cooldown=-1)
    with pytest.raises(ValueError, match="backoff_multiplier"):
        ExponentialBackoffStrategy(backoff_multiplier=0.5)
    with pytest.raises(ValueError, match="slow_start_items"):
        ExponentialBackoffStrategy(slow_start_items=-1)
    with pytest.raises(ValueError):
        FixedDelayStrategy(cooldown=-1)
    with pytest.raises(ValueError):
        FixedDelayStrategy(delay_between_requests=-1)


async def test_fixed_delay_strategy() -> None:
    strategy = FixedDelayStrategy(cooldown=12.0, delay_between_requests=0.5)
    assert await strategy.on_rate_limit(3, 1) == 12.0
    assert await strategy.on_rate_limit(3, 9) == 12.0
    assert strategy.should_apply_slow_start(0) == (True, 0.5)
    assert FixedDelayStrategy(delay_between_requests=0.0).should_apply_slow_start(0)[0] is False


# --------------------------------------------------------------------------- FakeStrategy


@pytest.mark.parametrize(
    ("step", "category", "calls"),
    [
        ("server_error", "server_overloaded", 3),
        ("bad_request", "client_error", 1),
        ("error", "unknown", 3),
        (KeyError("k"), "logic_error", 1),
    ],
)
async def test_fake_strategy_steps(
    fast_config: Config, step: Any, category: str, calls: int
) -> None:
    strategy = FakeStrategy(default_script=[step] * 5)
    results = await results_by_id(ParallelBatchProcessor(config=fast_config()), strategy, ["x"])
    assert not results["x"].success
    assert results["x"].error_category == category
    assert len(strategy.calls) == calls


async def test_fake_strategy_script_by_prompt_then_ok(fast_config: Config) -> None:
    strategy = FakeStrategy(script={"a": ["error"]}, response=str.upper)
    results = await results_by_id(
        ParallelBatchProcessor(config=fast_config()), strategy, ["a", "b"]
    )
    assert results["a"].output == "A" and results["a"].attempts == 2
    assert results["b"].output == "B" and results["b"].attempts == 1
    assert sorted(strategy.calls) == [("a", 1), ("a", 2), ("b", 1)]
