"""Observers: the one way anything outside the engine learns what happens in a run."""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import Enum
from typing import Any, ClassVar


class ProcessingEvent(Enum):
    """Events a processor emits; values are the lower-case names."""

    BATCH_STARTED = "batch_started"
    BATCH_COMPLETED = "batch_completed"
    WORKER_STARTED = "worker_started"
    WORKER_STOPPED = "worker_stopped"
    ITEM_STARTED = "item_started"
    ITEM_COMPLETED = "item_completed"
    ITEM_FAILED = "item_failed"
    ITEM_RETRY = "item_retry"
    RATE_LIMIT_HIT = "rate_limit_hit"
    COOLDOWN_STARTED = "cooldown_started"
    COOLDOWN_ENDED = "cooldown_ended"
    #: The provider's declared rate limits (its response headers) changed the pace:
    #: ``{requests_limit, requests_remaining, requests_reset_s, tokens_limit,
    #: tokens_remaining, tokens_reset_s, rpm, tpm}`` (``rpm``/``tpm``: the pace in force).
    LIMITS_LEARNED = "limits_learned"


class ProcessorObserver(ABC):
    """Receives every event with its own copy of the payload.

    Keep ``on_event`` quick: one with no ``await`` in it is run in place as each event is
    emitted, and costs the run almost nothing; one that awaits runs in a task of its own,
    each event within the processor's ``observer_timeout``; one that raises is logged and
    skipped.

    ``wanted_events`` names the events to deliver (``None``: all of them); an observer
    that counts only outcomes skips the per-attempt ``ITEM_STARTED`` that way.

    Optional hook: ``async def hold_workers(self) -> None``, awaited by every worker
    between items now and then; an observer whose work runs beside the loop (the run
    store's writer thread) returns at once unless it needs the workers to pause briefly.
    """

    wanted_events: ClassVar[frozenset[ProcessingEvent] | None] = None

    #: True for an observer with ``on_event_sync`` that neither keeps nor changes the
    #: payload: it is handed the shared dict, not a copy of its own.
    borrows_payload: ClassVar[bool] = False

    @abstractmethod
    async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        """Handle one event."""


class BaseObserver(ProcessorObserver):
    """An observer that ignores every event: subclass and override ``on_event``."""

    async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        return None
