"""Prices for the app: a model's rates from the engine's price table, and ``price_as``.

``price_as`` bills a run's calls at a priced model's rates, for a server whose own model name
the table does not know (a proxy, a local server, the simulator of the README's demo). The
price table is read as data (``async_batch_llm.providers.pricing``): litellm is not imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from async_batch_llm.providers.litellm import LiteLLMStrategy
from async_batch_llm.providers.pricing import ModelPrice, model_price

if TYPE_CHECKING:
    from async_batch_llm.providers.batch.pricing import BatchPrice


def price_of(model: str) -> ModelPrice | None:
    """The rates of ``provider/name`` (``openai/gpt-4o-mini``), or None when not priced."""
    provider, _, name = model.partition("/")
    if not name:
        provider, name = "openai", provider
    return model_price(provider, name)


def batch_price_of(model: str) -> BatchPrice | None:
    """The batch-API rates of ``provider/name`` (half the online price unless litellm's table
    says otherwise), or None when not priced."""
    # Here, not at import: the batch package loads its HTTP clients (and aiohttp).
    from async_batch_llm.providers.batch.pricing import batch_price

    provider, _, name = model.partition("/")
    if not name:
        provider, name = "openai", provider
    return batch_price(provider, name)


def is_priced(model: str) -> bool:
    """True when the price table knows ``model`` (its calls cost money we can count)."""
    return price_of(model) is not None


class PricedAsStrategy(LiteLLMStrategy):
    """A :class:`LiteLLMStrategy` whose calls cost what ``price_as``'s rates say."""

    def __init__(self, model: str, *, price_as: str, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        price = price_of(price_as)
        if price is None:
            raise ValueError(f"price_as: {price_as!r} is not in the price table")
        self.price_as = price_as
        self._rates = price

    async def execute(
        self, prompt: str, attempt: int, timeout: float, state: Any = None
    ) -> tuple[Any, Any, dict[str, Any]]:
        """One call, its cost worked out from the tokens it used at ``price_as``'s rates."""
        output, usage, metadata = await super().execute(prompt, attempt, timeout, state)
        metadata["cost"] = self._rates.cost(
            usage.get("input_tokens", 0),
            usage.get("output_tokens", 0),
            usage.get("cached_input_tokens", 0),
        )
        return output, usage, metadata
