"""Test doubles and helpers shared by the dashboard tests (imported as ``app_support``).

The FakeRunner stands in for the engine thread only: it offers the runner's public surface,
records every command it gets, and feeds a scripted list of engine events into its buffer.
The FakeSource stands in for a store watch mode polls. Everything is deterministic: times
are offsets from a frozen clock (``NOW``).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from textual.pilot import Pilot
from textual.screen import Screen

from abl_tui.app import DashboardApp
from abl_tui.watch import Snapshot, WatchFeed

#: The frozen wall clock every scripted test runs at.
NOW = 1_764_000_000.0
RUN_ID = "r-20251124-demo01"

Event = tuple[str, dict[str, Any], float]


def frozen_clock() -> float:
    """The frozen clock: always NOW."""
    return NOW


class FakeBuffer:
    """The runner's event buffer: ``drain()`` hands out what was pushed, oldest first."""

    def __init__(self) -> None:
        self.events: deque[Event] = deque()

    def push(self, events: list[Event]) -> None:
        """Add events as the engine would."""
        self.events.extend(events)

    def drain(self, limit: int = 200_000) -> list[Event]:
        """Take up to ``limit`` events."""
        events, pop = self.events, self.events.popleft
        return [pop() for _ in range(min(limit, len(events)))]


@dataclass
class FakeRunner:
    """The runner's public surface; records commands, feeds ``script`` when started."""

    initial: dict[str, Any] = field(default_factory=dict)
    script: list[Event] = field(default_factory=list)
    items: dict[str, Any] = field(default_factory=dict)
    runs: list[Any] = field(default_factory=list)
    db_path: Path = Path("fake-runs.db")
    ready_on_start: bool = True

    def __post_init__(self) -> None:
        self.buffer = FakeBuffer()
        self.ready = threading.Event()
        self.done = threading.Event()
        self.commands: list[tuple[Any, ...]] = []
        self.outcome = SimpleNamespace(error=None, status="pending", run_id=self.run_id)
        self.plan = SimpleNamespace(db_path=self.db_path)
        self._paused = False
        self.cancelled = False

    @property
    def run_id(self) -> str | None:
        return self.initial.get("run_id")

    @property
    def paused(self) -> bool:
        return self._paused

    def names(self) -> list[str]:
        """The names of the commands received, in order."""
        return [command[0] for command in self.commands]

    def start(self) -> None:
        self.commands.append(("start",))
        if self.ready_on_start:
            self.ready.set()
        self.buffer.push(self.script)

    def retry_items(self, item_ids: list[str]) -> None:
        self.commands.append(("retry_items", list(item_ids)))

    def retry_all_failed(self) -> None:
        self.commands.append(("retry_all_failed",))

    def replay(self, item_id: str, prompt: str, options: dict[str, Any] | None = None) -> None:
        self.commands.append(("replay", item_id, prompt, dict(options or {})))

    def pause(self) -> None:
        self._paused = True
        self.commands.append(("pause",))

    def resume(self) -> None:
        self._paused = False
        self.commands.append(("resume",))

    def stop(self) -> None:
        self.commands.append(("stop",))
        self.done.set()

    def cancel(self) -> None:
        self.commands.append(("cancel",))
        self.cancelled = True
        self.done.set()

    def set_workers(self, count: int) -> None:
        self.commands.append(("set_workers", count))

    #: What :meth:`set_limits` answers: True as an engine with a pacing setter would.
    limits_live: bool = True
    max_cost: float | None = None
    budget_status: str | None = None
    draining: bool = False

    def set_limits(self, rpm: float | None, tpm: float | None) -> bool:
        self.commands.append(("set_limits", rpm, tpm))
        return self.limits_live

    def set_max_cost(self, max_cost: float | None) -> None:
        self.commands.append(("set_max_cost", max_cost))
        self.max_cost = max_cost
        if max_cost is None:
            self.budget_status = None

    def drain(self) -> None:
        self.commands.append(("drain",))
        self.draining = True

    def join(self, timeout: float | None = None) -> bool:
        return True

    def fetch_item(self, item_id: str) -> concurrent.futures.Future[Any]:
        self.commands.append(("fetch_item", item_id))
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        future.set_result(self.items.get(item_id))
        return future

    def fetch_runs(self) -> concurrent.futures.Future[Any]:
        self.commands.append(("fetch_runs",))
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        future.set_result(list(self.runs))
        return future


