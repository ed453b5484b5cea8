"""The simulator's batch endpoints over raw HTTP (files, list pages, cancel, results before
the end, bad input), and the batch clients' and runner's answers to what they serve."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from async_batch_llm import LiteLLMStrategy, LLMWorkItem
from async_batch_llm.batch_api import BatchApiConfig, MemoryBatchJournal, ProviderBatchRunner
from async_batch_llm.providers.batch import BatchLimits, batch_client, batch_target
from async_batch_llm.simulator import ProviderSimulator
from async_batch_llm.simulator.batches import BatchSimSettings

KEY = "sk-test-batch-0123456789"


@pytest.fixture
async def sim() -> AsyncIterator[ProviderSimulator]:
    async with ProviderSimulator("fast", batch_settings=BatchSimSettings()) as simulator:
        yield simulator


def chat_line(custom_id: str, prompt: str, model: str = "gpt-4o-mini") -> str:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    return json.dumps(line)


async def upload(http: aiohttp.ClientSession, base: str, lines: list[str]) -> str:
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    form.add_field("file", "\n".join(lines).encode(), filename="in.jsonl")
    async with http.post(f"{base}/files", data=form) as response:
        assert response.status == 200
        return str((await response.json())["id"])


async def create(http: aiohttp.ClientSession, base: str, file_id: str) -> dict[str, Any]:
    body = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    async with http.post(f"{base}/batches", json=body) as response:
        assert response.status == 200
        data: dict[str, Any] = await response.json()
        return data


async def test_openai_files_batches_output_and_error_files(sim: ProviderSimulator) -> None:
    base = sim.base_url
    async with aiohttp.ClientSession() as http:
        file_id = await upload(
            http, base, [chat_line("a", "hello"), chat_line("b", "x [[sim:400]]")]
        )
        batch = await create(http, base, file_id)
        assert batch["status"] == "completed"  # processing_seconds=0: done at the first look
        assert batch["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
        async with http.get(f"{base}/files/{batch['output_file_id']}/content") as response:
            (output,) = [json.loads(line) for line in (await response.text()).splitlines()]
        async with http.get(f"{base}/files/{batch['error_file_id']}/content") as response:
            (error,) = [json.loads(line) for line in (await response.text()).splitlines()]
    assert output["custom_id"] == "a" and output["response"]["status_code"] == 200
    assert output["response"]["body"]["choices"][0]["message"]["content"] == "sim reply to hello"
    assert error["custom_id"] == "b" and error["response"]["status_code"] == 400
    assert [e.custom_id for e in sim.batches.ledger] == ["a", "b"]


async def test_openai_file_with_two_models_fails_the_batch(sim: ProviderSimulator) -> None:
    lines = [chat_line("a", "one"), chat_line("b", "two", model="gpt-4o")]
    async with aiohttp.ClientSession() as http:
        batch = await create(http, sim.base_url, await upload(http, sim.base_url, lines))
    assert batch["status"] == "failed"
    assert batch["errors"]["data"][0]["code"] == "mixed_models"


async def test_list_pages_newest_first(sim: ProviderSimulator) -> None:
    base = sim.base_url
    async with aiohttp.ClientSession() as http:
        file_id = await upload(http, base, [chat_line("a", "hello")])
        ids = [(await create(http, base, file_id))["id"] for _ in range(3)]
        async with http.get(f"{base}/batches", params={"limit": "2"}) as response:
            first = await response.json()
        params = {"limit": "2", "after": first["last_id"]}
        async with http.get(f"{base}/batches", params=params) as response:
            second = await response.json()
    assert [b["id"] for b in first["data"]] == ids[::-1][:2] and first["has_more"]
    assert [b["id"] for b in second["data"]] == ids[:1] and not second["has_more"]


async def test_anthropic_results_only_after_the_end_and_cancel(sim: ProviderSimulator) -> None:
    clock = [1_900_000_000.0]
    sim.batches.settings = BatchSimSettings(processing_seconds=10, clock=lambda: clock[0])
    root = sim.base_url.removesuffix("/v1")
    params = {"model": "claude-haiku-4-5", "max_tokens": 10}
    requests = [
        {
            "custom_id": f"r{n}",
            "params": {**params, "messages": [{"role": "user", "content": f"q{n}"}]},
        }
        for n in range(4)
    ]
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{root}/v1/messages/batches", json={"requests": requests}
        ) as response:
            batch = await response.json()
        url = f"{root}/v1/messages/batches/{batch['id']}"
        async with http.get(url + "/results") as response:
            assert response.status == 400  # still processing
        clock[0] += 5  # half of the requests are done
        async with http.post(url + "/cancel") as response:
            assert (await response.json())["processing_status"] == "canceling"
        async with http.get(url) as response:
            ended = await response.json()
        async with http.get(url + "/results") as response:
            results = [json.loads(line) for line in (await response.text()).splitlines()]
        bad = {"requests": [{"custom_id": "has space", "params": requests[0]["params"]}]}
        async with http.post(f"{root}/v1/messages/batches", json=bad) as response:
            assert response.status == 400
    assert ended["processing_status"] == "ended"
    assert ended["request_counts"] == {
        "processing": 0,
        "succeeded": 2,
        "errored": 0,
        "canceled": 2,
        "expired": 0,
    }
    assert [r["result"]["type"] for r in results] == [
        "succeeded",
        "succeeded",
        "canceled",
        "canceled",
    ]


async def test_client_finds_an_openai_batch_by_its_chunk_id(sim: ProviderSimulator) -> None:
    target = await batch_target(
        LiteLLMStrategy("openai/gpt-4o-mini", api_base=sim.base_url, api_key=KEY)
    )
    client = batch_client(target)
    try:
        lines = [client.request_line("abl-x-0", target.body("hi"))]
        made = await client.submit("abl-x", lines)
        await client.submit("abl-y", lines)
        found = await client.find("abl-x", since=made.created_at or 0, total=1)
        missing = await client.find("abl-z", since=made.created_at or 0, total=1)
    finally:
        await client.close()
    assert found is not None and found.batch_id == made.batch_id and found.chunk_id == "abl-x"
    assert missing is None


async def test_a_bad_request_inside_a_batch_is_final(sim: ProviderSimulator) -> None:
    strat = LiteLLMStrategy("openai/gpt-4o-mini", api_base=sim.base_url, api_key=KEY)
    work = [LLMWorkItem("ok", strat, "fine"), LLMWorkItem("bad", strat, "[[sim:nonsense]]")]
    runner = ProviderBatchRunner(MemoryBatchJournal(), BatchApiConfig(poll_interval=0.01))
    found = {o.item_id: o async for o in runner.outcomes(work)}
    assert found["ok"].result.success
    assert found["bad"].result.error_category == "bad_request"  # the directive's 400: final
    assert not found["bad"].rescue


async def test_structured_output_is_validated_as_online(sim: ProviderSimulator) -> None:
    schema = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
    strat = LiteLLMStrategy(
        "anthropic/claude-haiku-4-5",
        api_base=sim.base_url.removesuffix("/v1"),
        api_key=KEY,
        response_schema=schema,
    )
    work = [
        LLMWorkItem("good", strat, "classify"),
        LLMWorkItem("wrong", strat, 'classify [[sim:reply={"other": 1}]]'),
    ]
    runner = ProviderBatchRunner(MemoryBatchJournal(), BatchApiConfig(poll_interval=0.01))
    found = {o.item_id: o async for o in runner.outcomes(work)}
    assert found["good"].result.output == {"label": "sim"}
    assert found["wrong"].rescue and found["wrong"].result.error_category == "validation_error"
    assert found["wrong"].result.token_usage["output_tokens"] > 0  # billed all the same


async def test_outcomes_cut_short_are_read_again_from_the_ended_batch(
    sim: ProviderSimulator,
) -> None:
    strat = LiteLLMStrategy("openai/gpt-4o-mini", api_base=sim.base_url, api_key=KEY)
    work = [LLMWorkItem(f"i{n}", strat, f"p{n}") for n in range(4)]
    journal = MemoryBatchJournal()
    config = BatchApiConfig(poll_interval=0.01, limits=BatchLimits(4, 10**7))
    stream = ProviderBatchRunner(journal, config).outcomes(work)
    first = [await anext(stream)]
    await stream.aclose()  # the consumer died after one result
    left = [w for w in work if w.item_id != first[0].item_id]
    again = [o async for o in ProviderBatchRunner(journal, config).outcomes(left)]

    assert sorted(o.item_id for o in first + again) == ["i0", "i1", "i2", "i3"]
    assert all(o.result.success for o in again)
    assert len(sim.batches.batch_ids()) == 1
    assert sim.batches.submissions() == {f"p{n}": 1 for n in range(4)}


async def test_sqlite_journal_keeps_an_item_in_one_chunk_across_reopen(tmp_path: Any) -> None:
    from async_batch_llm.batch_api import ChunkRecord
    from async_batch_llm.store.provider_batches import SqliteBatchJournal

    path = tmp_path / "j.db"
    journal = await SqliteBatchJournal.open(path, "run-a")
    chunk = ChunkRecord("abl-1", "openai", "m", 2, 10, planned_at=1.0)
    await journal.record_planned(chunk, ["a", "b"])
    await journal.record(chunk.replace(state="submitted", batch_id="batch_1", submitted_at=2.0))
    with pytest.raises(ValueError, match="already in a chunk"):
        await journal.record_planned(ChunkRecord("abl-2", "openai", "m", 1, 5, 3.0), ["b"])
    await journal.close()

    reopened = await SqliteBatchJournal.open(path, "run-a")
    other_run = await SqliteBatchJournal.open(path, "run-b")
    try:
        (saved,) = await reopened.chunks(open_only=True)
        assert (saved.state, saved.batch_id, saved.submitted_at) == ("submitted", "batch_1", 2.0)
        assert await reopened.assignments(["a", "b", "c"]) == {"a": "abl-1", "b": "abl-1"}
        assert await reopened.chunk_items("abl-1") == ["a", "b"]
        assert await other_run.chunks() == []  # scoped by run
        await reopened.release("abl-1", 4.0)
        assert await reopened.assignments(["a", "b"]) == {}
        assert await reopened.chunks(open_only=True) == []
    finally:
        await reopened.close()
        await other_run.close()
