"""Rescue: the items a batch could not finish, sent online through the normal engine.

:func:`rescue_online` takes the outcomes of :meth:`ProviderBatchRunner.outcomes` and yields
one final :class:`~async_batch_llm.base.WorkItemResult` per item: batch results as they are,
and for each outcome marked ``rescue`` the result of the online call a
:class:`~async_batch_llm.parallel.ParallelBatchProcessor` makes (its retries, pacing and
cooldowns). A rescued result counts the batch attempt too (``attempts``, tokens, cost) and
keeps the batch's story under ``metadata["batch"]``. With ``mode="none"`` nothing goes
online: the batch's failure is the final result.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from ..base import LLMWorkItem, WorkItemResult
from ..llm_strategies import make_usage
from ..parallel import ParallelBatchProcessor
from .config import RescueMode
from .outcome import BatchItemOutcome

__all__ = ["ItemLookup", "rescue_online"]

ItemLookup = (
    Mapping[str, LLMWorkItem[Any, Any, Any]]
    | Callable[[str], LLMWorkItem[Any, Any, Any] | None]
    | Callable[[str], Awaitable[LLMWorkItem[Any, Any, Any] | None]]
)
"""Where the work item of a rescued item id comes from (the caller's items, or its store)."""

_DONE = object()


async def _find(lookup: ItemLookup, item_id: str) -> LLMWorkItem[Any, Any, Any] | None:
    if isinstance(lookup, Mapping):
        return lookup.get(item_id)
    found = lookup(item_id)
    if inspect.isawaitable(found):
        found = await found
    return found


def _merged(result: WorkItemResult[Any, Any], batch: WorkItemResult[Any, Any]) -> None:
    """Fold the batch attempt into the online result: attempts, tokens, cost, metadata."""
    result.attempts += batch.attempts
    usage, extra = result.token_usage, batch.token_usage
    result.token_usage = make_usage(
        usage.get("input_tokens", 0) + extra.get("input_tokens", 0),
        usage.get("output_tokens", 0) + extra.get("output_tokens", 0),
        usage.get("cached_input_tokens", 0) + extra.get("cached_input_tokens", 0),
    )
    if batch.cost is not None:
        result.cost = (result.cost or 0.0) + batch.cost
    story = dict((batch.metadata or {}).get("batch") or {})
    story.update(error=batch.error, error_category=batch.error_category, rescued=True)
    result.metadata = {**(result.metadata or {}), "batch": story}


async def rescue_online(
    outcomes: AsyncIterable[BatchItemOutcome],
    lookup: ItemLookup,
    processor: ParallelBatchProcessor[Any, Any, Any],
    *,
    mode: RescueMode = "online",
) -> AsyncIterator[WorkItemResult[Any, Any]]:
    """Final results: batch results as they come, rescued ones once their online call ends.

    ``processor`` must be fresh (not started): it is run in streaming mode here and
    finished when the outcomes end. An item ``lookup`` cannot find keeps its batch failure.
    """
    out: asyncio.Queue[Any] = asyncio.Queue(maxsize=1000)
    pending: dict[str, WorkItemResult[Any, Any]] = {}

    async def to_rescue() -> AsyncIterator[LLMWorkItem[Any, Any, Any]]:
        async for outcome in outcomes:
            item = None
            if outcome.rescue and mode == "online":
                item = await _find(lookup, outcome.item_id)
            if item is None:
                await out.put(outcome.result)
                continue
            pending[item.item_id] = outcome.result
            yield item

    async def online() -> None:
        try:
            async for result in processor.process_stream(to_rescue()):
                batch = pending.pop(result.item_id, None)
                if batch is not None:
                    _merged(result, batch)
                await out.put(result)
        finally:
            await out.put(_DONE)

    task = asyncio.ensure_future(online())
    try:
        while (result := await out.get()) is not _DONE:
            yield result
        await task  # raises what the online side raised
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