FAILURES = [
    ("p0006", "invalid_request", "400 Bad Request: [[sim:400]] the prompt was refused", 1),
    ("p0018", "timeout", "attempt timed out after 20.0s", 4),
    ("p0030", "server_error", "503 Service Unavailable: upstream overloaded", 4),
    ("p0042", "validation_error", "output is not one of the allowed categories: 'gadgets'", 3),
    ("p0054", "rate_limit", "rate-limited 6 times (max_rate_limit_retries=5): 429", 6),
]


def initial_run(total: int = 120) -> dict[str, Any]:
    """The stored run a scripted runner starts from."""
    return {
        "run_id": RUN_ID,
        "name": "Product catalogue (demo)",
        "model": "simulated/demo",
        "rpm": 600.0,
        "tpm": None,
        "total": total,
        "succeeded": 0,
        "failed": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cached_tokens": 0,
        "cost": None,
        "failed_items": [],
    }


def demo_script(*, cost: bool = True, cooldown: bool = True) -> list[Event]:
    """A minute of a run: 4 workers, 60 successes, 5 failures, retries, 429s, a cooldown."""
    events: list[Event] = []
    start = NOW - 65.0
    events.append(("batch_started", {"total": 0, "max_workers": 4}, start))
    for worker in range(4):
        events.append(("worker_started", {"worker_id": worker}, start))
    failures = {index * 12 + 5: failure for index, failure in enumerate(FAILURES)}
    for index in range(60):
        at = start + 2.0 + index * (60.0 / 60)
        item_id = f"p{index + 1:04d}"
        worker = index % 4
        events.append(
            (
                "item_started",
                {"item_id": item_id, "worker_id": worker, "attempt": 1, "time": at},
                at,
            )
        )
        usage = {"input_tokens": 220, "output_tokens": 4 + index % 5, "cached_input_tokens": 160}
        if index in failures:
            failed_id, category, message, attempts = failures[index]
            events.append(
                (
                    "item_retry",
                    {"item_id": item_id, "worker_id": worker, "attempt": 1, "wait": 1.0},
                    at + 0.2,
                )
            )
            events.append(
                (
                    "item_failed",
                    {
                        "item_id": failed_id,
                        "worker_id": worker,
                        "error": message,
                        "error_category": category,
                        "attempts": attempts,
                        "tokens": usage,
                        "cost": 0.00021 if cost else None,
                    },
                    at + 0.5,
                )
            )
            continue
        events.append(
            (
                "item_completed",
                {
                    "item_id": item_id,
                    "worker_id": worker,
                    "attempts": 1,
                    "tokens": usage,
                    "cost": 0.00021 if cost else None,
                },
                at + 0.5,
            )
        )
    for hit in range(3):
        events.append(
            ("rate_limit_hit", {"item_id": f"p{61 + hit:04d}", "worker_id": hit}, NOW - 3 + hit)
        )
    if cooldown:
        events.append(
            (
                "cooldown_started",
                {"worker_id": 0, "duration": 15.0, "consecutive": 2, "until": NOW + 12.5},
                NOW - 2.5,
            )
        )
    for worker, (item_id, attempt, ago) in enumerate(
        [("p0061", 2, 4.0), ("p0062", 1, 2.2), ("p0063", 3, 31.0)]
    ):
        at = NOW - ago
        events.append(
            (
                "item_started",
                {"item_id": item_id, "worker_id": worker, "attempt": attempt, "time": at},
                at,
            )
        )
    return events


def finished_script() -> list[Event]:
    """The demo minute followed by the end of the round (every worker idle)."""
    events = demo_script(cooldown=False)
    events.append(("cooldown_ended", {"duration": 15.0}, NOW - 1.0))
    for worker, item_id in enumerate(("p0061", "p0062", "p0063")):
        events.append(
            (
                "item_completed",
                {"item_id": item_id, "worker_id": worker, "attempts": 1, "tokens": {}},
                NOW - 0.9,
            )
        )
    for worker in range(4):
        events.append(("worker_stopped", {"worker_id": worker}, NOW - 0.5))
    events.append(("batch_completed", {"processed": 63}, NOW - 0.5))
    return events


