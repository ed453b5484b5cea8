"""The pure run-state model: engine events folded into what the screens show.

No Textual, no threads, no clock of its own: every fold takes ``now`` (wall seconds), so
the model is deterministic under test. The UI thread owns an instance and folds batches
of events into it a few times a second.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from typing import Any

#: How many one-second buckets of history the rates and sparklines keep.
HISTORY_SECONDS = 120
#: The window "now" rates are averaged over.
RATE_WINDOW_SECONDS = 10
#: Failed items kept in memory for the table (the store holds them all).
MAX_FAILED_ROWS = 5_000
#: Entries the event log keeps (the oldest are forgotten first).
MAX_LOG_ENTRIES = 500
#: The window the achieved requests-per-minute is averaged over.
RPM_WINDOW_SECONDS = 60


@dataclass(slots=True)
class WorkerState:
    """One worker: idle, or busy with an item since ``since`` (its first attempt here).

    A worker keeps its item through the item's retries: between two attempts it is
    ``waiting`` (a retry's back-off, or a rate-limit cooldown), still busy with that item,
    as the engine's worker is. Watch mode, which reads the store, counts the same way.
    """

    worker_id: int
    item_id: str | None = None
    attempt: int = 0
    since: float = 0.0
    waiting: bool = False

    @property
    def busy(self) -> bool:
        """True while the worker holds an item (calling the provider or waiting to retry)."""
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

    def rate(
        self,
        now: float,
        window: int = RATE_WINDOW_SECONDS,
        skip: Container[int] = (),
        since: float | None = None,
    ) -> float:
        """Average per second over the last ``window`` whole seconds (the current one
        excluded), leaving out the seconds in ``skip`` (paused) and those before ``since``."""
        self._advance(now)
        if self._second is None:
            return 0.0
        buckets, current = self._buckets, self._second
        first = int(since) if since is not None else current - len(buckets)
        total, used = 0.0, 0
        for back in range(1, len(buckets)):
            second = current - back
            if second < first or used >= window:
                break
            if second not in skip:
                total += buckets[-1 - back]
                used += 1
        return total / used if used else 0.0

    def series(self, now: float, points: int = 60) -> list[float]:
        """The last ``points`` whole-second buckets, oldest first (for a sparkline)."""
        self._advance(now)
        return list(self._buckets)[-points - 1 : -1]


@dataclass(frozen=True, slots=True)
class LearnedLimits:
    """What the provider last declared of its limits (``limits_learned``), and the pace the
    engine set from it (``rpm``/``tpm``: the lower of the configured and the declared)."""

    at: float
    requests_limit: float | None = None
    requests_remaining: float | None = None
    requests_reset_s: float | None = None
    tokens_limit: float | None = None
    tokens_remaining: float | None = None
    tokens_reset_s: float | None = None
    rpm: float | None = None
    tpm: float | None = None

    @classmethod
    def from_event(cls, data: dict[str, Any], at: float) -> LearnedLimits:
        """Read a ``limits_learned`` payload (a missing key is "not declared")."""
        return cls(
            at,
            data.get("requests_limit"),
            data.get("requests_remaining"),
            data.get("requests_reset_s"),
            data.get("tokens_limit"),
            data.get("tokens_remaining"),
            data.get("tokens_reset_s"),
            data.get("rpm"),
            data.get("tpm"),
        )

    @property
    def declared(self) -> tuple[float | None, ...]:
        """What a change of is worth a log line: the limits and the pace (not the budget
        left, which moves on every response)."""
        return (self.requests_limit, self.tokens_limit, self.rpm, self.tpm)

    def reset_in(self, reset_s: float | None, now: float) -> float | None:
        """Seconds from ``now`` until a budget declared with ``reset_s`` is full again."""
        return None if reset_s is None else max(self.at + reset_s - now, 0.0)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One line of the event log: when, what kind (run, limits, operator, store), and what."""

    at: float
    kind: str
    text: str


@dataclass
class RunState:
    """Everything the dashboard shows about one run."""

    run_id: str = ""
    name: str = ""
    model: str = ""
    #: The run's stored settings (no secrets: the store keeps none), for the attempt inspector.
    settings: dict[str, Any] = field(default_factory=dict)
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
    tokens_at_load: int = 0  # the tokens those earlier sessions used
    run_started_at: float | None = None  # the run's first start (a resumed run keeps it)
    requests: RateHistory = field(default_factory=RateHistory)  # attempts started
    paused_seconds: set[int] = field(default_factory=set)  # left out of rates and the ETA
    log: deque[LogEntry] = field(default_factory=lambda: deque(maxlen=MAX_LOG_ENTRIES))
    log_version: int = 0  # bumped on every new entry, so the log view can skip redraws
    attempt_base: dict[str, int] = field(default_factory=dict)  # calls before a hand retry
    max_cost: float | None = None  # the run's cost limit (USD), if any
    budget_note: str | None = None  # why the budget holds dispatch back right now
    draining: bool = False  # finishing the calls under way, then ending the run
    learned: LearnedLimits | None = None  # the provider's declared limits, once it sent any

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

    @property
    def waiting(self) -> int:
        """Busy workers between two attempts of their item (back-off or cooldown)."""
        return sum(1 for worker in self.workers.values() if worker.waiting)

    @property
    def capacity(self) -> int:
        """How many workers the run has: those running, else the configured number."""
        return len(self.workers) or self.max_workers

    def pace(self) -> tuple[float | None, float | None]:
        """The rpm and tpm in force: the engine's (configured or learned from the provider)
        once the provider declared limits, else the configured ones."""
        learned = self.learned
        if learned is None:
            return self.rpm_limit, self.tpm_limit
        return learned.rpm, learned.tpm

    def busy_text(self) -> str:
        """``busy/workers``, the same in every view: ``3/24``."""
        return f"{self.in_flight}/{self.capacity}"

    def progress(self) -> float:
        """Done share, 0-1."""
        return self.done / self.total if self.total else 0.0

    def items_per_second(self, now: float) -> float:
        """Completions per second over the recent window while the run goes (paused seconds
        left out); once it has ended, this session's average (it no longer decays)."""
        if self.finished_at is not None:
            return self._finished_rate(self.done - self.already_done, self.done)
        return self.completions.rate(now, skip=self.paused_seconds, since=self.started_at)

    def tokens_per_second(self, now: float) -> float:
        """Tokens per second over the recent window (an average once the run has ended)."""
        if self.finished_at is not None:
            tokens = self.totals.input_tokens + self.totals.output_tokens
            return self._finished_rate(tokens - self.tokens_at_load, tokens)
        return self.tokens.rate(now, skip=self.paused_seconds, since=self.started_at)

    def _finished_rate(self, this_session: float, whole_run: float) -> float:
        """Per second over this session, or over the whole run when this session did nothing."""
        end = self.finished_at
        if end is None:
            return 0.0
        start, amount = self.started_at, this_session
        if amount <= 0:
            start, amount = self.run_started_at or self.started_at, whole_run
        span = end - start if start is not None else 0.0
        return amount / span if span > 0 and amount > 0 else 0.0

    def requests_per_minute(self, now: float) -> float:
        """Attempts started per minute over the last minute (what pacing let through)."""
        if self.finished_at is not None:
            now = min(now, self.finished_at)
        rate = self.requests.rate(
            now, RPM_WINDOW_SECONDS, skip=self.paused_seconds, since=self.started_at
        )
        return rate * 60

    def mark_paused(self, now: float) -> None:
        """Note that dispatch is paused this second (its rates and ETA leave it out)."""
        second = int(now)
        paused = self.paused_seconds
        if second not in paused:
            paused.add(second)
            if len(paused) > HISTORY_SECONDS:
                paused.difference_update([old for old in paused if old < second - HISTORY_SECONDS])

    def eta_seconds(self, now: float) -> float | None:
        """Seconds to the end at the recent rate, or None when it cannot be told (no rate yet,
        paused, or the run ended with items left)."""
        if self.remaining == 0:
            return 0.0
        if self.paused or self.finished:
            return None
        rate = self.items_per_second(now)
        return self.remaining / rate if rate > 0 else None

    def elapsed(self, now: float) -> float:
        """Seconds since the run first started (a resumed run counts its earlier sessions)."""
        start = self.run_started_at or self.started_at
        if start is None:
            return 0.0
        return max((self.finished_at or now) - start, 0.0)

    def failed_by_category(self) -> list[tuple[str, int]]:
        """Failed items per error category, most first (then by name)."""
        counts: dict[str, int] = {}
        for item in self.failed_items.values():
            counts[item.error_category] = counts.get(item.error_category, 0) + 1
        return sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))

    def note(self, at: float, text: str, kind: str = "operator") -> None:
        """Add a line to the event log (the app notes operator actions and store trouble)."""
        self.log.append(LogEntry(at, kind, text))
        self.log_version += 1

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

    def load(self, run: dict[str, Any], *, keep_session: bool = False) -> None:
        """Start from a stored run's totals (a resumed run counts what it had already done:
        items, tokens, cost, retries, 429s and its first start). ``keep_session`` (watch
        mode's later polls) keeps the baselines this session's rates are measured from."""
        self.run_id = run.get("run_id", self.run_id)
        self.name = run.get("name") or self.name
        self.model = run.get("model") or self.model
        self.settings = run.get("settings") or self.settings
        self.total = run.get("total", 0)
        self.succeeded = run.get("succeeded", 0)
        self.failed = run.get("failed", 0)
        self.rpm_limit = run.get("rpm")
        self.tpm_limit = run.get("tpm")
        self.max_workers = run.get("workers") or self.max_workers
        self.max_cost = run.get("max_cost", self.max_cost)
        self.retries = run.get("retries", self.retries)
        self.rate_limits = run.get("rate_limits", self.rate_limits)
        self.run_started_at = run.get("started_at", self.run_started_at)
        totals = self.totals
        totals.input_tokens = run.get("input_tokens", 0) or 0
        totals.output_tokens = run.get("output_tokens", 0) or 0
        totals.cached_tokens = run.get("cached_tokens", 0) or 0
        stored_cost = run.get("cost")
        totals.cost = stored_cost or 0.0
        totals.cost_known = stored_cost is not None
        if not keep_session:
            self.already_done = self.succeeded + self.failed
            self.cost_at_load = totals.cost
            self.tokens_at_load = totals.input_tokens + totals.output_tokens
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
        self.note(now, f"round started with {self.max_workers} workers", "run")

    def _on_batch_completed(self, data: dict[str, Any], now: float) -> None:
        for worker in self.workers.values():
            worker.item_id = None
            worker.waiting = False
        self.cooldown_until = None
        self.finished_at = now
        self.note(now, f"round ended: {self.succeeded:,} ok, {self.failed:,} failed", "run")

    def _on_worker_started(self, data: dict[str, Any], now: float) -> None:
        self._worker(data["worker_id"])

    def _on_worker_stopped(self, data: dict[str, Any], now: float) -> None:
        self.workers.pop(data["worker_id"], None)

    def _on_item_started(self, data: dict[str, Any], now: float) -> None:
        worker = self._worker(data["worker_id"])
        item_id = data["item_id"]
        if worker.item_id != item_id:  # a new item (a retry keeps the time on the item)
            worker.item_id = item_id
            worker.since = data.get("time", now)
        worker.attempt = data.get("attempt", 1)
        worker.waiting = False
        self.requests.add(now)

    def _wait(self, data: dict[str, Any]) -> None:
        worker = self.workers.get(data.get("worker_id", -1))
        if worker is not None and worker.item_id == data.get("item_id"):
            worker.waiting = True

    def _idle(self, data: dict[str, Any]) -> None:
        worker = self.workers.get(data.get("worker_id", -1))
        if worker is not None and worker.item_id == data.get("item_id"):
            worker.item_id = None
            worker.waiting = False

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
        if self.attempt_base:
            self.attempt_base.pop(data["item_id"], None)
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
        attempts = data.get("attempts", 0)
        if self.attempt_base:  # a hand retry: the store counts its calls after the earlier ones
            attempts += self.attempt_base.pop(item_id, 0)
        self.failed_items[item_id] = FailedItem(
            item_id, category, str(data.get("error") or ""), attempts, now
        )
        self.failed_items.move_to_end(item_id)
        while len(self.failed_items) > MAX_FAILED_ROWS:
            self.failed_items.popitem(last=False)

    def _on_item_retry(self, data: dict[str, Any], now: float) -> None:
        self._wait(data)
        self.retries += 1

    def _on_rate_limit_hit(self, data: dict[str, Any], now: float) -> None:
        self._wait(data)
        self.rate_limits += 1

    def _on_cooldown_started(self, data: dict[str, Any], now: float) -> None:
        duration = data.get("duration", 0.0)
        self.cooldown_until = data.get("until", now + duration)
        self.cooldown_consecutive = data.get("consecutive", 1)
        self.note(
            now,
            f"429: every worker waits {duration:.0f}s (cooldown, streak "
            f"{self.cooldown_consecutive})",
            "limits",
        )

    def _on_cooldown_ended(self, data: dict[str, Any], now: float) -> None:
        self.cooldown_until = None
        self.note(now, "cooldown over: dispatch starts again, slowly at first", "limits")

    def _on_limits_learned(self, data: dict[str, Any], now: float) -> None:
        learned = LearnedLimits.from_event(data, now)
        before = self.learned
        self.learned = learned
        if before is None or before.declared != learned.declared:
            self.note(now, limits_learned_text(learned), "limits")

    def requeue(self, item_ids: Iterable[str]) -> int:
        """Items sent to be retried by hand leave the failed table (and the failed count);
        their calls so far are kept, so a new failure shows the item's total calls."""
        count = 0
        for item_id in item_ids:
            failed = self.failed_items.pop(item_id, None)
            if failed is not None:
                count += 1
                self.attempt_base[item_id] = failed.attempts
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
    "limits_learned": RunState._on_limits_learned,
}


