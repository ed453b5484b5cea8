"""Batch prices: litellm's ``*_batches`` rates where its table has them, else half price.

OpenAI and Anthropic bill batch requests at 50% of the online price. litellm's bundled table
gives ``input_cost_per_token_batches`` / ``output_cost_per_token_batches`` for many models;
their ratio to the online rates scales our online cost (:mod:`..pricing`) for the input side
(uncached, cache reads and writes alike) and the output side. A model without them costs
half its online price. (litellm's own ``batch_cost_calculator`` bills cache reads at the full
online cache rate when a model has a batch input rate but no batch cache rate; we halve them
too, as the providers do.) A model the table does not price costs None, never 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..pricing import ModelPrice, load_price_table, model_price

__all__ = ["DEFAULT_BATCH_DISCOUNT", "BatchPrice", "batch_price"]

DEFAULT_BATCH_DISCOUNT = 0.5
"""The share of the online price a batch request costs when the table says nothing."""


@dataclass(frozen=True, slots=True)
class BatchPrice:
    """The online price of a model and the batch ratios of its input and output sides."""

    online: ModelPrice
    input_ratio: float
    output_ratio: float

    def cost(
        self, prompt: int, completion: int, cache_read: int = 0, cache_write: int = 0
    ) -> float:
        """USD for one batch request; ``prompt`` counts every input token, cached included."""
        input_side = self.online.cost(prompt, 0, cache_read, cache_write)
        output_side = self.online.cost(prompt, completion, cache_read, cache_write) - input_side
        return input_side * self.input_ratio + output_side * self.output_ratio


def _ratio(entry: dict[str, object], key: str) -> float:
    batch, online = entry.get(key + "_batches"), entry.get(key)
    if isinstance(batch, int | float) and isinstance(online, int | float) and online > 0:
        return float(batch) / float(online)
    return DEFAULT_BATCH_DISCOUNT


def batch_price(provider: str, name: str) -> BatchPrice | None:
    """The batch price of ``provider/name``; None when litellm's table does not price it."""
    online = model_price(provider, name)
    if online is None:
        return None
    table = load_price_table()
    entry = table.get(f"{provider}/{name}")
    if not isinstance(entry, dict):
        entry = table.get(name)
    entry = entry if isinstance(entry, dict) else {}
    return BatchPrice(
        online, _ratio(entry, "input_cost_per_token"), _ratio(entry, "output_cost_per_token")
    )
