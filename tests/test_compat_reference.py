"""Code written against the reference library's API document runs unchanged on ours.

Each test is one of that document's examples (or a strategy in the style of its OpenAI and
Anthropic example programs), with the assertions a user of it would make.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from pydantic import BaseModel

from async_batch_llm import (
    LLMWorkItem,
    MetricsObserver,
    ParallelBatchProcessor,
    ProcessorConfig,
    PydanticAIStrategy,
    SimpleBatchProcessor,
    SimpleWorkItem,
    TokenTrackingError,
    TokenUsage,
)
from async_batch_llm.base import LLMResponse
from async_batch_llm.classifiers import GeminiErrorClassifier
from async_batch_llm.core import RateLimitConfig, RetryConfig, signatures
from async_batch_llm.llm_strategies import LLMCallStrategy
from async_batch_llm.strategies import DefaultErrorClassifier


class Summary(BaseModel):
    title: str
    summary: str


class ChatStrategy(LLMCallStrategy[str]):
    """The reference's OpenAI/Anthropic example shape: no ``state`` parameter anywhere."""

    def __init__(self, fail_first: int = 0) -> None:
        self.calls = 0
        self.fail_first = fail_first
        self.errors: list[tuple[str, int]] = []

    async def execute(self, prompt: str, attempt: int, timeout: float) -> tuple[str, TokenUsage]:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise ConnectionError("connection reset by peer")
        return f"reply to {prompt}", {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}

    async def on_error(self, exception: Exception, attempt: int) -> None:
        self.errors.append((type(exception).__name__, attempt))


def fast() -> ProcessorConfig:
    return ProcessorConfig(
        max_workers=2,
        timeout_per_item=5.0,
        retry=RetryConfig(max_attempts=3, initial_wait=0.001, max_wait=0.001),
        rate_limit=RateLimitConfig(cooldown_seconds=0.01, slow_start_items=0),
    )


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("async_batch_llm.core", ["ProcessorConfig", "RetryConfig", "RateLimitConfig"]),
        ("async_batch_llm.core", ["LLMModel", "ManagedLLMModel", "AgentLike", "ResultLike"]),
        ("async_batch_llm.classifiers", ["GeminiErrorClassifier"]),
        ("async_batch_llm.base", ["LLMResponse", "RetryState", "TokenUsage", "WorkItemResult"]),
        ("async_batch_llm.models", ["GeminiModel", "GeminiCachedModel"]),
        ("async_batch_llm.token_extractor", ["TokenExtractor"]),
        ("async_batch_llm.middleware", ["BaseMiddleware", "Middleware"]),
        ("async_batch_llm.observers", ["BaseObserver", "ProcessingEvent", "MetricsObserver"]),
        ("async_batch_llm.strategies", ["DefaultErrorClassifier", "ExponentialBackoffStrategy"]),
    ],
)
def test_documented_module_paths_import(module: str, names: list[str]) -> None:
    imported = importlib.import_module(module)
    for name in names:
        assert hasattr(imported, name), f"{module}.{name}"


async def test_strategies_written_without_state_work_unchanged() -> None:
    strategy = ChatStrategy(fail_first=1)
    async with ParallelBatchProcessor(config=fast()) as processor:
        for i in range(3):
            await processor.add_work(LLMWorkItem(f"item_{i}", strategy, f"Task {i}"))
        result = await processor.process_all()
    assert result.succeeded == 3 and result.failed == 0
    assert strategy.errors == [("ConnectionError", 1)]


async def test_a_strategy_class_is_inspected_once_not_per_call(monkeypatch: Any) -> None:
    inspected: list[Any] = []
    real = signatures.inspect.signature

    def counting(method: Any) -> Any:
        inspected.append(method)
        return real(method)

    monkeypatch.setattr(signatures.inspect, "signature", counting)

    class OnceStrategy(ChatStrategy):
        pass

    async with ParallelBatchProcessor(config=fast()) as processor:
        for i in range(20):
            await processor.add_work(LLMWorkItem(f"i{i}", OnceStrategy(), "p"))
        assert (await processor.process_all()).succeeded == 20
    assert len(inspected) == 2  # execute and on_error, once each


