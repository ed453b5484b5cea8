"""What a batch request needs from a :class:`LiteLLMStrategy`: endpoint, body, output, price.

The batch path sends exactly the body the native transport sends online (the strategy's
system prompt, options and structured-output format), and turns a reply into the output the
online call returns (text, schema-checked JSON or a pydantic model), through the strategy's
public native accessors (``native_endpoint``, ``native_caller``, ``shape_output``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ...llm_strategies import LLMCallStrategy
from ..endpoints import Endpoint
from ..litellm import LiteLLMStrategy
from ..native import anthropic_messages, openai_chat
from ..native.caller import NativeCaller
from ..native.reply import Reply
from ..response_cap import size_text, too_large
from .pricing import BatchPrice, batch_price
from .types import BatchProvider, OversizeLine

__all__ = ["BatchTarget", "batch_target"]

_BATCH_PROVIDERS: frozenset[str] = frozenset({"openai", "anthropic"})


@dataclass(frozen=True, slots=True, eq=False)
class BatchTarget:
    """One strategy as seen by the batch path (made once per strategy instance)."""

    provider: BatchProvider
    endpoint: Endpoint
    strategy: LiteLLMStrategy
    caller: NativeCaller
    price: BatchPrice | None

    @property
    def key(self) -> tuple[str, str, str]:
        """Requests with the same key may share a provider batch (one model per batch)."""
        return (self.provider, self.endpoint.url, self.endpoint.wire_model)

    def body(self, prompt: str) -> dict[str, Any]:
        """The request body the online call would send for ``prompt``."""
        return self.caller.body(prompt)

    def parse(self, body: Any) -> Reply:
        """A reply body from the batch's results, parsed as the online transport parses it (a
        line over the answer size cap raises ResponseTooLargeError, as online)."""
        if isinstance(body, OversizeLine):
            seen = f"{size_text(body.size)} (a line of the batch's results, not kept)"
            raise too_large(seen, body.cap)
        if self.provider == "anthropic":
            return anthropic_messages.parse_reply(body)
        return openai_chat.parse_reply(body)

    def output(self, text: str, usage: Any, metadata: dict[str, Any]) -> Any:
        """The reply as the strategy's caller asked for it (raises a retryable error when a
        structured reply does not validate, as online)."""
        return self.strategy.shape_output(text, usage, metadata)


async def batch_target(strategy: LLMCallStrategy[Any]) -> BatchTarget:
    """The :class:`BatchTarget` of a strategy; ``ValueError`` when it cannot go by batch.

    Only :class:`LiteLLMStrategy` models on OpenAI or Anthropic (and ``simulated/`` models,
    whose simulator serves OpenAI's batch endpoints) can.
    """
    if not isinstance(strategy, LiteLLMStrategy):
        raise ValueError(
            f"the batch API needs a LiteLLMStrategy on openai/ or anthropic/, got {strategy!r}"
        )
    if strategy.simulated:
        await strategy.prepare()  # starts the simulator and points api_base at it
    endpoint = await asyncio.to_thread(strategy.native_endpoint)
    if endpoint.provider not in _BATCH_PROVIDERS:
        raise ValueError(
            f"{strategy.model!r}: no batch API for provider {endpoint.provider!r} "
            "(OpenAI and Anthropic have one)"
        )
    caller = await asyncio.to_thread(strategy.native_caller)
    provider: BatchProvider = "anthropic" if endpoint.provider == "anthropic" else "openai"
    return BatchTarget(provider, endpoint, strategy, caller, _price(strategy, provider, endpoint))


def _price(
    strategy: LiteLLMStrategy, provider: BatchProvider, endpoint: Endpoint
) -> BatchPrice | None:
    """The batch price: of the model a ``price_as`` strategy bills at, else of the model
    itself (the simulator's models cost nothing unless priced as another)."""
    price_as = getattr(strategy, "price_as", None)
    if isinstance(price_as, str) and price_as:
        as_provider, _, as_name = price_as.partition("/")
        return batch_price(as_provider, as_name) if as_name else batch_price("openai", as_provider)
    if strategy.simulated:
        return None
    return batch_price(provider, endpoint.wire_model)
