"""A flood of engine events must not make the dashboard slow to answer a key.

Counted in the dashboard's own ticks, not in seconds: with a buffer that never runs dry,
each tick folds what its budget allows and gives the loop back, so a key pressed during
the flood is carried out within a tick or two, however fast the machine is. (Timings of
the same thing live in benchmarks/dashboard_overhead.py.)
"""

from __future__ import annotations

from typing import Any

from abl_tui.app import DashboardApp
from abl_tui.feeds import RunnerFeed
from app_support import FakeRunner, initial_run, until

#: Ticks a key may wait behind the flood: the one under way when it came, and the next.
MAX_TICKS_BEHIND = 2


class EndlessBuffer:
    """An engine buffer that never runs dry: every drain hands out a full slice of item
    events (started, then completed), as a provider answering faster than the UI folds."""

    def __init__(self) -> None:
        self.number = 0
        self.drains = 0

    def push(self, events: list[tuple[str, dict[str, Any], float]]) -> None:
        """The runner's scripted events: none here, the flood is endless."""
        assert not events

    def drain(self, limit: int = 200_000) -> list[tuple[str, dict[str, Any], float]]:
        self.drains += 1
        events: list[tuple[str, dict[str, Any], float]] = []
        if self.drains == 1:  # a round starts: the run is going, so p pauses it
            events.append(("batch_started", {"max_workers": 16}, 0.0))
            limit -= 1
        for _ in range(limit // 2):
            item_id, worker = f"i{self.number}", self.number % 16
            self.number += 1
            events.append(("item_started", {"item_id": item_id, "worker_id": worker}, 0.0))
            done = {"item_id": item_id, "worker_id": worker, "tokens": {"input_tokens": 9}}
            events.append(("item_completed", done, 0.0))
        return events


class FloodedRunner(FakeRunner):
    """A runner under a flood that notes, for each command, how many ticks had run."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.buffer = EndlessBuffer()  # type: ignore[assignment]
        self.ticks = 0
        self.ticks_at: list[tuple[str, int]] = []

    def pause(self) -> None:
        super().pause()
        self.ticks_at.append(("pause", self.ticks))

    def resume(self) -> None:
        super().resume()
        self.ticks_at.append(("resume", self.ticks))


async def test_keys_are_handled_within_a_tick_or_two_under_a_flood_of_events() -> None:
    runner = FloodedRunner(initial=initial_run(total=10_000_000))
    app = DashboardApp(runner, refresh_seconds=0.05)
    feed = app.feed
    assert isinstance(feed, RunnerFeed)
    pull = feed.pull

    def counted_pull(*args: Any) -> None:
        pull(*args)
        runner.ticks += 1

    feed.pull = counted_pull  # type: ignore[method-assign]
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: runner.ticks >= 3, "the flood under way")
        for key, command in (("p", "pause"), ("p", "resume"), ("p", "pause")):
            pressed_at = runner.ticks
            await pilot.press(key)
            handled = lambda command=command: runner.names()[-1] == command  # noqa: E731
            await until(pilot, handled, f"{command} handled")
            name, handled_at = runner.ticks_at[-1]
            assert name == command
            assert handled_at - pressed_at <= MAX_TICKS_BEHIND, (pressed_at, handled_at)
        # ... and the dashboard kept folding the flood meanwhile, in slices of its budget
        assert runner.buffer.drains > runner.ticks
        assert app.model.state.succeeded > 0
