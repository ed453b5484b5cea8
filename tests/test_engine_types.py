"""Public names and data types of the engine: imports, aliases, work items, results, state."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from importlib import metadata

import pytest

import async_batch_llm
from async_batch_llm import (
    BatchResult,
    LLMWorkItem,
    RetryState,
    TokenUsage,
    WorkItemResult,
)
from async_batch_llm.testing import FakeStrategy

PUBLIC_NAMES = [
    # core
    "ParallelBatchProcessor",
    "BatchProcessor",
    "LLMWorkItem",
    "WorkItemResult",
    "BatchResult",
    "TokenUsage",
    "RetryState",
    "ProcessingStats",
    "PostProcessorFunc",
    "ProgressCallbackFunc",
    # config
    "ProcessorConfig",
    "RetryConfig",
    "RateLimitConfig",
    # strategies
    "LLMCallStrategy",
    "PydanticAIStrategy",
    "GeminiStrategy",
    "LLMModel",
    "ManagedLLMModel",
    "LLMResponse",
    # errors
    "ErrorInfo",
    "ErrorClassifier",
    "DefaultErrorClassifier",
    "FrameworkTimeoutError",
    "TokenTrackingError",
    # rate limits
    "RateLimitStrategy",
    "ExponentialBackoffStrategy",
    "FixedDelayStrategy",
    # middleware / observers
    "Middleware",
    "BaseMiddleware",
    "ProcessorObserver",
    "BaseObserver",
    "MetricsObserver",
    "ProcessingEvent",
    # aliases
    "SimpleBatchProcessor",
    "SimpleWorkItem",
    "SimpleResult",
]


def ok_strategy() -> FakeStrategy:
    return FakeStrategy()


# --------------------------------------------------------------------------- public names


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_public_name_importable_from_package(name: str) -> None:
    exec(f"from async_batch_llm import {name}", {})
    assert getattr(async_batch_llm, name) is not None


@pytest.mark.parametrize("name", [*PUBLIC_NAMES, "LiteLLMStrategy", "LiteLLMErrorClassifier"])
def test_public_name_listed_in_all(name: str) -> None:
    assert name in async_batch_llm.__all__


def test_aliases_take_one_type_parameter_as_documented() -> None:
    """``SimpleBatchProcessor[T]`` is ``ParallelBatchProcessor[str, T, None]``, and so on."""
    abl = async_batch_llm
    assert abl.SimpleBatchProcessor[int] == abl.ParallelBatchProcessor[str, int, None]
    assert abl.SimpleWorkItem[int] == abl.LLMWorkItem[str, int, None]
    assert abl.SimpleResult[int] == abl.WorkItemResult[int, None]
    item = abl.SimpleWorkItem[str](item_id="1", strategy=ok_strategy(), prompt="Hello")
    assert isinstance(item, abl.LLMWorkItem)
    assert isinstance(abl.SimpleBatchProcessor[str](), abl.ParallelBatchProcessor)


def test_batch_processor_is_abstract_base_of_parallel() -> None:
    assert issubclass(async_batch_llm.ParallelBatchProcessor, async_batch_llm.BatchProcessor)
    with pytest.raises(TypeError):
        async_batch_llm.BatchProcessor()  # type: ignore[abstract]


def test_version_comes_from_distribution_metadata() -> None:
    assert async_batch_llm.__version__ == metadata.version("abl")


def test_testing_helpers_importable() -> None:
    from async_batch_llm.testing import FakeStrategy, MockAgent, mock_strategy

    assert callable(mock_strategy)
    assert MockAgent is not None and FakeStrategy is not None


def test_importing_package_does_not_import_litellm() -> None:
    code = "import sys, async_batch_llm, async_batch_llm.testing\nprint('litellm' in sys.modules)\n"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError):
        _ = async_batch_llm.NoSuchName  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- LLMWorkItem


@pytest.mark.parametrize("bad_id", ["", "   ", "\t\n"])
def test_work_item_rejects_empty_or_blank_id(bad_id: str) -> None:
    with pytest.raises(ValueError, match="item_id") as info:
        LLMWorkItem(bad_id, ok_strategy(), "p")
    assert "non-empty" in str(info.value) or "whitespace only" in str(info.value)


@pytest.mark.parametrize("bad_id", [None, 42, b"abc", ["a"]])
def test_work_item_rejects_non_string_id(bad_id: object) -> None:
    with pytest.raises(ValueError, match="item_id") as info:
        LLMWorkItem(bad_id, ok_strategy(), "p")  # type: ignore[arg-type]
    assert type(bad_id).__name__ in str(info.value)


def test_work_item_rejects_none_strategy() -> None:
    with pytest.raises(ValueError, match="strategy") as info:
        LLMWorkItem("x", None, "p")  # type: ignore[arg-type]
    assert "None" in str(info.value)


@pytest.mark.parametrize("bad_prompt", [None, 1, ["a"], b"bytes"])
def test_work_item_rejects_non_string_prompt(bad_prompt: object) -> None:
    with pytest.raises(TypeError, match="prompt") as info:
        LLMWorkItem("x", ok_strategy(), bad_prompt)  # type: ignore[arg-type]
    assert type(bad_prompt).__name__ in str(info.value)


def test_work_item_defaults_and_fields() -> None:
    strategy = ok_strategy()
    item = LLMWorkItem("x", strategy)
    assert (item.item_id, item.strategy, item.prompt, item.context) == ("x", strategy, "", None)
    item = LLMWorkItem(item_id="y", strategy=strategy, prompt="hi", context={"k": 1})
    assert item.context == {"k": 1} and item.prompt == "hi"


# --------------------------------------------------------------------------- WorkItemResult


def test_work_item_result_documented_fields_in_reference_order() -> None:
    names = [f.name for f in dataclasses.fields(WorkItemResult)]
    assert names[:7] == [
        "item_id",
        "success",
        "output",
        "error",
        "context",
        "token_usage",
        "gemini_safety_ratings",
    ]


def test_work_item_result_positional_construction_follows_reference() -> None:
    usage = {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}
    result = WorkItemResult("a", False, "out", "err", {"c": 1}, usage, {"HARM": "LOW"})
    assert result.item_id == "a"
    assert result.success is False
    assert result.output == "out"
    assert result.error == "err"
    assert result.context == {"c": 1}
    assert result.token_usage == usage
    assert result.gemini_safety_ratings == {"HARM": "LOW"}


def test_work_item_result_default_usage_is_zero_and_not_shared() -> None:
    first, second = WorkItemResult("a", True), WorkItemResult("b", True)
    for key in ("input_tokens", "output_tokens", "total_tokens"):
        assert first.token_usage[key] == 0  # type: ignore[literal-required]
    first.token_usage["input_tokens"] = 5
    assert second.token_usage["input_tokens"] == 0
    assert first.output is None and first.error is None and first.context is None
    assert first.gemini_safety_ratings is None


def test_token_usage_keys() -> None:
    keys = set(TokenUsage.__required_keys__) | set(TokenUsage.__optional_keys__)
    assert keys == {"input_tokens", "output_tokens", "total_tokens", "cached_input_tokens"}


# --------------------------------------------------------------------------- BatchResult


def usage(inp: int, out: int, cached: int = 0) -> TokenUsage:
    return {
        "input_tokens": inp,
        "output_tokens": out,
        "total_tokens": inp + out,
        "cached_input_tokens": cached,
    }


def sample_results() -> list[WorkItemResult]:
    return [
        WorkItemResult("b", True, "B", token_usage=usage(100, 10, 40), input_index=1),
        WorkItemResult("c", False, None, "boom", token_usage=usage(50, 0, 0), input_index=2),
        WorkItemResult("a", True, "A", token_usage=usage(850, 90, 460), input_index=0),
    ]


def test_batch_result_reference_fields_in_order() -> None:
    names = [f.name for f in dataclasses.fields(BatchResult)]
    assert names[:7] == [
        "results",
        "total_items",
        "succeeded",
        "failed",
        "total_input_tokens",
        "total_output_tokens",
        "total_cached_tokens",
    ]


def test_batch_result_totals_computed_from_results() -> None:
    batch = BatchResult(sample_results())
    assert batch.total_items == 3
    assert batch.succeeded == 2
    assert batch.failed == 1
    assert batch.total_input_tokens == 1000
    assert batch.total_output_tokens == 100
    assert batch.total_cached_tokens == 500


def test_batch_result_totals_ignore_passed_values() -> None:
    batch = BatchResult(sample_results(), total_items=99, succeeded=99, failed=99)
    assert (batch.total_items, batch.succeeded, batch.failed) == (3, 2, 1)


def test_cache_hit_rate_and_effective_input_tokens() -> None:
    batch = BatchResult(sample_results())
    assert batch.cache_hit_rate() == pytest.approx(50.0)
    # 500 uncached at full price + 500 cached at 10 %
    assert batch.effective_input_tokens() == 550


def test_cache_hit_rate_zero_without_input() -> None:
    assert BatchResult([]).cache_hit_rate() == 0.0
    assert BatchResult([WorkItemResult("a", True)]).cache_hit_rate() == 0.0
    assert BatchResult([]).effective_input_tokens() == 0


def test_results_missing_cached_key_count_as_zero() -> None:
    legacy = WorkItemResult(
        "a", True, token_usage={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
    )
    batch = BatchResult([legacy])
    assert batch.total_cached_tokens == 0
    assert batch.effective_input_tokens() == 10


def test_batch_result_input_order_view() -> None:
    batch = BatchResult(sample_results())
    assert [r.item_id for r in batch.results] == ["b", "c", "a"]  # as given
    assert [r.item_id for r in batch.in_input_order()] == ["a", "b", "c"]
    assert [r.item_id for r in batch.in_input_order(["c", "a", "b"])] == ["c", "a", "b"]


# --------------------------------------------------------------------------- RetryState


def test_retry_state_get_set_in() -> None:
    state = RetryState()
    assert state.get("k") is None
    assert state.get("k", 7) == 7
    assert "k" not in state
    state.set("k", 1)
    assert "k" in state
    assert state.get("k") == 1
    state.set("k", 2)
    assert state.get("k", 7) == 2


def test_retry_state_delete() -> None:
    state = RetryState()
    state.set("k", 1)
    state.delete("k")
    assert "k" not in state
    state.delete("k")  # missing: silently ignored by default
    with pytest.raises(KeyError):
        state.delete("k", raise_if_missing=True)
    state.set("j", 1)
    state.delete("j", raise_if_missing=True)
    assert "j" not in state


def test_retry_state_clear() -> None:
    state = RetryState()
    state.set("a", 1)
    state.set("b", 2)
    state.clear()
    assert "a" not in state and "b" not in state
    assert state.get("a") is None


def test_our_errors_share_one_root_and_keep_the_reference_bases() -> None:
    from async_batch_llm import AblError, FrameworkTimeoutError, TokenTrackingError
    from async_batch_llm.core.cooldown import RateLimitTooLong
    from async_batch_llm.providers.provider_errors import ProviderError
    from async_batch_llm.store import StoreError
    from async_batch_llm.strategies.errors import RateLimitRetriesExceeded, StrategyReturnError

    ours = (
        FrameworkTimeoutError,
        TokenTrackingError,
        RateLimitTooLong,
        RateLimitRetriesExceeded,
        StrategyReturnError,
        ProviderError,
        StoreError,
    )
    assert all(issubclass(error, AblError) for error in ours)
    assert issubclass(FrameworkTimeoutError, TimeoutError)
    assert issubclass(StrategyReturnError, TypeError)
    assert not issubclass(AblError, (TimeoutError, TypeError))
