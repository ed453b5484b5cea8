"""Calls under way and money spent, counted in the engine's thread: what drain and the budget
decide from.

:class:`FlightLog` is an engine observer (one set operation per event); :class:`Budget` is
the pure rule "stop dispatch once the cost so far plus the calls under way reaches the
limit", with the calls under way priced at this session's average cost per item.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from async_batch_llm.observers.base import BaseObserver, ProcessingEvent

from .formatting import cost

#: Events after which an item is no longer calling the provider (a retry waits first).
_CALL_ENDED = frozenset({"item_completed", "item_failed", "item_retry", "rate_limit_hit"})
_ITEM_ENDED = frozenset({"item_completed", "item_failed"})


class FlightLog(BaseObserver):
    """Which items are calling the provider right now, and what finished items cost."""

    borrows_payload = True  # reads two keys, keeps nothing

    def __init__(self) -> None:
        self.calling: set[str] = set()
        self.cost = 0.0  # this session's items, as the provider priced them
        self.priced_items = 0
        self.finished = 0  # items ended this session (succeeded or failed)
        #: Called (in the engine's loop) after a call starts or ends.
        self.on_change: Callable[[], None] | None = None

    async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        self.on_event_sync(event, data)

    def on_event_sync(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        """Follow one event: a call started, or ended (and what its item cost)."""
        name = event._value_
        if name == "item_started":
            self.calling.add(data["item_id"])
        elif name in _CALL_ENDED:
            self.calling.discard(data.get("item_id", ""))
            if name in _ITEM_ENDED:
                self.finished += 1
                cost = data.get("cost")
                if cost is not None:
                    self.cost += cost
                    self.priced_items += 1
        else:
            return
        if self.on_change is not None:
            self.on_change()

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
