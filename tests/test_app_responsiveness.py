"""A flood of engine events must not make the dashboard slow to answer a key."""

from __future__ import annotations

import threading
import time
from typing import Any

from abl_tui.app import DashboardApp
from app_support import FakeRunner, initial_run

#: Events per second the fake engine pushes (item_started + item_completed pairs).
EVENTS_PER_SECOND = 20_000
#: A key must be handled within this (generous: a behaviour check, not a benchmark).
KEY_BOUND_SECONDS = 1.0


class FloodingEngine(threading.Thread):
    """Pushes item events into the runner's buffer at a steady rate until stopped."""

    def __init__(self, runner: FakeRunner) -> None:
        super().__init__(daemon=True)
        self.runner = runner
        self.stopping = threading.Event()
        self.pushed = 0

    def run(self) -> None:
        batch = EVENTS_PER_SECOND // 100
        number = 0
        while not self.stopping.is_set():
            now = time.time()
            events: list[tuple[str, dict[str, Any], float]] = []
            for _ in range(batch // 2):
                item_id, worker = f"i{number}", number % 16
                number += 1
                events.append(("item_started", {"item_id": item_id, "worker_id": worker}, now))
                events.append(
                    (
                        "item_completed",
                        {"item_id": item_id, "worker_id": worker, "tokens": {"input_tokens": 9}},
                        now,
                    )
                )
            self.runner.buffer.push(events)
            self.pushed += len(events)
            time.sleep(0.01)


async def test_keys_are_handled_promptly_under_a_flood_of_events() -> None:
    runner = FakeRunner(initial=initial_run(total=10_000_000))
    runner.script = [("batch_started", {"max_workers": 16}, time.time())]
    app = DashboardApp(runner)
    engine = FloodingEngine(runner)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        engine.start()
        try:
            await pilot.pause(1.0)  # let the flood build up
            latencies = []
            for key, command in (("p", "pause"), ("p", "resume"), ("p", "pause")):
                started = time.perf_counter()
                await pilot.press(key)
                while runner.names()[-1] != command:
                    await pilot.pause(0.01)
                    assert time.perf_counter() - started < 10, "the key was never handled"
                latencies.append(time.perf_counter() - started)
            assert max(latencies) < KEY_BOUND_SECONDS, latencies
            # ... and the dashboard kept up with the events meanwhile
            await pilot.pause(0.5)
            assert app.model.state.succeeded > engine.pushed // 2 * 0.5
        finally:
            engine.stopping.set()
            engine.join()
