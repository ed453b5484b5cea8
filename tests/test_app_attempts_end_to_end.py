"""The attempt inspector and replay on the real runner, engine and store, against the loopback
simulator: a 429 with rate-limit headers shows as status 429 with the provider's limits, and
an item the provider refuses is replayed with an edited prompt as a new attempt."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from textual.widgets import DataTable, Static, TextArea

from abl_tui.app import DashboardApp
from abl_tui.batchfile import BatchSpec
from abl_tui.runner import Runner, RunPlan
from abl_tui.screens import ItemDetailScreen
from abl_tui.screens.attempts import AttemptsScreen
from abl_tui.screens.replay import ReplayScreen
from app_support import wait_for

LIMITED = "say 0 [[sim:429:form=reset:retry_after=0.2 x1]]"
REFUSED = "say 1 [[sim:400]]"
FIXED = "say 1, fixed"


async def test_a_429_shows_its_status_and_limits_and_a_replay_fixes_an_item(
    tmp_path: Path,
) -> None:
    items = tmp_path / "items.jsonl"
    with items.open("w") as out:
        for item_id, prompt in (("i0", LIMITED), ("i1", REFUSED), ("i2", "say 2")):
            out.write(json.dumps({"id": item_id, "prompt": prompt}) + "\n")
    spec = BatchSpec(items=str(items), model="simulated/fast", workers=2, max_attempts=1)
    runner = Runner(
        RunPlan(db_path=tmp_path / "runs.db", settings=spec, items_path=items, keep_open=True)
    )
    app = DashboardApp(runner)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            state = app.model.state
            await wait_for(
                pilot,
                lambda: app.model.seeded and state.done == 3 and not app.model.active,
                "the first round",
            )
            assert set(state.failed_items) == {"i1"}

            app.open_item("i0")
            await wait_for(pilot, lambda: _detail_loaded(app), "i0's screen")
            await pilot.press("a")
            await wait_for(pilot, lambda: isinstance(app.screen, AttemptsScreen), "inspector")
            inspector = app.screen
            assert isinstance(inspector, AttemptsScreen)
            table = inspector.query_one("#attempts-table", DataTable)
            rows = [[str(c) for c in table.get_row_at(n)] for n in range(table.row_count)]
            assert [row[:3] for row in rows] == [["1", "rate_limited", "429"], ["2", "ok", "—"]]
            await pilot.press("k")
            limits = str(inspector.query_one("#attempt-limits", Static).render())
            assert "requests  limit —  remaining 0  reset" in limits
            assert "HTTP 429" in str(inspector.query_one("#answer-heading", Static).render())
            assert "simulated/fast" in str(inspector.query_one("#attempt-request", Static).render())
            await pilot.press("escape", "escape")

            app.open_item("i1")
            await wait_for(pilot, lambda: _detail_loaded(app, "i1"), "i1's screen")
            await pilot.press("e")
            await wait_for(pilot, lambda: isinstance(app.screen, ReplayScreen), "replay modal")
            app.screen.query_one("#replay-prompt", TextArea).text = FIXED
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: not state.failed_items, "the replay's success")
            await wait_for(pilot, lambda: not app.model.active, "the replay round's end")

            record = await app.load_item("i1")
            assert record.prompt == REFUSED  # the item's stored prompt stays the original
            assert record.status == "succeeded" and FIXED in str(record.output)
            first, replay = record.history
            assert (first.outcome, first.status, first.prompt) == ("failed", 400, None)
            assert (replay.outcome, replay.prompt) == ("ok", FIXED)
            assert replay.parameters is not None
            assert replay.parameters["model"] == "simulated/fast"
            assert "api_key" not in json.dumps(replay.parameters)
            assert state.succeeded == 3 and state.failed == 0
    finally:
        runner.cancel()
        await asyncio.to_thread(runner.join, 30)


def _detail_loaded(app: DashboardApp, item_id: str = "i0") -> bool:
    screen = app.screen
    return (
        isinstance(screen, ItemDetailScreen)
        and screen.item_id == item_id
        and screen.record is not None
    )