def limits_learned(at: float, remaining: int, tokens_left: int) -> Event:
    """The provider declared 500 requests and 30,000 tokens a minute (under the 600 rpm
    configured): the engine paces at 500 rpm and 30k tpm."""
    payload = {
        "requests_limit": 500,
        "requests_remaining": remaining,
        "requests_reset_s": 12.0,
        "tokens_limit": 30_000,
        "tokens_remaining": tokens_left,
        "tokens_reset_s": 4.0,
        "rpm": 500.0,
        "tpm": 30_000.0,
    }
    return ("limits_learned", payload, at)


def learned_limits_script() -> list[Event]:
    """The demo minute with the provider's limits declared twice (the budget left moved)."""
    events = demo_script()
    events.insert(10, limits_learned(NOW - 60.0, 499, 29_700))
    events.append(limits_learned(NOW - 0.5, 312, 28_100))
    return events


def demo_runner(**overrides: Any) -> FakeRunner:
    """A FakeRunner with the demo run and script (override any field)."""
    overrides.setdefault("initial", initial_run())
    overrides.setdefault("script", demo_script())
    overrides.setdefault("items", demo_items())
    return FakeRunner(**overrides)


@dataclass
class FakeItemRecord:
    """The shape of the store's item record, as far as the detail screen reads it."""

    item_id: str
    status: str
    prompt: str
    output: Any
    error: str | None
    error_category: str | None
    attempts: int
    history: list[dict[str, Any]]


def demo_items() -> dict[str, FakeItemRecord]:
    """Stored records for the scripted failures and one success."""
    items: dict[str, FakeItemRecord] = {}
    for item_id, category, message, attempts in FAILURES:
        items[item_id] = FakeItemRecord(
            item_id,
            "failed",
            f"Classify the product listing {item_id}: Bluepeak Portable SSD 1TB [[sim:400]]",
            None,
            message,
            category,
            attempts,
            [
                {
                    "attempt": n + 1,
                    "outcome": "failed" if n + 1 == attempts else "retry",
                    "error_category": category,
                    "duration": 0.25 * (n + 1),
                    "error": message,
                }
                for n in range(attempts)
            ],
        )
    items["p0001"] = FakeItemRecord(
        "p0001",
        "succeeded",
        "Classify the product listing p0001: Bluepeak Portable SSD 1TB",
        "electronics",
        None,
        None,
        1,
        [{"attempt": 1, "outcome": "ok", "error_category": "", "duration": 0.31, "error": ""}],
    )
    return items


@dataclass
class FakeRun:
    """The shape of a run summary, as the runs screen reads it."""

    id: str
    name: str
    status: str
    total: int
    succeeded: int
    failed: int
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None
    started_at: str | None = None
    finished_at: str | None = None


def demo_runs() -> list[FakeRun]:
    """Three stored runs, newest first."""
    return [
        FakeRun(
            RUN_ID,
            "Product catalogue (demo)",
            "running",
            120,
            55,
            5,
            started_at="2025-11-24 16:00:00",
        ),
        FakeRun(
            "r-20251123-aaaa01",
            "Support tickets",
            "failed",
            500,
            480,
            20,
            cost=0.42,
            started_at="2025-11-23 09:12:44",
        ),
        FakeRun(
            "r-20251122-bbbb02",
            "Translations",
            "completed",
            80,
            80,
            0,
            cost=0.05,
            started_at="2025-11-22 18:30:05",
        ),
    ]


# ---------------------------------------------------------------------- watch mode


@dataclass
class Run:
    """The fields of a stored run summary that watch mode reads."""

    id: str = RUN_ID
    name: str = "Product catalogue (demo)"
    status: str = "running"
    settings: dict[str, Any] = field(default_factory=lambda: {"model": "simulated/demo"})
    total: int = 120
    succeeded: int = 40
    failed: int = 2
    input_tokens: int = 8_800
    output_tokens: int = 240
    cached_tokens: int = 6_400
    cost: float | None = 0.0084
    started_at: float | None = NOW - 80.0
    finished_at: float | None = None


@dataclass
class Item:
    """The fields of a stored item that watch mode reads."""

    item_id: str
    attempts: int = 1
    error: str | None = None
    error_category: str | None = None
    started_at: float | None = None


FAILED = [
    Item("p0006", 1, "400 Bad Request: the prompt was refused", "invalid_request"),
    Item("p0018", 4, "attempt timed out after 20.0s", "timeout"),
]
RUNNING = [Item("p0044", 2, started_at=NOW - 3.0), Item("p0043", 1, started_at=NOW - 9.0)]


