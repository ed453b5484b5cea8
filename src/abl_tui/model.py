"""The dashboard's model of one run: :class:`RunState` plus the run's phase and the hand
retries of this session.

Pure like the state model (no Textual, no threads, every fold takes ``now``), so the
screens stay thin and the rules (when is the run "going", what did a retry become) are
tested without a terminal.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from .state import RunState

#: Hand retries remembered for the "retried" view (oldest forgotten first).
MAX_RETRIED_ROWS = 5_000

RetryStatus = Literal["queued", "running", "ok", "failed"]
#: One engine event as the runner's buffer hands it over: (name, payload, wall time).
Event = tuple[str, dict[str, Any], float]


@dataclass(slots=True)
class RetriedItem:
    """An item the user sent again, and what became of it since."""

    item_id: str
    status: RetryStatus = "queued"
    error_category: str = ""
    error: str = ""
    attempts: int = 0  # calls so far (the store's count: every round's)
    base_attempts: int = 0  # calls before this hand retry


class RetryLog:
    """Items retried by hand in this session, followed through their events."""

    def __init__(self, limit: int = MAX_RETRIED_ROWS) -> None:
        self.items: OrderedDict[str, RetriedItem] = OrderedDict()
        self._limit = limit
        self.unsettled = 0  # queued or running: the run is not over while any is
        self.version = 0  # bumped on every change, so views can skip unchanged redraws

    def sent(self, rows: Iterable[RetriedItem]) -> None:
        """Record items just sent again (their last error kept until a new outcome)."""
        self.version += 1
        for row in rows:
            old = self.items.pop(row.item_id, None)
            if old is not None and old.status in ("queued", "running"):
                self.unsettled -= 1
            self.items[row.item_id] = row
            self.unsettled += 1
        while len(self.items) > self._limit:
            _, dropped = self.items.popitem(last=False)
            if dropped.status in ("queued", "running"):
                self.unsettled -= 1

    def apply(self, name: str, data: dict[str, Any]) -> None:
        """Follow one engine event if it concerns a retried item."""
        row = self.items.get(data.get("item_id", ""))
        if row is None:
            return
        was_open = row.status in ("queued", "running")
        if name == "item_started":
            row.status = "running"
        elif name == "item_completed":
            row.status = "ok"
            row.error, row.error_category = "", ""
        elif name == "item_failed":
            row.status = "failed"
            row.error = str(data.get("error") or "")
            row.error_category = data.get("error_category") or "unknown"
            row.attempts = row.base_attempts + data.get("attempts", 0)
        else:
            return
        self.version += 1
        if was_open and row.status in ("ok", "failed"):
            self.unsettled -= 1


@dataclass
class RunModel:
    """Everything the screens show of one run: the folded :class:`RunState`, the run's phase
    (stored totals loaded, a round under way, the engine gone) and this session's hand
    retries. Live and watch feeds both fold into it."""

    state: RunState = field(default_factory=RunState)
    retries: RetryLog = field(default_factory=RetryLog)
    round_active: bool = False
    seeded: bool = False  # the stored run's totals are loaded
    ended: bool = False  # the engine thread is gone: nothing more will happen
    #: The run's provider batches (``ChunkRecord`` s) for a ``--batch-api`` run, else empty.
    batches: list[Any] = field(default_factory=list)
    #: Why the run store holds dispatch back right now (None: it takes writes).
    store_note: str | None = None

    def seed(self, initial: dict[str, Any]) -> None:
        """Start from the runner's stored-run summary (once the runner is ready)."""
        if initial:
            self.state.load(initial)
        self.seeded = True

    def fold(self, events: Iterable[Event]) -> int:
        """Fold a batch of engine events; returns how many there were."""
        state, retries = self.state, self.retries
        apply = state.apply
        follow = retries.apply if retries.items else None
        number = 0
        for name, data, at in events:
            number += 1
            apply(name, data, at)
            if follow is not None:
                follow(name, data)
            if name == "batch_started":
                self.round_active = True
            elif name == "batch_completed":
                # RunState leaves status and the end time to its owner: a round's end is
                # the run's end until the user sends items again.
                self.round_active = False
                if data.get("cancelled"):  # interrupted: a drain, a quit or a signal
                    state.status = "interrupted"
                else:
                    state.status = "failed" if state.failed else "completed"
                state.finished_at = at
        return number

    @property
    def active(self) -> bool:
        """True while the run is going: a round under way, or retries not yet settled."""
        if self.ended:
            return False
        return not self.seeded or self.round_active or self.retries.unsettled > 0

    def follow_controls(
        self,
        *,
        paused: bool,
        max_cost: float | None,
        draining: bool,
        budget_note: str | None,
        now: float,
        store_note: str | None = None,
    ) -> None:
        """Bring over the runner's pause, budget and drain state; log when the budget or the
        run store (disk full, a lock held elsewhere) starts or stops holding dispatch back."""
        state = self.state
        if store_note != self.store_note and not self.ended:
            if store_note is not None:
                state.note(now, f"dispatch waits for the run store: {store_note}", "store")
            else:
                state.note(now, "the run store takes writes again: dispatch goes on", "store")
        self.store_note = store_note
        if (budget_note is None) != (state.budget_note is None) and not self.ended:
            if budget_note is not None:
                state.note(now, f"dispatch stopped: {budget_note} (b: raise the limit)", "budget")
            else:
                state.note(now, "the budget allows more: dispatch goes on", "budget")
        state.budget_note = budget_note
        state.max_cost = max_cost
        state.draining = draining
        state.paused = paused
        if paused and self.active:
            state.mark_paused(now)

    def replay_sent(self, item_id: str, *, succeeded: bool) -> None:
        """An item replayed: followed like a retry; a succeeded one leaves the succeeded count
        until its new result arrives (so it is not counted twice)."""
        self.sent_again([item_id])
        if succeeded and self.state.succeeded > 0:
            self.state.succeeded -= 1

    def sent_again(self, item_ids: Iterable[str]) -> int:
        """Move items sent again from the failed table to the retry log; returns the count."""
        state = self.state
        rows = []
        for item_id in item_ids:
            failed = state.failed_items.get(item_id)
            rows.append(
                RetriedItem(
                    item_id,
                    error_category=failed.error_category if failed else "",
                    error=failed.error if failed else "",
                    attempts=failed.attempts if failed else 0,
                    base_attempts=failed.attempts if failed else 0,
                )
            )
        self.retries.sent(rows)
        state.requeue(row.item_id for row in rows)
        return len(rows)
