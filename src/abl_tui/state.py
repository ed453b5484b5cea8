"""The pure run-state model: engine events folded into what the screens show.

No Textual, no threads, no clock of its own: every fold takes ``now`` (wall seconds), so
the model is deterministic under test. The UI thread owns an instance and folds batches
of events into it a few times a second.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: How many one-second buckets of history the rates and sparklines keep.
HISTORY_SECONDS = 120
#: The window "now" rates are averaged over.
RATE_WINDOW_SECONDS = 10
#: Failed items kept in memory for the table (the store holds them all).
MAX_FAILED_ROWS = 5_000


@dataclass(slots=True)
class WorkerState:
    """One worker: idle, or busy with an item's attempt since ``since``."""

    worker_id: int
    item_id: str | None = None
    attempt: int = 0
    since: float = 0.0

    @property
    def busy(self) -> bool:
        """True while the worker has an attempt under way."""
        return self.item_id is not None


@dataclass(slots=True)
class FailedItem:
    """A row of the failed-items table."""

    item_id: str
    error_category: str
    error: str
    attempts: int
    at: float


@dataclass(slots=True)
class Totals:
    """Token and cost totals of the run so far."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost: float = 0.0
    cost_known: bool = False

    @property
    def cache_hit_rate(self) -> float:
        """Share (0-1) of input tokens served from the provider's cache."""
        return self.cached_tokens / self.input_tokens if self.input_tokens else 0.0


class RateHistory:
    """Per-second buckets of a count, for the "now" rate and sparklines."""

    def __init__(self, seconds: int = HISTORY_SECONDS) -> None:
        self._buckets: deque[float] = deque([0.0] * seconds, maxlen=seconds)
        self._second: int | None = None

    def _advance(self, now: float) -> None:
        second = int(now)
        if self._second is None:
            self._second = second
            return
        gap = second - self._second
        if gap > 0:
            for _ in range(min(gap, self._buckets.maxlen or 0)):
                self._buckets.append(0.0)
            self._second = second

    def add(self, now: float, amount: float = 1.0) -> None:
        """Count ``amount`` at time ``now``."""
        if int(now) != self._second:  # most events fall in the current second
            self._advance(now)
        self._buckets[-1] += amount

    def rate(self, now: float, window: int = RATE_WINDOW_SECONDS) -> float:
        """Average per second over the last ``window`` whole seconds (the current one excluded)."""
        self._advance(now)
        recent = list(self._buckets)[-window - 1 : -1]
        return sum(recent) / len(recent) if recent else 0.0

    def series(self, now: float, points: int = 60) -> list[float]:
        """The last ``points`` whole-second buckets, oldest first (for a sparkline)."""
        self._advance(now)
        return list(self._buckets)[-points - 1 : -1]