class FakeSource:
    """A run source with fixed content; each snapshot can be replaced between polls."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.current = snapshot
        self.closed = False

    async def open(self) -> str:
        return self.current.run.id

    async def snapshot(self) -> Snapshot:
        return self.current

    async def item(self, item_id: str) -> Any:
        return demo_items().get(item_id)

    async def runs(self) -> list[Any]:
        return [self.current.run]

    async def close(self) -> None:
        self.closed = True


# ---------------------------------------------------------------------- apps and screens


def watch_app(source: Any = None) -> tuple[DashboardApp, WatchFeed]:
    """The dashboard following a fixed source (watch mode) on the frozen clock, polling
    quickly; the feed counts its polls."""
    source = source or FakeSource(Snapshot(Run(), list(FAILED), list(RUNNING)))
    feed = WatchFeed(source, poll_seconds=0.05)
    return DashboardApp(feed, clock=frozen_clock), feed


async def settle(pilot: Pilot[Any]) -> None:
    """Let the app mount, pull its feed and redraw."""
    await pilot.pause()
    pilot.app.tick()  # type: ignore[attr-defined]
    await pilot.pause()


def palette(app: DashboardApp, screen: Screen[Any] | None = None) -> dict[str, Callable[[], Any]]:
    """The palette's commands on ``screen`` (the screen on top by default), by name: the
    app's (system commands) and the screen's own."""
    screen = screen or app.screen
    commands = {command.title: command.callback for command in app.get_system_commands(screen)}
    offers = getattr(screen, "palette_commands", None)
    for name, _, callback in offers() if callable(offers) else []:
        commands[name] = callback
    return commands


#: How many short pauses :func:`until` gives a condition before the test fails (a count,
#: not a time: a slow machine takes longer, never fails for it).
UNTIL_PAUSES = 2_000


async def until(pilot: Pilot[Any], condition: Callable[[], object], what: str = "") -> None:
    """Let the app run until ``condition()`` holds (fail, saying ``what``, if it never does)."""
    for _ in range(UNTIL_PAUSES):
        if condition():
            return
        await pilot.pause(0.01)
    raise AssertionError(f"never happened: {what or condition}")


async def wait_for(pilot: Pilot[Any], condition: Any, what: str, timeout: float = 90.0) -> None:
    """Pause until ``condition()`` holds while a real engine works in its own thread (a
    deadline, not a bound: it only turns a hang into a failure that says what it waited for)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.1)


def inspected_item() -> Any:
    """A stored item whose story the attempt inspector tells: a 429 with the provider's
    limits, a 503, then a replay with its own prompt and max_tokens that succeeded."""
    from async_batch_llm.store.records import AttemptRecord, ItemRecord

    limits = {"requests_limit": 600, "requests_remaining": 0, "requests_reset_s": 1.5}
    limits |= {"tokens_limit": 90_000, "tokens_remaining": 88_500, "tokens_reset_s": 0.25}
    start = 1_700_000_000.0
    history = (
        AttemptRecord(1, start, start + 0.12, 0.12, "rate_limited", "429 Rate limit reached",
                      "rate_limit", 1.5, 429, limits),
        AttemptRecord(2, start + 1.7, start + 2.0, 0.3, "failed",
                      "503 The server is overloaded, try again later", "server_error", None, 503),
        AttemptRecord(3, start + 60.0, start + 60.4, 0.4, "ok", None, None, None, None, None,
                      "Classify p0030 (edited): Bluepeak Portable SSD 1TB",
                      {"model": "simulated/demo", "max_tokens": 20, "temperature": 0.0}),
    )  # fmt: skip
    return ItemRecord(
        RUN_ID, "p0030", 29, "Classify the product listing p0030: Bluepeak Portable SSD 1TB",
        None, "succeeded", 3, "electronics", False, None, None, 30, 3, 0, None,
        start, start + 60.4, 0.4, history,
    )  # fmt: skip


def inspector_runner() -> FakeRunner:
    """The demo runner whose p0030 has :func:`inspected_item`'s story, and stored settings."""
    runner = demo_runner(runs=demo_runs())
    runner.items["p0030"] = inspected_item()
    runner.initial["settings"] = {"model": "simulated/demo", "max_tokens": 64, "temperature": 0.2}
    return runner
