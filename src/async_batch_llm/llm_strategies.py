"""Call strategies: how one item's prompt becomes one provider call, and its lifecycle."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, NoReturn, overload

from .base import LLMResponse, TokenUsage, TOutput
from .core.protocols import LLMModel, ManagedLLMModel
from .strategies.errors import TokenTrackingError

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
        """A stand-in result without calling the provider (100 input, 50 output tokens)."""
        output: Any = f"[DRY-RUN] Mock output for prompt: {prompt[:50]}..."
        return output, make_usage(100, 50)

    def estimate_tokens(self, prompt: str) -> int:
        """A cheap guess of the tokens one call will use, for tokens-per-minute pacing."""
        return len(prompt) // 4 + 1


class CallResult(tuple):  # type: ignore[type-arg]
    """``(output, usage)`` that also carries call metadata (cost, safety ratings) to the engine.

    It unpacks as the documented two-tuple, so code that calls ``execute`` directly is
    unaffected; the engine reads ``.metadata`` as it reads a three-tuple's third element.
    """

    metadata: dict[str, Any] | None

    def __new__(
        cls, output: Any, usage: TokenUsage, metadata: dict[str, Any] | None = None
    ) -> CallResult:
        result = super().__new__(cls, (output, usage))
        result.metadata = metadata
        return result


def raise_with_token_usage(error: Exception, usage: TokenUsage) -> NoReturn:
    """Re-raise ``error`` carrying the tokens its call consumed (wrapped if it cannot hold them)."""
    if hasattr(error, "__dict__"):
        error.__dict__["_failed_token_usage"] = usage
        raise error
    raise TokenTrackingError(str(error), token_usage=usage) from error


class GeminiStrategy(LLMCallStrategy[TOutput]):
    """Calls an :class:`LLMModel` and parses its :class:`LLMResponse` (``text`` by default).

    The model's ``prepare``/``cleanup`` (a provider-side cache) run with the strategy's.
    Beyond the reference: ``retry_temperature_step`` raises the temperature on each retry,
    and the response's safety ratings reach ``WorkItemResult.gemini_safety_ratings``.
    """

    @overload
    def __init__(
        self: GeminiStrategy[str],
        model: LLMModel,
        response_parser: None = None,
        *,
        temperature: float = 0.0,
        retry_temperature_step: float = 0.0,
    ) -> None: ...

    @overload
    def __init__(
        self,
        model: LLMModel,
        response_parser: Callable[[LLMResponse], TOutput],
        *,
        temperature: float = 0.0,
        retry_temperature_step: float = 0.0,
    ) -> None: ...

    def __init__(
        self,
        model: LLMModel,
        response_parser: Callable[[LLMResponse], TOutput] | None = None,
        *,
        temperature: float = 0.0,
        retry_temperature_step: float = 0.0,
    ) -> None:
        """Without a ``response_parser`` the output is ``response.text`` (a ``str``)."""
        if model is None:
            raise ValueError("model must not be None: pass an LLMModel such as GeminiModel")
        self.model = model
        self.response_parser: Callable[[LLMResponse], Any] = response_parser or _text_of
        self.temperature = temperature
        self.retry_temperature_step = retry_temperature_step

    async def prepare(self) -> None:
        if isinstance(self.model, ManagedLLMModel):
            await self.model.prepare()

    async def cleanup(self) -> None:
        if isinstance(self.model, ManagedLLMModel):
            await self.model.cleanup()

    async def execute(
        self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
    ) -> tuple[TOutput, TokenUsage]:
        temperature = self.temperature + self.retry_temperature_step * (attempt - 1)
        response = await self.model.generate(prompt, temperature=temperature)
        usage = response.token_usage
        try:
            output = self.response_parser(response)
        except Exception as error:
            raise_with_token_usage(error, usage)
        ratings = (response.metadata or {}).get("safety_ratings")
        if ratings is None:
            return output, usage
        return CallResult(output, usage, {"gemini_safety_ratings": ratings})


def _text_of(response: LLMResponse) -> Any:
    return response.text


class PydanticAIStrategy(LLMCallStrategy[TOutput]):
    """Runs any agent with ``async run(prompt)`` (pydantic-ai's ``Agent`` or a look-alike).

    The result's ``.output`` (or older ``.data``) is the output; ``.usage()`` gives tokens,
    read before the output so a reply that fails validation is still counted. pydantic-ai
    itself is never imported, so constructing one never fails for want of it.
    """

    def __init__(self, agent: Any) -> None:
        if agent is None or not callable(getattr(agent, "run", None)):
            raise ValueError("agent must have an async run(prompt) method")
        self.agent = agent

    async def execute(
        self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
    ) -> tuple[TOutput, TokenUsage]:
        result = await self.agent.run(prompt)
        usage = usage_from_agent_result(result)
        try:
            output = result.output
        except AttributeError:
            output = _legacy_output(result, usage)
        except Exception as error:
            raise_with_token_usage(error, usage)
        return output, usage

    async def dry_run(self, prompt: str) -> tuple[TOutput, TokenUsage]:
        """An unvalidated instance of the agent's pydantic ``result_type`` (base dry run else)."""
        try:
            result_type = self.agent.result_type
            construct = getattr(result_type, "model_construct", None)
            if not isinstance(result_type, type) or construct is None:
                return await super().dry_run(prompt)
            output = construct()
        except Exception:
            return await super().dry_run(prompt)
        words = len(prompt.split())
        return output, {"input_tokens": words, "output_tokens": 50, "total_tokens": words + 50}


def _legacy_output(result: Any, usage: TokenUsage) -> Any:
    """Older pydantic-ai results hold the output in ``.data``."""
    try:
        return result.data
    except Exception as error:
        raise_with_token_usage(error, usage)


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
