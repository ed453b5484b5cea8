"""Provider batch APIs over our own aiohttp transport: OpenAI Batches, Anthropic Message Batches.

:func:`batch_client` makes the client of a :class:`BatchTarget`; every client offers
``request_line``, ``submit``, ``find``, ``get``, ``cancel``, ``results`` and ``close`` (see
:class:`BatchClient`). The engine-level API on top is :mod:`async_batch_llm.batch_api`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

from .anthropic_batches import AnthropicBatchClient
from .openai_batches import OpenAIBatchClient
from .pricing import BatchPrice, batch_price
from .target import BatchTarget, batch_target
from .types import (
    ANTHROPIC_LIMITS,
    OPENAI_LIMITS,
    BatchLimits,
    BatchProvider,
    BatchState,
    OversizeLine,
    ProviderBatch,
    RequestResult,
)

__all__ = [
    "ANTHROPIC_LIMITS",
    "OPENAI_LIMITS",
    "AnthropicBatchClient",
    "BatchClient",
    "BatchLimits",
    "BatchPrice",
    "BatchProvider",
    "BatchState",
    "BatchTarget",
    "OpenAIBatchClient",
    "OversizeLine",
    "ProviderBatch",
    "RequestResult",
    "batch_client",
    "batch_price",
    "batch_target",
]


class BatchClient(Protocol):
    """What the engine-level API needs of one provider's batch client."""

    provider: str
    limits: BatchLimits

    @staticmethod
    def request_line(custom_id: str, body: dict[str, Any]) -> bytes: ...

    async def submit(
        self,
        chunk_id: str,
        lines: Sequence[bytes],
        *,
        file_id: str | None = None,
        on_file: Callable[[str], Awaitable[None]] | None = None,
    ) -> ProviderBatch: ...

    async def find(
        self, chunk_id: str, *, since: float, total: int, exclude: frozenset[str] = frozenset()
    ) -> ProviderBatch | None: ...

    async def get(self, batch_id: str) -> ProviderBatch: ...

    async def cancel(self, batch_id: str) -> ProviderBatch: ...

    def results(self, batch: ProviderBatch) -> AsyncIterator[RequestResult]: ...

    async def close(self) -> None: ...


def batch_client(
    target: BatchTarget,
    *,
    limits: BatchLimits | None = None,
    completion_window: str = "24h",
) -> BatchClient:
    """The batch client of ``target``'s provider, with ``limits`` or the provider's own; a
    results line over the strategy's ``max_response_bytes`` is not read past the cap."""
    cap = target.strategy.max_response_bytes
    if target.provider == "anthropic":
        return AnthropicBatchClient(
            target.endpoint, limits=limits or ANTHROPIC_LIMITS, max_response_bytes=cap
        )
    return OpenAIBatchClient(
        target.endpoint,
        limits=limits or OPENAI_LIMITS,
        completion_window=completion_window,
        max_response_bytes=cap,
    )
