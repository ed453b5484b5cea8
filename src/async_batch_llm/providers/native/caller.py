"""One strategy's native calls: the request body per prompt, the reply as text, usage, metadata.

Built once per strategy in ``prepare`` (the endpoint, the price and the fixed part of the body
are worked out then), so a call does one dict merge, one POST and one parse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...llm_strategies import make_usage
from ..endpoints import Endpoint
from ..pricing import ModelPrice, load_price_table, model_price
from ..response_cap import DEFAULT_MAX_RESPONSE_BYTES
from . import anthropic_messages
from .client import NativeClient

if TYPE_CHECKING:
    from ...base import TokenUsage

__all__ = ["NativeCaller"]


def _default_max_tokens(endpoint: Endpoint) -> int:
    """Anthropic needs ``max_tokens``: the model's max output from the price table, as litellm."""
    table = load_price_table()
    for key in (f"anthropic/{endpoint.wire_model}", endpoint.wire_model):
        entry = table.get(key)
        if isinstance(entry, dict):
            value = entry.get("max_output_tokens") or entry.get("max_tokens")
            if isinstance(value, int) and value > 0:
                return value
    return anthropic_messages.DEFAULT_MAX_TOKENS


class NativeCaller:
    """Calls one endpoint for one strategy; see :meth:`call`."""

    __slots__ = ("_anthropic", "_base", "_client", "_label", "_price", "_system")

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        label: str,
        system_prompt: str | None,
        options: dict[str, Any],
        price_provider: str | None,
        max_response_bytes: int | None = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._client = NativeClient(endpoint, max_response_bytes=max_response_bytes)
        self._label = label
        self._system = system_prompt
        self._anthropic = endpoint.protocol == "anthropic"
        if self._anthropic:
            self._base = anthropic_messages.request_body(
                endpoint.wire_model, "", system_prompt, options, _default_max_tokens(endpoint)
            )
            del self._base["messages"]
        else:
            self._base = {"model": endpoint.wire_model, **options}
        self._price: ModelPrice | None = (
            model_price(price_provider, endpoint.wire_model) if price_provider else None
        )

    def __repr__(self) -> str:
        return f"NativeCaller({self._client!r})"

    def body(self, prompt: str) -> dict[str, Any]:
        """The request body for ``prompt`` (also what the batch path sends for it)."""
        user = {"role": "user", "content": prompt}
        if self._anthropic or self._system is None:
            return {**self._base, "messages": [user]}
        return {**self._base, "messages": [{"role": "system", "content": self._system}, user]}

    async def call(self, prompt: str, timeout: float) -> tuple[str, TokenUsage, dict[str, Any]]:
        """One request: ``(text, usage, {cost, model, response_id, rate_limits})``."""
        reply, limits = await self._client.post(self.body(prompt), timeout)
        usage = make_usage(reply.prompt_tokens, reply.completion_tokens, reply.cache_read_tokens)
        price = self._price
        cost = (
            price.cost(
                reply.prompt_tokens,
                reply.completion_tokens,
                reply.cache_read_tokens,
                reply.cache_write_tokens,
            )
            if price is not None
            else None
        )
        metadata = {
            "cost": cost,
            "model": self._label,
            "response_id": reply.response_id,
            "rate_limits": limits,
        }
        return reply.text, usage, metadata

    async def close(self) -> None:
        """Close the HTTP session of the running loop."""
        await self._client.close()
