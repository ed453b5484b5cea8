"""MockAgent: a stand-in for a pydantic-ai agent, with scripted latency, failures and limits."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ..llm_strategies import PydanticAIStrategy

TOutput = TypeVar("TOutput")


class MockRateLimitError(Exception):
    """What a provider's 429 looks like to the default classifier."""

    status_code = 429


class MockUsage:
    """Usage in pydantic-ai's names (and the legacy ``request_tokens``/``response_tokens``)."""

    def __init__(
        self, request_tokens: int = 100, response_tokens: int = 50, cache_read_tokens: int = 0
    ) -> None:
        self.input_tokens = request_tokens
        self.output_tokens = response_tokens
        self.cache_read_tokens = cache_read_tokens
        self.total_tokens = request_tokens + response_tokens

    @property
    def request_tokens(self) -> int:
        """Legacy name of ``input_tokens``."""
        return self.input_tokens

    @property
    def response_tokens(self) -> int:
        """Legacy name of ``output_tokens``."""
        return self.output_tokens


class MockResult(Generic[TOutput]):
    """What ``MockAgent.run`` returns: ``.output`` and ``.usage()`` (the reference's
    signature: ``usage_info`` defaults to 100 request and 50 response tokens)."""

    def __init__(self, output: TOutput, usage_info: MockUsage | None = None) -> None:
        self.output = output
        self._usage = usage_info if usage_info is not None else MockUsage()

    def usage(self) -> MockUsage:
        """Tokens of the call."""
        return self._usage


class MockAgent(Generic[TOutput]):
    """An agent with ``async run(prompt)`` that simulates latency, failures and rate limits."""

    def __init__(
        self,
        response_factory: Callable[[str], TOutput] | None = None,
        latency: float = 0.1,
        failure_rate: float = 0.0,
        rate_limit_on_call: int | None = None,
        timeout_on_call: int | None = None,
        tokens_per_call: dict[str, int] | None = None,
        seed: int | None = None,
    ) -> None:
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be within [0, 1], got {failure_rate!r}")
        if latency < 0:
            raise ValueError(f"latency must be >= 0, got {latency!r}")
        self.response_factory = response_factory
        self.latency = latency
        self.failure_rate = failure_rate
        self.rate_limit_on_call = rate_limit_on_call
        self.timeout_on_call = timeout_on_call
        self.tokens_per_call = tokens_per_call or {"input_tokens": 10, "output_tokens": 20}
        self.call_count = 0
        self._random = random.Random(seed)

    async def run(self, prompt: str, **_: Any) -> MockResult[Any]:
        """Simulate one agent call (call numbers are 1-based; scripted faults fire once)."""
        self.call_count += 1
        call = self.call_count
        if self.latency:
            await asyncio.sleep(self.latency)
        if call == self.rate_limit_on_call:
            raise MockRateLimitError("429 RESOURCE_EXHAUSTED: rate limit exceeded")
        if call == self.timeout_on_call:
            await asyncio.sleep(3600)
        if self.failure_rate and self._random.random() < self.failure_rate:
            raise RuntimeError(f"random mock failure on call {call}")
        output: Any = (
            self.response_factory(prompt)
            if self.response_factory
            else {"response": f"Mock response to: {prompt[:50]}"}
        )
        tokens = self.tokens_per_call
        usage = MockUsage(
            tokens.get("input_tokens", 10),
            tokens.get("output_tokens", 20),
            tokens.get("cached_input_tokens", 0),
        )
        return MockResult(output, usage)


def mock_strategy(agent: Any) -> PydanticAIStrategy[Any]:
    """A strategy that runs ``agent`` (a :class:`MockAgent` or any agent look-alike)."""
    return PydanticAIStrategy(agent)
