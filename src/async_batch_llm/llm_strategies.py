"""Call strategies: how one item's prompt becomes one provider call, and its lifecycle."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, runtime_checkable

from .base import TokenUsage, TOutput

if TYPE_CHECKING:
    from .base import RetryState
    from .strategies.errors import ErrorClassifier

logger = logging.getLogger(__name__)


def make_usage(input_tokens: int = 0, output_tokens: int = 0, cached: int = 0) -> TokenUsage:
    """A complete usage dict from its parts."""
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
        "cached_input_tokens": cached,
    }


class LLMCallStrategy(ABC, Generic[TOutput]):
    """How to call a model for one item.

    ``prepare`` runs once per strategy instance before its first call, ``execute`` once
    per attempt, ``on_error`` after every failed attempt, ``cleanup`` when the processor
    is closed (``async with`` or ``shutdown()``).
    """

    #: Classifier the processor uses for this strategy's errors when none was given to it.
    error_classifier: ErrorClassifier | None = None

    async def prepare(self) -> None:
        """Set up shared resources (clients, caches) once."""

    @abstractmethod
    async def execute(
        self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
    ) -> tuple[TOutput, TokenUsage] | tuple[TOutput, TokenUsage, dict[str, Any]]:
        """Make one call; return ``(output, usage)`` or ``(output, usage, metadata)``."""

    async def on_error(
        self, exception: Exception, attempt: int, state: RetryState | None = None
    ) -> None:
        """React to a failed attempt (adjust ``state`` for the next one)."""

    async def cleanup(self) -> None:
        """Release what ``prepare`` acquired."""

    async def dry_run(self, prompt: str) -> tuple[TOutput, TokenUsage]:
        """A stand-in result without calling the provider."""
        output: Any = f"[dry-run] {prompt[:50]}"
        return output, make_usage(100, 50)

    def estimate_tokens(self, prompt: str) -> int:
        """A cheap guess of the tokens one call will use, for tokens-per-minute pacing."""
        return len(prompt) // 4 + 1


@dataclass
class LLMResponse(Generic[TOutput]):
    """What an :class:`LLMModel` returns: the output, its usage and provider extras."""

    output: TOutput
    token_usage: TokenUsage = field(default_factory=lambda: make_usage())
    safety_ratings: dict[str, str] | None = None
    metadata: dict[str, Any] | None = None

    @property
    def text(self) -> Any:
        """Alias of ``output`` for text models."""
        return self.output


@runtime_checkable
class LLMModel(Protocol[TOutput]):
    """Any object that can generate a response for a prompt."""

    async def generate(self, prompt: str, *, temperature: float = ...) -> LLMResponse[TOutput]:
        """Generate one response."""
        ...


@runtime_checkable
class ManagedLLMModel(LLMModel[TOutput], Protocol[TOutput]):
    """An :class:`LLMModel` with set-up and tear-down."""

    async def prepare(self) -> None:
        """Acquire resources before the first call."""
        ...

    async def cleanup(self) -> None:
        """Release resources after the last call."""
        ...


class GeminiStrategy(LLMCallStrategy[TOutput]):
    """Calls an :class:`LLMModel`; raises the temperature a little on each retry."""

    def __init__(
        self,
        model: LLMModel[TOutput],
        *,
        temperature: float = 0.0,
        retry_temperature_step: float = 0.0,
    ) -> None:
        if model is None:
            raise ValueError("model must not be None")
        self.model = model
        self.temperature = temperature
        self.retry_temperature_step = retry_temperature_step

    async def prepare(self) -> None:
        prepare = getattr(self.model, "prepare", None)
        if prepare is not None:
            await prepare()

    async def cleanup(self) -> None:
        cleanup = getattr(self.model, "cleanup", None)
        if cleanup is not None:
            await cleanup()

    async def execute(
        self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
    ) -> tuple[TOutput, TokenUsage, dict[str, Any]]:
        temperature = self.temperature + self.retry_temperature_step * (attempt - 1)
        response = await self.model.generate(prompt, temperature=temperature)
        metadata: dict[str, Any] = dict(response.metadata or {})
        if response.safety_ratings is not None:
            metadata["gemini_safety_ratings"] = response.safety_ratings
        return response.output, response.token_usage, metadata


class PydanticAIStrategy(LLMCallStrategy[TOutput]):
    """Runs any agent with ``async run(prompt)`` (pydantic-ai's ``Agent`` or a look-alike).

    The result's ``.output`` (or older ``.data``) is the output; ``.usage()`` gives tokens.
    pydantic-ai itself is never imported.
    """

    def __init__(self, agent: Any) -> None:
        if agent is None or not callable(getattr(agent, "run", None)):
            raise ValueError("agent must have an async run(prompt) method")
        self.agent = agent

    async def execute(
        self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
    ) -> tuple[TOutput, TokenUsage]:
        result = await self.agent.run(prompt)
        output = result.output if hasattr(result, "output") else result.data
        return output, usage_from_agent_result(result)


def usage_from_agent_result(result: Any) -> TokenUsage:
    """Token usage from a pydantic-ai style result (new and legacy field names)."""
    usage_method = getattr(result, "usage", None)
    usage = usage_method() if callable(usage_method) else usage_method
    if usage is None:
        return make_usage()

    def first(*names: str) -> int:
        for name in names:
            value = getattr(usage, name, None)
            if isinstance(value, int):
                return value
        return 0

    return make_usage(
        first("input_tokens", "request_tokens"),
        first("output_tokens", "response_tokens"),
        first("cache_read_tokens", "cached_input_tokens"),
    )
