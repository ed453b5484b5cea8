"""Structural types the engine accepts: agents, their results and usage, and LLM models.

They are protocols, not base classes: any object with the right methods fits, so neither
pydantic-ai nor a provider SDK is needed to use the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from ..base import LLMResponse

TOutput = TypeVar("TOutput", covariant=True)


class UsageLike(Protocol):
    """Token counts of one agent run (pydantic-ai's ``Usage`` and look-alikes)."""

    @property
    def request_tokens(self) -> int:
        """Tokens sent."""
        ...

    @property
    def response_tokens(self) -> int:
        """Tokens received."""
        ...

    @property
    def total_tokens(self) -> int:
        """Tokens in all."""
        ...


class ResultLike(Protocol[TOutput]):
    """The result of one agent run: its output, usage and messages."""

    @property
    def output(self) -> TOutput:
        """The (validated) output."""
        ...

    def usage(self) -> UsageLike | None:
        """Token usage of the run."""
        ...

    def all_messages(self) -> list[Any]:
        """Every message exchanged during the run."""
        ...


class AgentLike(Protocol[TOutput]):
    """Anything with ``async run(prompt)``, as pydantic-ai's ``Agent``."""

    async def run(self, prompt: str, **kwargs: Any) -> ResultLike[TOutput]:
        """Run the agent on one prompt."""
        ...


@runtime_checkable
class LLMModel(Protocol):
    """A provider model behind one call: ``generate`` returns a normalised :class:`LLMResponse`."""

    async def generate(
        self,
        prompt: str | list[Any],
        *,
        temperature: float = 0.0,
        system_instruction: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> LLMResponse:
        """Generate one response."""
        ...


@runtime_checkable
class ManagedLLMModel(LLMModel, Protocol):
    """An :class:`LLMModel` with idempotent set-up and tear-down (a provider-side cache)."""

    async def prepare(self) -> None:
        """Acquire resources before the first call."""
        ...

    async def cleanup(self) -> None:
        """Release resources after the last call."""
        ...