def limits_learned_text(learned: LearnedLimits) -> str:
    """The event log's line for new provider limits: what was declared, then the pace
    (``provider declares 500 requests, 30,000 tokens: pacing rpm 500, tpm 30,000``)."""
    declared = [
        f"{value:,.0f} {unit}"
        for value, unit in ((learned.requests_limit, "requests"), (learned.tokens_limit, "tokens"))
        if value is not None
    ]
    pace = [
        f"{name} {value:,.0f}"
        for name, value in (("rpm", learned.rpm), ("tpm", learned.tpm))
        if value is not None
    ]
    said = ", ".join(declared) if declared else "no limits"
    return f"provider declares {said}: " + (f"pacing {', '.join(pace)}" if pace else "no pacing")


def stored_run(
    run: Any, failed: Iterable[Any], outcomes: dict[str, int] | None = None
) -> dict[str, Any]:
    """A stored run (summary), its failed items and (when given) its attempt outcomes
    (``RunStore.attempt_outcomes``: retries and 429s so far) as :meth:`RunState.load` takes
    them."""
    settings = getattr(run, "settings", None) or {}
    extra: dict[str, Any] = {}
    if outcomes is not None:
        extra = {
            "retries": outcomes.get("retry", 0),
            "rate_limits": outcomes.get("rate_limited", 0),
        }
    return {
        **extra,
        "run_id": run.id,
        "name": run.name,
        "model": settings.get("model", ""),
        "settings": dict(settings),
        "rpm": settings.get("rpm"),
        "tpm": settings.get("tpm"),
        "workers": settings.get("workers"),
        "started_at": getattr(run, "started_at", None),
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
