"""The README's demo: answers that look like the task, failures worth retrying and failures
that stay, a cooldown, and a cost (its calls billed at gpt-4o-mini's prices via price_as)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from abl_tui import cli
from abl_tui.app import DashboardApp
from abl_tui.batchfile import BatchFileError, iter_items, load_batch
from abl_tui.runner import Runner, RunPlan
from abl_tui.screens import ConfirmScreen
from app_support import wait_for
from async_batch_llm.providers.pricing import model_price
from async_batch_llm.simulator.profiles import profile_from_name
from async_batch_llm.simulator.protocol import build_call, estimate_tokens, reply_text
from async_batch_llm.store import RunStore

SAMPLES = Path(__file__).resolve().parent.parent / "sample_batches"


def demo_items() -> list[Any]:
    return list(iter_items(SAMPLES / "demo.jsonl"))


def test_the_simulator_answers_each_listing_with_its_category() -> None:
    items = demo_items()
    for item in items:
        call = build_call("sim-demo", [{"role": "user", "content": item.prompt}], None)
        assert reply_text(call) == item.context["expected"], item.id


def test_structured_answers_take_the_category_from_the_listing() -> None:
    batch = load_batch(SAMPLES / "structured.toml")
    schema = batch.spec.response_schema
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    for item in iter_items(batch.items_path):
        call = build_call("sim", [{"role": "user", "content": item.prompt}], fmt)
        assert json.loads(reply_text(call))["category"] == item.context["expected"]


def test_prompts_that_pick_nothing_still_get_the_echo() -> None:
    call = build_call("sim", [{"role": "user", "content": "hello there"}], None)
    assert reply_text(call) == "sim reply to hello there"


def test_the_demo_has_failures_to_retry_and_failures_that_stay() -> None:
    items = demo_items()
    window = profile_from_name("demo").context_window
    assert window is not None
    retryable = [item for item in items if "x4]]" in item.prompt]
    too_long = [item for item in items if estimate_tokens(item.prompt) + 6 > window]
    assert len(retryable) == 5 and len(too_long) == 3
    assert not {item.id for item in retryable} & {item.id for item in too_long}
    spec = load_batch(SAMPLES / "demo.toml").spec
    assert spec.max_attempts == 4  # the directives fail exactly the first round's attempts
    assert spec.price_as == "openai/gpt-4o-mini"
    profile = profile_from_name("demo")
    assert profile.rate_limit_rate > 0 and profile.retry_after >= 2  # a cooldown to see


# ---------------------------------------------------------------------- price_as


def test_price_as_must_name_a_priced_model(tmp_path: Path) -> None:
    (tmp_path / "items.jsonl").write_text('{"id": "a", "prompt": "hi"}\n')
    spec = tmp_path / "spec.toml"
    spec.write_text('items = "items.jsonl"\nmodel = "simulated/fast"\nprice_as = "nope/never"\n')
    with pytest.raises(BatchFileError, match=r"price_as.*not in the price table"):
        load_batch(spec)


async def test_price_as_bills_each_call_at_that_models_rates(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]  # the process's simulator is shared: prompts of our own
    items = tmp_path / "items.jsonl"
    items.write_text(
        "".join(
            json.dumps({"id": f"i{n}", "prompt": f"price check {tag} {n} " * 20}) + "\n"
            for n in range(4)
        )
    )
    spec = tmp_path / "spec.toml"
    spec.write_text(
        'items = "items.jsonl"\nmodel = "simulated/default"\nprice_as = "openai/gpt-4o-mini"\n'
    )
    db = tmp_path / "runs.db"
    status = await asyncio.to_thread(cli.main, ["run", str(spec), "--headless", "--db", str(db)])
    assert status == cli.EXIT_OK
    price = model_price("openai", "gpt-4o-mini")
    assert price is not None
    store = await RunStore.open(db, readonly=True)
    try:
        [run] = await store.list_runs()
        records = [await store.item(run.id, f"i{n}") for n in range(4)]
    finally:
        await store.close()
    for record in records:
        assert record is not None and record.input_tokens > 0
        expected = price.cost(record.input_tokens, record.output_tokens, record.cached_tokens)
        assert record.cost == pytest.approx(expected)
    assert run.cost == pytest.approx(sum(record.cost for record in records if record))


# ---------------------------------------------------------------------- the demo's story


async def test_retry_by_hand_fixes_the_retryable_and_not_the_too_long(tmp_path: Path) -> None:
    """Three demo items on the demo's own simulator profile: one fine, one the provider fails
    all four times, one too long. ``R`` ``y`` then fixes exactly the second."""
    tag = uuid.uuid4().hex[:8]
    by_id = {item.id: item for item in demo_items()}
    retryable = next(i for i in by_id.values() if "[[sim:503 x4]]" in i.prompt)
    too_long = next(i for i in by_id.values() if "specification sheet" in i.prompt)
    chosen = {"fine": by_id["p0001"], "flaky": retryable, "long": too_long}
    items = tmp_path / "items.jsonl"
    with items.open("w") as out:
        for name, item in chosen.items():
            prompt = f"[{tag}] {item.prompt}"  # unique: the simulator counts per prompt
            out.write(json.dumps({"id": name, "prompt": prompt, "context": item.context}) + "\n")
    spec = load_batch(SAMPLES / "demo.toml").spec.merged(items=str(items), workers=3)
    runner = Runner(
        RunPlan(db_path=tmp_path / "runs.db", settings=spec, items_path=items, keep_open=True)
    )
    app = DashboardApp(runner)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            state = app.model.state
            await wait_for(
                pilot,
                lambda: app.model.seeded and state.done == 3 and not app.model.active,
                "the first round",
            )
            assert set(state.failed_items) == {"flaky", "long"}
            assert state.failed_items["long"].error_category == "context_window"
            assert state.totals.cost_known and state.totals.cost > 0  # priced as gpt-4o-mini
            fine = await app.load_item("fine")
            assert fine.output == by_id["p0001"].context["expected"]

            await pilot.press("R")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await wait_for(
                pilot,
                lambda: not app.model.active and state.done == 3 and state.failed == 1,
                "the retry round",
            )
            assert set(state.failed_items) == {"long"}
            flaky = await app.load_item("flaky")
            assert flaky.status == "succeeded" and flaky.attempts == 5
            assert flaky.output == retryable.context["expected"]
            await pilot.press("q")
            await pilot.pause()
        await asyncio.to_thread(runner.join, 30)
    finally:
        if not runner.done.is_set():
            runner.cancel()
            await asyncio.to_thread(runner.join, 30)
