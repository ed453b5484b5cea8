"""Durability of the batch API: a real worker process SIGKILLed while its batches are pending,
or while the provider holds the answer to a batch creation, then resumed from its SQLite
journal; the simulator's ledger shows one batch per chunk and every item submitted once."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from async_batch_llm import LiteLLMStrategy, LLMWorkItem
from async_batch_llm.batch_api import BatchApiConfig, ChunkRecord, ProviderBatchRunner
from async_batch_llm.providers.batch import BatchLimits
from async_batch_llm.simulator import ProviderSimulator
from async_batch_llm.simulator.batches import BatchSimSettings
from async_batch_llm.store.provider_batches import SqliteBatchJournal
from support import cli_env

WORKER = Path(__file__).with_name("batch_api_kill_worker.py")
ITEMS, CHUNK = 10, 4
CHUNKS = 3  # ten items in chunks of four
LINE_TIMEOUT = 60.0  # a safety net for a hung worker, not a speed bound
PROVIDERS = ("openai", "anthropic")


class FrozenClock:
    """The simulator's clock: batches make no progress until the test moves it."""

    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


async def start_worker(sim: ProviderSimulator, tmp: Path, provider: str) -> Any:
    root = sim.base_url.removesuffix("/v1")
    args = [str(tmp / "journal.db"), str(tmp / "out.jsonl"), root, provider]
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        *args,
        "--items",
        str(ITEMS),
        "--chunk",
        str(CHUNK),
        stdout=asyncio.subprocess.PIPE,
        env=cli_env(),
    )


async def read_until(proc: Any, wanted: str, count: int = 1) -> list[str]:
    lines: list[str] = []
    while sum(1 for line in lines if line.startswith(wanted)) < count:
        raw = await asyncio.wait_for(proc.stdout.readline(), LINE_TIMEOUT)
        assert raw, f"worker ended before {count} x {wanted}: {lines}"
        lines.append(raw.decode().strip())
    return lines


async def kill(proc: Any) -> None:
    proc.send_signal(signal.SIGKILL)
    assert await proc.wait() == -signal.SIGKILL


async def finish(proc: Any) -> None:
    await read_until(proc, "DONE")
    assert await asyncio.wait_for(proc.wait(), LINE_TIMEOUT) == 0


def delivered(tmp: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in (tmp / "out.jsonl").read_text().splitlines():
        item_id = json.loads(line)["item_id"]
        counts[item_id] = counts.get(item_id, 0) + 1
    return counts


def assert_exactly_once(sim: ProviderSimulator, tmp: Path) -> None:
    assert len(sim.batches.batch_ids()) == CHUNKS
    assert sim.batches.submissions() == {f"kill test item {n}": 1 for n in range(ITEMS)}
    assert delivered(tmp) == {f"item-{n:03d}": 1 for n in range(ITEMS)}
    assert sim.ledger == []  # nothing went online


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_killed_while_batches_are_pending_resumes_by_polling_them(
    provider: str, tmp_path: Path
) -> None:
    clock = FrozenClock()
    settings = BatchSimSettings(processing_seconds=60, clock=clock)
    async with ProviderSimulator("fast", batch_settings=settings) as sim:
        first = await start_worker(sim, tmp_path, provider)
        lines = await read_until(first, "SUBMITTED", CHUNKS)
        await kill(first)
        assert len(sim.batches.batch_ids()) == CHUNKS
        assert not (tmp_path / "out.jsonl").read_text()

        clock.now += 120  # the provider finishes every batch meanwhile
        second = await start_worker(sim, tmp_path, provider)
        await finish(second)

        assert_exactly_once(sim, tmp_path)
        submitted = {line.split()[2] for line in lines if line.startswith("SUBMITTED")}
        assert submitted == set(sim.batches.batch_ids())


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_killed_before_the_batch_id_came_back_finds_the_batch_at_the_provider(
    provider: str, tmp_path: Path
) -> None:
    # The provider creates the first batch, then holds its answer: the worker dies not
    # knowing the batch id. The resume must find that batch, not create a second one.
    settings = BatchSimSettings(create_delay=30)
    async with ProviderSimulator("fast", batch_settings=settings) as sim:
        first = await start_worker(sim, tmp_path, provider)
        while not sim.batches.batch_ids():
            await asyncio.sleep(0.01)
        await kill(first)
        assert len(sim.batches.batch_ids()) == 1

        settings.create_delay = 0
        second = await start_worker(sim, tmp_path, provider)
        await finish(second)

        assert_exactly_once(sim, tmp_path)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_chunk_planned_but_never_sent_is_released_and_planned_again(
    provider: str, tmp_path: Path
) -> None:
    # As if killed right after the chunk's commit: journaled, nothing at the provider.
    journal = await SqliteBatchJournal.open(tmp_path / "journal.db", "run")
    planned = ChunkRecord("abl-lost", provider, "m", 2, 100, planned_at=1_900_000_000.0)
    await journal.record_planned(planned, ["item-000", "item-001"])
    async with ProviderSimulator("fast", batch_settings=BatchSimSettings()) as sim:
        if provider == "anthropic":
            strat = LiteLLMStrategy(
                "anthropic/claude-haiku-4-5",
                api_base=sim.base_url.removesuffix("/v1"),
                api_key="sk-test-0123456789",
            )
        else:
            strat = LiteLLMStrategy(
                "openai/gpt-4o-mini", api_base=sim.base_url, api_key="sk-test-0123456789"
            )
        work = [LLMWorkItem(f"item-{n:03d}", strat, f"p{n}") for n in range(3)]
        config = BatchApiConfig(poll_interval=0.01, limits=BatchLimits(4, 10**7))
        runner = ProviderBatchRunner(journal, config)
        found = [o.item_id async for o in runner.outcomes(work)]
        chunks = await journal.chunks()
    await journal.close()

    assert sorted(found) == ["item-000", "item-001", "item-002"]
    assert len(sim.batches.batch_ids()) == 1
    assert sim.batches.submissions() == {"p0": 1, "p1": 1, "p2": 1}
    assert [c.state for c in chunks] == ["released", "ended"]
    assert chunks[1].request_count == 3
