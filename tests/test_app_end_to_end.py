"""The dashboard on the real runner, engine and store, against the loopback simulator.

Two of six items carry the ``[[sim:400]]`` directive, so the simulator refuses them every
time. Pressing ``R`` then ``y`` must send exactly those two to the provider again (the store
counts a second attempt each), and ``q`` must then quit at once, ending the engine thread.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from abl_tui.app import DashboardApp
from abl_tui.batchfile import BatchSpec
from abl_tui.runner import Runner, RunPlan
from abl_tui.screens import ConfirmScreen
from app_support import wait_for

REFUSED = {"i2", "i5"}


async def test_retry_all_failed_sends_them_again_then_q_quits(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    with items.open("w") as out:
        for number in range(6):
            item_id = f"i{number}"
            directive = " [[sim:400]]" if item_id in REFUSED else ""
            out.write(json.dumps({"id": item_id, "prompt": f"say {number}{directive}"}) + "\n")
    spec = BatchSpec(items=str(items), model="simulated/fast", workers=3, max_attempts=2)
    runner = Runner(
        RunPlan(db_path=tmp_path / "runs.db", settings=spec, items_path=items, keep_open=True)
    )
    app = DashboardApp(runner)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            state = app.model.state
            await wait_for(
                pilot,
                lambda: app.model.seeded and state.done == 6 and not app.model.active,
                "the first round",
            )
            assert set(state.failed_items) == REFUSED and state.succeeded == 4
            before = {item_id: (await app.load_item(item_id)).attempts for item_id in REFUSED}

            await pilot.press("R")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await wait_for(
                pilot,
                lambda: not app.model.active and set(state.failed_items) == REFUSED,
                "the retry round",
            )
            for item_id in REFUSED:
                record = await app.load_item(item_id)
                assert record.status == "failed"
                assert record.attempts == before[item_id] + 1, item_id
            ok = await app.load_item("i0")
            assert ok.attempts == 1  # a succeeded item is never sent again

            await pilot.press("q")  # the run is finished: no question
            await pilot.pause()
        await asyncio.to_thread(runner.join, 30)
        assert runner.done.is_set()
        assert runner.outcome.status == "failed" and runner.outcome.failed == 2
    finally:
        if not runner.done.is_set():
            runner.cancel()
            await asyncio.to_thread(runner.join, 30)
