"""Calls under way and what this session's items did, counted in the engine's thread: what
drain and the budget decide from, and what headless mode shows (without folding each event).

:class:`FlightLog` is an engine observer (a few operations per item event); :class:`Budget`
is the pure rule "stop dispatch once the cost so far plus the calls under way reaches the
limit", with the calls under way priced at this session's average cost per item.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from async_batch_llm.observers.base import BaseObserver, ProcessingEvent

from .formatting import cost

_STARTED = ProcessingEvent.ITEM_STARTED
_COMPLETED = ProcessingEvent.ITEM_COMPLETED
_FAILED = ProcessingEvent.ITEM_FAILED
_RETRY = ProcessingEvent.ITEM_RETRY
_RATE_LIMITED = ProcessingEvent.RATE_LIMIT_HIT
_COOLDOWN_STARTED = ProcessingEvent.COOLDOWN_STARTED
_COOLDOWN_ENDED = ProcessingEvent.COOLDOWN_ENDED


class FlightLog(BaseObserver):
    """Which items are calling the provider right now, and what this session's items did:
    their outcomes, retries, 429s, tokens and cost (another thread may read the counts)."""

    wanted_events = frozenset(
        (_STARTED, _COMPLETED, _FAILED, _RETRY, _RATE_LIMITED, _COOLDOWN_STARTED, _COOLDOWN_ENDED)
    )
    borrows_payload = True  # reads a few keys, keeps nothing

    def __init__(self) -> None:
        self.calling: set[str] = set()
        self.cost = 0.0  # this session's items, as the provider priced them
        self.priced_items = 0
        self.succeeded = 0  # items ended this session, by outcome
        self.failed = 0
        self.retries = 0  # attempts to be tried again, and rate-limited ones
        self.rate_limits = 0
        self.input_tokens = 0  # the ended items' tokens (every attempt of each)
        self.output_tokens = 0
        self.cached_tokens = 0
        #: Failed items by error category (the dict is replaced, never changed in place).
        self.errors_by_category: dict[str, int] = {}
        #: When the rate-limit cooldown in force ends (wall clock; None: none is).
        self.cooldown_until: float | None = None
        #: Called (in the engine's loop) after a call starts or ends.
        self.on_change: Callable[[], None] | None = None

    async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        self.on_event_sync(event, data)

    def on_event_sync(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        """Follow one event: a call started, or ended (and how its item did)."""
        if event is _STARTED:
            self.calling.add(data["item_id"])
        elif event is _COMPLETED or event is _FAILED:
            self.calling.discard(data["item_id"])
            self._item_ended(event is _COMPLETED, data)
        elif event is _RETRY or event is _RATE_LIMITED:
            self.calling.discard(data["item_id"])
            if event is _RETRY:
                self.retries += 1
            else:
                self.rate_limits += 1
        else:
            self.cooldown_until = data.get("until") if event is _COOLDOWN_STARTED else None
            return
        if self.on_change is not None:
            self.on_change()

    def _item_ended(self, succeeded: bool, data: dict[str, Any]) -> None:
        """Count an item's final outcome, its tokens and its cost."""
        if succeeded:
            self.succeeded += 1
        else:
            self.failed += 1
            category = data.get("error_category") or "unknown"
            errors = self.errors_by_category
            self.errors_by_category = {**errors, category: errors.get(category, 0) + 1}
        usage = data.get("tokens")
        if usage:
            self.input_tokens += usage.get("input_tokens", 0)
            self.output_tokens += usage.get("output_tokens", 0)
            self.cached_tokens += usage.get("cached_input_tokens", 0)
        item_cost = data.get("cost")
        if item_cost is not None:
            self.cost += item_cost
            self.priced_items += 1

    @property
    def finished(self) -> int:
        """Items ended this session (succeeded or failed)."""
        return self.succeeded + self.failed

    @property
    def in_flight(self) -> int:
        """Calls under way now."""
        return len(self.calling)

    def average_cost(self) -> float | None:
        """This session's average cost per finished item (None before the first priced one)."""
        return self.cost / self.priced_items if self.priced_items else None


@dataclass
class Budget:
    """The run's cost limit: ``spent_before`` is what earlier sessions of the run cost."""

    max_cost: float
    spent_before: float = 0.0

    def projected(self, flight: FlightLog) -> tuple[float, float]:
        """``(spent, under way)``: the run's cost so far and the estimate of the calls under
        way (at this session's average cost per item; 0 until one item has a price)."""
        average = flight.average_cost() or 0.0
        return self.spent_before + flight.cost, flight.in_flight * average

    def reached(self, flight: FlightLog) -> str | None:
        """Why dispatch must stop now, or None while the limit is not reached."""
        spent, under_way = self.projected(flight)
        if spent + under_way < self.max_cost:
            return None
        return f"budget {cost(self.max_cost)} reached: {cost(spent)} spent" + (
            f" + ~{cost(under_way)} under way" if under_way else ""
        )