async def test_logic_bugs_fail_at_once_instead_of_retrying() -> None:
    class Buggy(LLMCallStrategy[str]):
        calls = 0

        async def execute(self, prompt: str, attempt: int, timeout: float) -> tuple[str, Any]:
            Buggy.calls += 1
            return None.upper(), {}  # type: ignore[attr-defined]

    async with ParallelBatchProcessor(config=fast()) as processor:
        await processor.add_work(LLMWorkItem("bug", Buggy(), "p"))
        result = await processor.process_all()
    assert Buggy.calls == 1
    assert result.results[0].error is not None
    assert result.results[0].error.startswith("AttributeError")
    for bug in (TypeError("x"), AttributeError("x"), NameError("x"), KeyError("x")):
        info = DefaultErrorClassifier().classify(bug)
        assert (info.is_retryable, info.error_category) == (False, "logic_error")


async def test_simple_aliases_take_one_type_parameter() -> None:
    async with SimpleBatchProcessor[str](config=fast()) as processor:
        await processor.add_work(
            SimpleWorkItem[str](item_id="1", strategy=ChatStrategy(), prompt="Hi")
        )
        result = await processor.process_all()
    assert result.results[0].output == "reply to Hi"


async def test_add_work_after_process_all_keeps_the_reference_message() -> None:
    processor = ParallelBatchProcessor(config=fast())
    await processor.add_work(LLMWorkItem("a", ChatStrategy(), "p"))
    await processor.process_all()
    with pytest.raises(RuntimeError, match=r"Cannot add work after process_all\(\) has started"):
        await processor.add_work(LLMWorkItem("b", ChatStrategy(), "p"))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ProcessorConfig(max_workers=0), "max_workers must be >= 1"),
        (lambda: RetryConfig(initial_wait=0), "initial_wait must be > 0"),
        (lambda: RetryConfig(initial_wait=5, max_wait=1), "max_wait must be >= initial_wait"),
        (
            lambda: RateLimitConfig(slow_start_initial_delay=0.1, slow_start_final_delay=1),
            "slow_start_initial_delay must be >= slow_start_final_delay",
        ),
        (lambda: ProcessorConfig(max_requests_per_minute=0), "must be > 0 or None"),
    ],
)
def test_configuration_errors_use_the_reference_wording(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


async def test_pydantic_ai_dry_run_builds_the_result_type_unvalidated() -> None:
    class Agent:
        result_type = Summary

        async def run(self, prompt: str) -> Any:
            raise AssertionError("a dry run calls nothing")

    output, tokens = await PydanticAIStrategy(agent=Agent()).dry_run("Summarize document 7")
    assert isinstance(output, Summary)
    assert tokens == {"input_tokens": 3, "output_tokens": 50, "total_tokens": 53}

    class TextAgent(Agent):
        result_type = str  # type: ignore[assignment]

    output, tokens = await PydanticAIStrategy(agent=TextAgent()).dry_run("Hello")
    assert output.startswith("[DRY-RUN]") and tokens["input_tokens"] == 100


async def test_metrics_export_prometheus_with_the_reference_names() -> None:
    metrics = MetricsObserver()
    async with ParallelBatchProcessor(config=fast(), observers=[metrics]) as processor:
        await processor.add_work(LLMWorkItem("a", ChatStrategy(), "p"))
        await processor.process_all()
    text = await metrics.export_prometheus()
    assert "# HELP async_batch_llm_items_processed Total items processed" in text
    assert "async_batch_llm_items_succeeded 1" in text


def test_gemini_classifier_and_token_tracking_as_documented() -> None:
    info = GeminiErrorClassifier().classify(Exception("429 RESOURCE_EXHAUSTED"))
    assert (info.is_rate_limit, info.error_category, info.suggested_wait) == (
        True,
        "rate_limit",
        300.0,
    )
    error = TokenTrackingError("bad JSON", token_usage={"total_tokens": 150})
    assert error.__dict__["_failed_token_usage"] == {"total_tokens": 150}
    response = LLMResponse(text="hi", input_tokens=2, output_tokens=1, total_tokens=3)
    assert response.token_usage == {"input_tokens": 2, "output_tokens": 1, "total_tokens": 3}


def test_gemini_models_without_the_google_sdk_say_what_to_install(monkeypatch: Any) -> None:
    models = importlib.import_module("async_batch_llm.models")
    monkeypatch.setattr(models, "genai", None)
    for cls in (models.GeminiModel, models.GeminiCachedModel):
        with pytest.raises(ImportError, match="google-genai is required"):
            cls("gemini-2.5-flash", object(), *([[]] if cls is models.GeminiCachedModel else []))


async def test_tokens_of_a_failed_attempt_are_read_from_the_wrapped_agent_result() -> None:
    """As the reference's retry tests write it: an agent result (``MockResult(output,
    usage_info=MockUsage(...))``) attached to the cause of the error that failed an attempt
    still counts, so the item's tokens are those of both calls."""
    from async_batch_llm.testing.mocks import MockResult, MockUsage

    class Answer(BaseModel):
        value: str

    class FlakyAgent:
        def __init__(self) -> None:
            self.calls = 0

        async def run(self, prompt: str, **_: Any) -> MockResult[Answer]:
            self.calls += 1
            usage = MockUsage(request_tokens=100 * self.calls, response_tokens=50 * self.calls)
            if self.calls == 1:
                inner = Exception("Inner validation error")
                inner.result = MockResult(output=None, usage_info=usage)  # type: ignore[attr-defined]
                raise Exception("Validation failed") from inner
            return MockResult(output=Answer(value="Success"), usage_info=usage)

    assert MockResult("x").usage().total_tokens == 150  # the reference's default usage
    config = ProcessorConfig(
        max_workers=1, timeout_per_item=10.0, retry=RetryConfig(max_attempts=3, initial_wait=0.01)
    )
    async with ParallelBatchProcessor[str, Answer, None](config=config) as processor:
        await processor.add_work(LLMWorkItem("item_1", PydanticAIStrategy(agent=FlakyAgent()), "q"))
        result = await processor.process_all()
    (only,) = result.results
    assert only.success and only.output == Answer(value="Success")
    assert only.token_usage["input_tokens"] == 300
    assert only.token_usage["output_tokens"] == 150


async def test_the_documented_logging_middleware_runs_as_written() -> None:
    """The API document's middleware example: ``after_process(self, work_item, result)``
    (the reference's code calls ``after_process(result)``, so it fails its own example);
    both shapes work here, each class inspected once."""
    from async_batch_llm.middleware import BaseMiddleware
    from async_batch_llm.testing import FakeStrategy

    seen: list[str] = []

    class LoggingMiddleware(BaseMiddleware[Any, Any, Any]):
        async def before_process(self, work_item: Any) -> Any:
            seen.append(f"Processing {work_item.item_id}")
            return work_item

        async def after_process(self, work_item: Any, result: Any) -> Any:  # type: ignore[override]
            seen.append(f"Completed {work_item.item_id}: {result.success}")
            return result

    class Tagging(BaseMiddleware[Any, Any, Any]):  # the shape of our ABC: (result) only
        async def after_process(self, result: Any) -> Any:
            result.output = f"{result.output}!"
            return result

    config = ProcessorConfig(max_workers=1, timeout_per_item=10.0)
    processor = ParallelBatchProcessor[str, str, None](
        config=config, middlewares=[LoggingMiddleware(), Tagging()]
    )
    async with processor:
        for n in range(2):
            await processor.add_work(LLMWorkItem(f"doc-{n}", FakeStrategy(), f"p{n}"))
        result = await processor.process_all()
    assert result.succeeded == 2
    assert all(r.output.endswith("!") for r in result.results)
    assert sorted(seen) == [
        "Completed doc-0: True",
        "Completed doc-1: True",
        "Processing doc-0",
        "Processing doc-1",
    ]
