"""async_batch_llm: run large batches of LLM calls fast, within provider limits, losing nothing.

Importing this package is cheap: litellm is imported only when a provider call needs it.
"""

from __future__ import annotations

from importlib import metadata as _metadata
from typing import Any, TypeVar

from .base import (
    BatchProcessor,
    BatchResult,
    LLMResponse,
    LLMWorkItem,
    PostProcessorFunc,
    ProcessingStats,
    ProgressCallbackFunc,
    RetryState,
    TokenUsage,
    WorkItemResult,
)
from .classifiers import GeminiErrorClassifier
from .core import LLMModel, ManagedLLMModel, ProcessorConfig, RateLimitConfig, RetryConfig
from .errors import AblError
from .llm_strategies import GeminiStrategy, LLMCallStrategy, PydanticAIStrategy
from .middleware.base import BaseMiddleware, Middleware
from .observers.base import BaseObserver, ProcessingEvent, ProcessorObserver
from .observers.metrics import MetricsObserver
from .parallel import ParallelBatchProcessor
from .strategies.errors import (
    DefaultErrorClassifier,
    ErrorClassifier,
    ErrorInfo,
    FrameworkTimeoutError,
    TokenTrackingError,
)
from .strategies.rate_limit import ExponentialBackoffStrategy, FixedDelayStrategy, RateLimitStrategy

try:
    __version__ = _metadata.version("abl")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    from ._version import VERSION as __version__

_T = TypeVar("_T")

#: ``ParallelBatchProcessor[str, T, None]``: string prompts, output ``T``, no context.
SimpleBatchProcessor = ParallelBatchProcessor[str, _T, None]
#: ``LLMWorkItem[str, T, None]``.
SimpleWorkItem = LLMWorkItem[str, _T, None]
#: ``WorkItemResult[T, None]``.
SimpleResult = WorkItemResult[_T, None]

_LAZY = {
    "GeminiModel": "async_batch_llm.models",
    "GeminiCachedModel": "async_batch_llm.models",
    "LiteLLMStrategy": "async_batch_llm.providers.litellm",
    "LiteLLMErrorClassifier": "async_batch_llm.providers.litellm_errors",
}


def __getattr__(name: str) -> Any:
    """Import the litellm-backed names on first use, keeping ``import async_batch_llm`` fast."""
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'async_batch_llm' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


__all__ = [
    "AblError",
    "BaseMiddleware",
    "BaseObserver",
    "BatchProcessor",
    "BatchResult",
    "DefaultErrorClassifier",
    "ErrorClassifier",
    "ErrorInfo",
    "ExponentialBackoffStrategy",
    "FixedDelayStrategy",
    "FrameworkTimeoutError",
    "GeminiCachedModel",
    "GeminiErrorClassifier",
    "GeminiModel",
    "GeminiStrategy",
    "LLMCallStrategy",
    "LLMModel",
    "LLMResponse",
    "LLMWorkItem",
    "LiteLLMErrorClassifier",
    "LiteLLMStrategy",
    "ManagedLLMModel",
    "MetricsObserver",
    "Middleware",
    "ParallelBatchProcessor",
    "PostProcessorFunc",
    "ProcessingEvent",
    "ProcessingStats",
    "ProcessorConfig",
    "ProcessorObserver",
    "ProgressCallbackFunc",
    "PydanticAIStrategy",
    "RateLimitConfig",
    "RateLimitStrategy",
    "RetryConfig",
    "RetryState",
    "SimpleBatchProcessor",
    "SimpleResult",
    "SimpleWorkItem",
    "TokenTrackingError",
    "TokenUsage",
    "WorkItemResult",
    "__version__",
]
