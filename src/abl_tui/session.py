"""What the dashboard knows beyond :class:`RunState`: the run's phase and the hand retries.

Pure like the state model (no Textual, no threads, every fold takes ``now``), so the
screens stay thin and the rules (when is the run "going", what did a retry become) are
tested without a terminal. Also the :class:`RunnerLike` protocol: the runner surface the
app drives, which the real :class:`~abl_tui.runner.Runner` and test doubles both provide.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .state import RunState

#: Hand retries remembered for the "retried" view (oldest forgotten first).
MAX_RETRIED_ROWS = 5_000

RetryStatus = Literal["queued", "running", "ok", "failed"]
Event = tuple[str, dict[str, Any], float]


class EventSource(Protocol):
    """Where engine events wait for the UI: ``drain()`` takes them, oldest first."""

    def drain(self, limit: int = ...) -> list[Event]:
        """Take up to ``limit`` buffered events."""
        ...


class RunnerLike(Protocol):
    """The runner surface the dashboard uses (thread-safe methods, plain attributes)."""

    initial: dict[str, Any]
    ready: threading.Event
    done: threading.Event
    run_id: str | None
    outcome: Any
    plan: Any

    @property
    def buffer(self) -> EventSource:
        """Where the engine's events wait for the UI."""
        ...

    @property
    def paused(self) -> bool:
        """True while dispatch is paused by the user."""
        ...

    @property
    def cancelled(self) -> bool:
        """True once the run was interrupted (a signal, or the user quitting mid-run)."""
        ...

    def start(self) -> None:
        """Start the engine thread."""

    def retry_items(self, item_ids: list[str]) -> None:
        """Send these failed items again."""

    def retry_all_failed(self) -> None:
        """Send every failed item again."""

    def pause(self) -> None:
        """Start no new attempts."""

    def resume(self) -> None:
        """Start attempts again."""

    def stop(self) -> None:
        """End after the current round."""

    def cancel(self) -> None:
        """Interrupt now; the run stays resumable."""

    def set_workers(self, count: int) -> None:
        """Change concurrency."""

    def set_limits(self, rpm: float | None, tpm: float | None) -> bool:
        """New pacing limits; True when applied at once, False from the next round."""
        ...

    def set_max_cost(self, max_cost: float | None) -> None:
        """Set or lift the run's cost limit."""

    def drain(self) -> None:
        """Finish the calls under way, start nothing, then end the run (resumable)."""

    @property
    def draining(self) -> bool:
        """True while a drain waits for the calls under way."""
        ...

    @property
    def max_cost(self) -> float | None:
        """The run's cost limit (None: none)."""
        ...

    @property
    def budget_status(self) -> str | None:
        """Why the budget holds dispatch back now (None: it does not)."""
        ...

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the engine thread to end."""
        ...

    def fetch_item(self, item_id: str) -> concurrent.futures.Future[Any]:
        """An item's stored record (or None)."""
        ...

    def fetch_runs(self) -> concurrent.futures.Future[Any]:
        """Summaries of every stored run."""
        ...


@dataclass(slots=True)
class RetriedItem:
    """An item the user sent again, and what became of it since."""

    item_id: str
    sent_at: float
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

    def clear(self) -> None:
        """Forget every retry (the app switched to another run)."""
        self.items.clear()
        self.unsettled = 0
        self.version += 1


@dataclass
class Dashboard:
    """The run state plus what only the dashboard tracks: round activity and hand retries."""

    state: RunState = field(default_factory=RunState)
    retries: RetryLog = field(default_factory=RetryLog)
    round_active: bool = False
    seeded: bool = False  # the stored run's totals are loaded
    ended: bool = False  # the engine thread is gone: nothing more will happen

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

    def sent_again(self, item_ids: Iterable[str], now: float) -> int:
        """Move items sent again from the failed table to the retry log; returns the count."""
        state = self.state
        rows = []
        for item_id in item_ids:
            failed = state.failed_items.get(item_id)
            rows.append(
                RetriedItem(
                    item_id,
                    now,
                    error_category=failed.error_category if failed else "",
                    error=failed.error if failed else "",
                    attempts=failed.attempts if failed else 0,
                    base_attempts=failed.attempts if failed else 0,
                )
            )
        self.retries.sent(rows)
        state.requeue(row.item_id for row in rows)
        return len(rows)
