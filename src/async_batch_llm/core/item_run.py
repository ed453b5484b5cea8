"""One item on its way through its attempts: what they counted and what they cost."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..base import LLMWorkItem, RetryState, TokenUsage


@dataclass(slots=True, eq=False)
class ItemRun:
    """The running tally of one item, from its first attempt to its result."""

    item: LLMWorkItem[Any, Any, Any]
    index: int  # the item's place in the input (results come in completion order)
    worker_id: int
    started: float  # clock time of the start
    state: RetryState = field(default_factory=RetryState)  # the strategy's, across attempts
    attempts: int = 0  # calls made
    counted: int = 0  # calls that count against max_attempts (rate limits do not)
    rate_limited: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost: float | None = None  # None: no attempt was priced
    #: The last failed attempt's HTTP status and rate-limit snapshot (None: it had none).
    status: int | None = None
    limits: dict[str, Any] | None = None

    def add_usage(self, usage: Mapping[str, Any] | None) -> None:
        """Add one attempt's tokens (failed attempts are billed too)."""
        if not usage:
            return
        self.input_tokens += usage.get("input_tokens", 0)
        self.output_tokens += usage.get("output_tokens", 0)
        self.cached_tokens += usage.get("cached_input_tokens", 0)

    def add_cost(self, cost: float | None) -> None:
        """Add one attempt's cost, when it has one."""
        if cost is not None:
            self.cost = (self.cost or 0.0) + cost

    def token_usage(self) -> TokenUsage:
        """Every attempt's tokens so far, as a result carries them."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "cached_input_tokens": self.cached_tokens,
        }
