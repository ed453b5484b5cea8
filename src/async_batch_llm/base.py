"""Core data types of the engine: work items, results, batch totals and the processor base."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypedDict, TypeVar

if TYPE_CHECKING:
    from .llm_strategies import LLMCallStrategy

TInput = TypeVar("TInput")
TOutput = TypeVar("TOutput")
TContext = TypeVar("TContext")

_MISSING = object()


class TokenUsage(TypedDict, total=False):
    """Tokens one call (or one item's attempts together) used."""

    input_tokens: int
    output_tokens: int
    total_tokens: int
    cached_input_tokens: int


def zero_usage() -> TokenUsage:
    """A fresh all-zero usage dict (one per result: callers may mutate it)."""
    return {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0, "cached_input_tokens": 0}


PostProcessorFunc = Callable[["WorkItemResult[TOutput, TContext]"], Awaitable[None] | None]
ProgressCallbackFunc = Callable[[int, int, "str | None"], Awaitable[None] | None]


@dataclass
class LLMResponse:
    """What an ``LLMModel.generate`` returns, whatever the provider: text, tokens, extras."""

    text: str
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cached_input_tokens: int = 0
    metadata: dict[str, Any] | None = None
    raw: Any = None

    @property
    def token_usage(self) -> TokenUsage:
        """The counts as a :class:`TokenUsage` (``cached_input_tokens`` only when non-zero)."""
        usage: TokenUsage = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cached_input_tokens:
            usage["cached_input_tokens"] = self.cached_input_tokens
        return usage


@dataclass
class LLMWorkItem(Generic[TInput, TOutput, TContext]):
    """One unit of work: an id, the strategy that makes the call, its prompt and context."""

    item_id: str
    strategy: LLMCallStrategy[TOutput]
    prompt: str = ""
    context: TContext | None = None

    def __post_init__(self) -> None:
        item_id = self.item_id
        if type(item_id) is not str or not item_id or item_id.isspace():
            _check_item_id(item_id)  # one check on the common path; the message on the rare one
        if self.strategy is None:
            raise ValueError(
                "strategy must not be None. "
                "Pass an LLMCallStrategy instance (e.g., PydanticAIStrategy, GeminiStrategy, "
                "or your custom subclass)."
            )
        if not isinstance(self.prompt, str):
            raise TypeError(
                f"prompt must be a string (got {type(self.prompt).__name__}: "
                f"{repr(self.prompt)[:80]}). "
                "If you need to pass structured data, serialize it to a string first."
            )


def _check_item_id(item_id: object) -> None:
    """Raise the reference's error for a bad ``item_id`` (a str subclass is accepted)."""
    if not item_id or not isinstance(item_id, str):
        raise ValueError(
            f"item_id must be a non-empty string (got {type(item_id).__name__}: {item_id!r}). "
            "Provide a unique string identifier for this work item."
        )
    if not item_id.strip():
        raise ValueError(
            f"item_id cannot be whitespace only (got {item_id!r}). "
            "Provide a non-whitespace string identifier."
        )


@dataclass(slots=True)
class WorkItemResult(Generic[TOutput, TContext]):
    """The outcome of one work item after all its attempts.

    The first seven fields are the reference page's, in its order; the rest are ours.
    """

    item_id: str
    success: bool
    output: TOutput | None = None
    error: str | None = None
    context: TContext | None = None
    token_usage: TokenUsage = field(default_factory=zero_usage)
    gemini_safety_ratings: dict[str, str] | None = None
    attempts: int = 0
    error_category: str | None = None
    duration: float = 0.0
    cost: float | None = None
    metadata: dict[str, Any] | None = None
    input_index: int = -1


@dataclass
class BatchResult(Generic[TOutput, TContext]):
    """All results of a batch (completion order) and totals computed from them."""

    results: list[WorkItemResult[TOutput, TContext]]
    total_items: int = 0
    succeeded: int = 0
    failed: int = 0
    total_input_tokens: int = 0
    total_output_tokens: int = 0
    total_cached_tokens: int = 0

    def __post_init__(self) -> None:
        succeeded = input_tokens = output_tokens = cached_tokens = 0
        for result in self.results:  # one pass: batches can hold millions of results
            if result.success:
                succeeded += 1
            usage = result.token_usage
            input_tokens += usage.get("input_tokens", 0)
            output_tokens += usage.get("output_tokens", 0)
            cached_tokens += usage.get("cached_input_tokens", 0)
        self.total_items = len(self.results)
        self.succeeded = succeeded
        self.failed = self.total_items - succeeded
        self.total_input_tokens = input_tokens
        self.total_output_tokens = output_tokens
        self.total_cached_tokens = cached_tokens

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens over the batch."""
        return self.total_input_tokens + self.total_output_tokens

    @property
    def total_cost(self) -> float | None:
        """Summed cost where known; None when no result carries a cost."""
        costs = [r.cost for r in self.results if r.cost is not None]
        return sum(costs) if costs else None

    def cache_hit_rate(self) -> float:
        """Percentage (0-100) of input tokens that were served from the provider's cache."""
        if self.total_input_tokens <= 0:
            return 0.0
        return self.total_cached_tokens / self.total_input_tokens * 100.0

    def effective_input_tokens(self) -> int:
        """Input tokens as billed when cached tokens cost 10 % of the normal price."""
        return self.total_input_tokens - int(self.total_cached_tokens * 0.9)

    def in_input_order(
        self, item_ids: list[str] | None = None
    ) -> list[WorkItemResult[TOutput, TContext]]:
        """Results in the order the items were added (or in the order of ``item_ids``)."""
        if item_ids is None:
            return sorted(self.results, key=_by_input_index)
        by_id = {r.item_id: r for r in self.results}
        return [by_id[i] for i in item_ids if i in by_id]

    def successes(self) -> list[WorkItemResult[TOutput, TContext]]:
        """The results that succeeded."""
        return [r for r in self.results if r.success]

    def failures(self) -> list[WorkItemResult[TOutput, TContext]]:
        """The results that failed."""
        return [r for r in self.results if not r.success]


def _by_input_index(result: WorkItemResult[Any, Any]) -> int:
    return result.input_index


class RetryState(dict[str, Any]):
    """A per-item scratch dict that lives across that item's attempts.

    A ``dict`` underneath (cheap to create per item), with the reference page's methods.
    """

    __slots__ = ()

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` for the item's later attempts."""
        self[key] = value

    def delete(self, key: str, raise_if_missing: bool = False) -> None:
        """Remove ``key``; a missing key raises ``KeyError`` only when asked to."""
        if raise_if_missing:
            del self[key]
        else:
            self.pop(key, None)

    @property
    def data(self) -> dict[str, Any]:
        """The state itself, under the reference's attribute name."""
        return self

    def __repr__(self) -> str:
        return f"RetryState({dict.__repr__(self)})"


@dataclass(slots=True)
class ProcessingStats:
    """Live counters of one processor; ``copy()`` gives a consistent snapshot."""

    total: int = 0
    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    start_time: float = field(default_factory=time.time)
    end_time: float | None = None
    error_counts: dict[str, int] = field(default_factory=dict)
    rate_limit_count: int = 0
    retry_count: int = 0
    total_input_tokens: int = 0
    total_output_tokens: int = 0
    total_tokens: int = 0
    cached_input_tokens: int = 0
    total_cost: float = 0.0
    cost_known: bool = False

    def as_dict(self) -> dict[str, Any]:
        """A plain dict of the counters (a copy: safe to keep)."""
        return {
            "total": self.total,
            "processed": self.processed,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "error_counts": dict(self.error_counts),
            "rate_limit_count": self.rate_limit_count,
            "retry_count": self.retry_count,
            "total_input_tokens": self.total_input_tokens,
            "total_output_tokens": self.total_output_tokens,
            "total_tokens": self.total_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "total_cached_tokens": self.cached_input_tokens,
            "total_cost": self.total_cost if self.cost_known else None,
        }


class BatchProcessor(ABC, Generic[TInput, TOutput, TContext]):
    """Abstract base: collect work with ``add_work`` then run it with ``process_all``."""

    @abstractmethod
    async def add_work(self, work_item: LLMWorkItem[TInput, TOutput, TContext]) -> None:
        """Queue one item."""

    @abstractmethod
    async def process_all(self) -> BatchResult[TOutput, TContext]:
        """Run every queued item and return the results."""

    @abstractmethod
    async def get_stats(self) -> dict[str, Any]:
        """Counters of the run so far."""

    async def cleanup(self) -> None:
        """Release resources; subclasses extend it."""

    async def __aenter__(self) -> BatchProcessor[TInput, TOutput, TContext]:
        return self

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> bool:
        await self.cleanup()
        return False
