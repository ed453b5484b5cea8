"""The runner's round through a provider batch API (``batch_api = true``).

Items go through :class:`~async_batch_llm.batch_api.ProviderBatchRunner`; what a batch could
not finish is rescued online by a fresh :class:`~async_batch_llm.ParallelBatchProcessor`
(normal retries, pacing, cooldowns). The run store and the dashboard learn about
batch-served results exactly as about online ones: this module hands the run's store
observer, the UI buffer and the flight log the same ``ITEM_STARTED`` / ``ITEM_COMPLETED`` /
``ITEM_FAILED`` / ``ITEM_RETRY`` events the engine would emit, so progress, the failed table,
retries by hand and resume work unchanged.

An item sent online after its batch attempt keeps one story: the batch attempt is attempt 1
(recorded as a retry: the item stays under way until its online result is committed, so a
kill in between leaves it to resume, which reads the ended batch again); its online
attempts are numbered after it, and its final event carries the batch attempt's tokens and
cost as well as the online ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol

from async_batch_llm import LLMWorkItem, WorkItemResult
from async_batch_llm.core.events import sync_handler
from async_batch_llm.llm_strategies import make_usage
from async_batch_llm.observers.base import BaseObserver, ProcessingEvent

if TYPE_CHECKING:  # the batch API (aiohttp with it) is imported by batch runs only
    from async_batch_llm.batch_api import BatchItemOutcome, ChunkRecord, RescueMode
    from async_batch_llm.observers.base import ProcessorObserver

__all__ = [
    "BATCH_WORKER",
    "AfterBatchAttempt",
    "BatchAttempts",
    "BatchTap",
    "ChunkBoard",
    "SyncObserver",
    "ended_events",
    "wait_while",
    "work_items",
]

#: The ``worker_id`` of events about batch-served attempts (no worker of the pool made them).
BATCH_WORKER = -1

_STARTED = ProcessingEvent.ITEM_STARTED
_COMPLETED = ProcessingEvent.ITEM_COMPLETED
_FAILED = ProcessingEvent.ITEM_FAILED
_RETRY = ProcessingEvent.ITEM_RETRY
_FINAL = frozenset({_COMPLETED, _FAILED})


class SyncObserver(Protocol):
    """An observer the engine calls in place (the store's writer, the UI buffer, the flight log)."""

    def on_event_sync(self, event: ProcessingEvent, data: dict[str, Any]) -> None: ...


class BatchAttempts:
    """The batch attempt of each item being rescued online, until its online result is in."""

    def __init__(self) -> None:
        self.pending: dict[str, WorkItemResult[Any, Any]] = {}


def _merged_final(data: dict[str, Any], batch: WorkItemResult[Any, Any]) -> None:
    """Add the batch attempt to an online final payload: one more attempt, its tokens, cost."""
    data["attempts"] = (data.get("attempts") or 0) + 1
    online, extra = data.get("tokens") or {}, batch.token_usage
    data["tokens"] = make_usage(
        online.get("input_tokens", 0) + extra.get("input_tokens", 0),
        online.get("output_tokens", 0) + extra.get("output_tokens", 0),
        online.get("cached_input_tokens", 0) + extra.get("cached_input_tokens", 0),
    )
    if batch.cost is not None:
        data["cost"] = (data.get("cost") or 0.0) + batch.cost


class AfterBatchAttempt(BaseObserver):
    """Wraps an observer of the rescue processor: the events of an item rescued online are
    numbered after its batch attempt, and its final event adds that attempt (see module)."""

    def __init__(self, inner: ProcessorObserver, attempts: BatchAttempts) -> None:
        deliver = sync_handler(inner)
        if deliver is None:
            raise TypeError(f"{inner!r} has no on_event_sync to wrap")
        self._deliver = deliver
        self._pending = attempts.pending
        self.inner = inner
        self.wanted_events = getattr(inner, "wanted_events", None)  # type: ignore[misc]
        hold = getattr(inner, "hold_workers", None)
        if hold is not None:
            self.hold_workers = hold  # the store writer's hand-off to its thread

    async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        self.on_event_sync(event, data)

    def on_event_sync(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        """Pass the event on, renumbered and completed for an item with a batch attempt."""
        batch = self._pending.get(data.get("item_id", "")) if self._pending else None
        if batch is not None:
            data = dict(data)
            if "attempt" in data:
                data["attempt"] = (data["attempt"] or 0) + 1
            if event in _FINAL:
                _merged_final(data, batch)
        self._deliver(event, data)


def _error_type(result: WorkItemResult[Any, Any]) -> str:
    """The exception class a batch failure names (``ProviderStatusError: ...``), if it does."""
    head, sep, _ = (result.error or "").partition(":")
    return head if sep and head.isidentifier() else "ProviderBatchError"


def ended_events(
    result: WorkItemResult[Any, Any], *, rescued: bool
) -> list[tuple[ProcessingEvent, dict[str, Any]]]:
    """The engine's events for one batch attempt that ended: its end as a final result, or
    (``rescued``) as a retry before the online attempts. ``ITEM_STARTED`` comes first."""
    item_id = result.item_id
    started = {"item_id": item_id, "worker_id": BATCH_WORKER, "attempt": 1}
    common = {
        "item_id": item_id,
        "worker_id": BATCH_WORKER,
        "tokens": result.token_usage,
    }
    if rescued:
        retry = {
            **common,
            "attempt": 1,
            "wait": 0.0,
            "error_type": _error_type(result),
            "error_category": result.error_category or "unknown",
            "error": result.error or "",
        }
        return [(_STARTED, started), (_RETRY, retry)]
    final: dict[str, Any] = {
        **common,
        "duration": result.duration,
        "attempts": 1,
        "cost": result.cost,
        "result": result,
    }
    if result.success:
        return [(_STARTED, started), (_COMPLETED, final)]
    final.update(
        error=result.error,
        error_type=_error_type(result),
        error_category=result.error_category or "unknown",
    )
    return [(_STARTED, started), (_FAILED, final)]


class BatchTap:
    """Sits between the batch runner's outcomes and :func:`rescue_online`: records each batch
    attempt as it ends, and decides which outcomes are rescued.

    ``record`` sees every event (the store's writer); ``follow`` every event but
    ``ITEM_STARTED`` (the UI buffer and the flight log: no worker of the pool made the
    attempt). ``force_online``: items rescued whatever their batch outcome (a resume with
    ``--retry-failed``). ``ready`` is awaited before each outcome (the store's back-pressure).
    """

    def __init__(
        self,
        record: SyncObserver,
        follow: list[SyncObserver],
        attempts: BatchAttempts,
        *,
        mode: RescueMode,
        force_online: frozenset[str] = frozenset(),
        ready: Callable[[], Any] | None = None,
    ) -> None:
        self._record = record
        self._follow = follow
        self._attempts = attempts
        self._mode = mode
        self._force = force_online
        self._ready = ready
        self.served = 0  # outcomes final from their batch
        self.rescued = 0  # outcomes sent online

    def _rescue(self, outcome: BatchItemOutcome) -> bool:
        return outcome.rescue and self._mode == "online"

    async def outcomes(
        self, source: AsyncIterable[BatchItemOutcome]
    ) -> AsyncIterator[BatchItemOutcome]:
        """``source``'s outcomes, each recorded first; ``rescue`` set as decided here."""
        async for outcome in source:
            if self._ready is not None:
                await self._ready()
            result = outcome.result
            if result.item_id in self._force and not result.success:
                # Its batch attempt was recorded (and counted) with its failure: only the
                # online attempts are new.
                self.rescued += 1
                yield dataclasses.replace(outcome, rescue=True)
                continue
            rescued = self._rescue(outcome)
            if rescued:
                self._attempts.pending[result.item_id] = result
                self.rescued += 1
            else:
                self.served += 1
            for event, data in ended_events(result, rescued=rescued):
                self._record.on_event_sync(event, data)
                if event is not _STARTED:
                    for observer in self._follow:
                        observer.on_event_sync(event, dict(data))
            yield dataclasses.replace(outcome, rescue=rescued)


def work_items(
    items: AsyncIterable[Any], strategy: Any
) -> AsyncIterator[LLMWorkItem[Any, Any, Any]]:
    """The engine's work items for stored items (``item_id``, ``prompt``, ``context``)."""

    async def convert() -> AsyncIterator[LLMWorkItem[Any, Any, Any]]:
        async for item in items:
            yield LLMWorkItem(item.item_id, strategy, item.prompt, item.context)

    return convert()


class ChunkBoard:
    """The run's chunks as last reported, for a UI that reads them from another thread: the
    mapping is replaced (never changed in place) on every report."""

    def __init__(self) -> None:
        self.chunks: dict[str, ChunkRecord] = {}

    def report(self, record: ChunkRecord) -> None:
        self.chunks = {**self.chunks, record.chunk_id: record}


async def wait_while(blocked: Callable[[], bool], interval: float = 0.05) -> None:
    """Return once ``blocked()`` is False (checked every ``interval`` seconds)."""
    while blocked():
        await asyncio.sleep(interval)
