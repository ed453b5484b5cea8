"""Retries by hand on the real runner: only what is still failed goes again, so nothing that
succeeded meanwhile is paid twice (the dashboard's question may stay open while items end)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from abl_tui.batchfile import BatchSpec
from abl_tui.runner import Runner, RunPlan
from async_batch_llm.providers._simulated import shared_simulator
from support import wait_for_thread


def test_a_retry_request_naming_a_succeeded_item_sends_only_the_failed_one(
    tmp_path: Path,
) -> None:
    tag = uuid.uuid4().hex
    prompts = {"ok": f"{tag} fine", "bad": f"{tag} refused [[sim:400]]"}
    items = tmp_path / "items.jsonl"
    items.write_text(
        "".join(json.dumps({"id": key, "prompt": text}) + "\n" for key, text in prompts.items())
    )
    spec = BatchSpec(items=str(items), model="simulated/default", workers=2, max_attempts=1)
    plan = RunPlan(db_path=tmp_path / "runs.db", settings=spec, items_path=items, keep_open=True)
    runner = Runner(plan)
    runner.start()
    try:
        wait_for_thread(lambda: runner.flight.finished == 2, "the first round")
        runner.retry_items(["ok", "bad"])  # "ok" succeeded: a stale request names it too
        wait_for_thread(lambda: runner.flight.finished >= 3, "the retry of the failed item")
        runner.stop()
        assert runner.join(60), "the runner did not end"
    finally:
        if not runner.done.is_set():
            runner.cancel()
            runner.join(30)
    sent = shared_simulator("default").requests_by_prompt()
    assert len(sent[prompts["ok"]]) == 1  # not paid twice
    assert len(sent[prompts["bad"]]) == 2


async def test_items_and_runs_still_load_once_the_engine_has_ended(tmp_path: Path) -> None:
    """After the engine's thread ended (a drain, a stopped run), the dashboard still opens an
    item's detail and the runs list: read from the store file, read-only."""
    from abl_tui.feeds import RunnerFeed

    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"id": "only", "prompt": f"{uuid.uuid4().hex} hi"}) + "\n")
    spec = BatchSpec(items=str(items), model="simulated/default", workers=1)
    runner = Runner(RunPlan(db_path=tmp_path / "runs.db", settings=spec, items_path=items))
    runner.start()
    assert runner.join(60), "the run did not end"
    feed = RunnerFeed(runner, started=True)
    item = await feed.load_item("only")
    assert item is not None and item.status == "succeeded"
    assert [run.id for run in await feed.load_runs()] == [runner.run_id]