@dataclass
class RunState:
    """Everything the dashboard shows about one run."""

    run_id: str = ""
    name: str = ""
    model: str = ""
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    rate_limits: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    status: str = "starting"
    paused: bool = False
    read_only: bool = False
    rpm_limit: float | None = None
    tpm_limit: float | None = None
    max_workers: int = 0
    cooldown_until: float | None = None
    cooldown_consecutive: int = 0
    totals: Totals = field(default_factory=Totals)
    workers: dict[int, WorkerState] = field(default_factory=dict)
    failed_items: OrderedDict[str, FailedItem] = field(default_factory=OrderedDict)
    completions: RateHistory = field(default_factory=RateHistory)
    tokens: RateHistory = field(default_factory=RateHistory)
    errors_by_category: dict[str, int] = field(default_factory=dict)
    already_done: int = 0  # items finished in earlier sessions of a resumed run
    cost_at_load: float = 0.0  # what those earlier sessions cost

    # ------------------------------------------------------------------ derived

    @property
    def done(self) -> int:
        """Items with a final outcome."""
        return self.succeeded + self.failed

    @property
    def remaining(self) -> int:
        """Items still to finish."""
        return max(self.total - self.done, 0)

    @property
    def in_flight(self) -> int:
        """Workers busy with an attempt."""
        return sum(1 for worker in self.workers.values() if worker.busy)

    def progress(self) -> float:
        """Done share, 0-1."""
        return self.done / self.total if self.total else 0.0

    def items_per_second(self, now: float) -> float:
        """Completions per second over the recent window."""
        return self.completions.rate(now)

    def tokens_per_second(self, now: float) -> float:
        """Tokens per second over the recent window."""
        return self.tokens.rate(now)

    def eta_seconds(self, now: float) -> float | None:
        """Seconds to the end at the recent rate, or None when it cannot be told."""
        if self.remaining == 0:
            return 0.0
        rate = self.items_per_second(now)
        return self.remaining / rate if rate > 0 else None

    def elapsed(self, now: float) -> float:
        """Seconds since the run (this session of it) started."""
        if self.started_at is None:
            return 0.0
        return (self.finished_at or now) - self.started_at

    def cooldown_remaining(self, now: float) -> float:
        """Seconds left in the rate-limit cooldown (0 when none is in force)."""
        if self.cooldown_until is None:
            return 0.0
        return max(self.cooldown_until - now, 0.0)

    def projected_cost(self) -> float | None:
        """Cost of the whole run: what it cost so far, plus the items left at this session's
        average cost per item (earlier sessions of a resumed run are counted once)."""
        finished = self.done - self.already_done
        if not self.totals.cost_known or finished <= 0:
            return None
        per_item = (self.totals.cost - self.cost_at_load) / finished
        return self.totals.cost + per_item * self.remaining

    @property
    def finished(self) -> bool:
        """True once the run has ended, whatever the outcome."""
        return self.status in ("completed", "failed", "interrupted", "cancelled")

    # ------------------------------------------------------------------ folding

    def load(self, run: dict[str, Any]) -> None:
        """Start from a stored run's totals (a resumed run counts what it had already done)."""
        self.run_id = run.get("run_id", self.run_id)
        self.name = run.get("name") or self.name
        self.model = run.get("model") or self.model
        self.total = run.get("total", 0)
        self.succeeded = run.get("succeeded", 0)
        self.failed = run.get("failed", 0)
        self.already_done = self.succeeded + self.failed
        self.rpm_limit = run.get("rpm")
        self.tpm_limit = run.get("tpm")
        totals = self.totals
        totals.input_tokens = run.get("input_tokens", 0) or 0
        totals.output_tokens = run.get("output_tokens", 0) or 0
        totals.cached_tokens = run.get("cached_tokens", 0) or 0
        stored_cost = run.get("cost")
        totals.cost = self.cost_at_load = stored_cost or 0.0
        totals.cost_known = stored_cost is not None
        self.failed_items.clear()
        for item_id, category, error, attempts in run.get("failed_items", ()):
            self.failed_items[item_id] = FailedItem(item_id, category, error, attempts, 0.0)

    def apply_all(self, events: Iterable[tuple[str, dict[str, Any], float]]) -> None:
        """Fold a batch of ``(event name, payload, time)`` triples, in order."""
        for name, data, at in events:
            self.apply(name, data, at)

    def apply(self, name: str, data: dict[str, Any], now: float) -> None:
        """Fold one engine event (``ProcessingEvent.value`` and its payload)."""
        handler = _HANDLERS.get(name)
        if handler is not None:
            handler(self, data, now)

    def _worker(self, worker_id: int) -> WorkerState:
        worker = self.workers.get(worker_id)
        if worker is None:
            worker = self.workers[worker_id] = WorkerState(worker_id)
        return worker

    def _on_batch_started(self, data: dict[str, Any], now: float) -> None:
        if self.started_at is None:
            self.started_at = now
        self.status = "running"
        self.finished_at = None
        self.max_workers = data.get("max_workers", self.max_workers)

    def _on_batch_completed(self, data: dict[str, Any], now: float) -> None:
        for worker in self.workers.values():
            worker.item_id = None
        self.cooldown_until = None
        self.finished_at = now

    def _on_worker_started(self, data: dict[str, Any], now: float) -> None:
        self._worker(data["worker_id"])

    def _on_worker_stopped(self, data: dict[str, Any], now: float) -> None:
        self.workers.pop(data["worker_id"], None)

    def _on_item_started(self, data: dict[str, Any], now: float) -> None:
        worker = self._worker(data["worker_id"])
        worker.item_id = data["item_id"]
        worker.attempt = data.get("attempt", 1)
        worker.since = data.get("time", now)

    def _idle(self, data: dict[str, Any]) -> None:
        worker = self.workers.get(data.get("worker_id", -1))
        if worker is not None and worker.item_id == data.get("item_id"):
            worker.item_id = None

    def _count_tokens(self, data: dict[str, Any], now: float) -> None:
        usage = data.get("tokens") or {}
        input_tokens = usage.get("input_tokens", 0)
        output_tokens = usage.get("output_tokens", 0)
        totals = self.totals
        totals.input_tokens += input_tokens
        totals.output_tokens += output_tokens
        totals.cached_tokens += usage.get("cached_input_tokens", 0)
        cost = data.get("cost")
        if cost is not None:
            totals.cost += cost
            totals.cost_known = True
        self.tokens.add(now, input_tokens + output_tokens)

    def _on_item_completed(self, data: dict[str, Any], now: float) -> None:
        self._idle(data)
        self.succeeded += 1
        self.completions.add(now)
        self._count_tokens(data, now)
        if self.failed_items.pop(data["item_id"], None) is not None:
            self.failed -= 1

    def _on_item_failed(self, data: dict[str, Any], now: float) -> None:
        self._idle(data)
        item_id = data["item_id"]
        if item_id not in self.failed_items:
            self.failed += 1
        category = data.get("error_category") or "unknown"
        self.errors_by_category[category] = self.errors_by_category.get(category, 0) + 1
        self.completions.add(now)
        self._count_tokens(data, now)
        self.failed_items[item_id] = FailedItem(
            item_id, category, str(data.get("error") or ""), data.get("attempts", 0), now
        )
        self.failed_items.move_to_end(item_id)
        while len(self.failed_items) > MAX_FAILED_ROWS:
            self.failed_items.popitem(last=False)

    def _on_item_retry(self, data: dict[str, Any], now: float) -> None:
        self._idle(data)
        self.retries += 1

    def _on_rate_limit_hit(self, data: dict[str, Any], now: float) -> None:
        self._idle(data)
        self.rate_limits += 1

    def _on_cooldown_started(self, data: dict[str, Any], now: float) -> None:
        self.cooldown_until = data.get("until", now + data.get("duration", 0.0))
        self.cooldown_consecutive = data.get("consecutive", 1)

    def _on_cooldown_ended(self, data: dict[str, Any], now: float) -> None:
        self.cooldown_until = None

    def requeue(self, item_ids: Iterable[str]) -> int:
        """Items sent to be retried by hand leave the failed table (and the failed count)."""
        count = 0
        for item_id in item_ids:
            if self.failed_items.pop(item_id, None) is not None:
                count += 1
        self.failed -= count
        return count


_HANDLERS = {
    "batch_started": RunState._on_batch_started,
    "batch_completed": RunState._on_batch_completed,
    "worker_started": RunState._on_worker_started,
    "worker_stopped": RunState._on_worker_stopped,
    "item_started": RunState._on_item_started,
    "item_completed": RunState._on_item_completed,
    "item_failed": RunState._on_item_failed,
    "item_retry": RunState._on_item_retry,
    "rate_limit_hit": RunState._on_rate_limit_hit,
    "cooldown_started": RunState._on_cooldown_started,
    "cooldown_ended": RunState._on_cooldown_ended,
}


def stored_run(run: Any, failed: Iterable[Any]) -> dict[str, Any]:
    """A stored run (summary) and its failed items as :meth:`RunState.load` takes them."""
    settings = getattr(run, "settings", None) or {}
    return {
        "run_id": run.id,
        "name": run.name,
        "model": settings.get("model", ""),
        "rpm": settings.get("rpm"),
        "tpm": settings.get("tpm"),
        "total": run.total,
        "succeeded": run.succeeded,
        "failed": run.failed,
        "input_tokens": run.input_tokens,
        "output_tokens": run.output_tokens,
        "cached_tokens": run.cached_tokens,
        "cost": run.cost,
        "failed_items": [
            (item.item_id, item.error_category or "unknown", item.error or "", item.attempts)
            for item in failed
        ],
    }
