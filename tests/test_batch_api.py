"""The provider batch APIs end to end: real HTTP to the simulator's OpenAI and Anthropic batch
endpoints, tiny chunks, short polls; results, rescue online, expiry, deadlines and cost."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from async_batch_llm import LiteLLMStrategy, LLMWorkItem, ParallelBatchProcessor, ProcessorConfig
from async_batch_llm.base import WorkItemResult
from async_batch_llm.batch_api import (
    BatchApiConfig,
    BatchItemOutcome,
    ChunkRecord,
    MemoryBatchJournal,
    ProviderBatchRunner,
    rescue_online,
)
from async_batch_llm.providers.batch import BatchLimits
from async_batch_llm.providers.pricing import model_price
from async_batch_llm.simulator import ProviderSimulator
from async_batch_llm.simulator.batches import BatchSimSettings

KEY = "sk-test-batch-0123456789"
PROVIDERS = ("openai", "anthropic")


class ManualClock:
    """A clock the test moves; ``sleep`` moves it instead of waiting (no real waits)."""

    def __init__(self, start: float = 1_900_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def sim() -> AsyncIterator[ProviderSimulator]:
    async with ProviderSimulator("fast", batch_settings=BatchSimSettings()) as simulator:
        yield simulator


def strategy(provider: str, sim: ProviderSimulator, **kwargs: Any) -> LiteLLMStrategy:
    if provider == "anthropic":
        base = sim.base_url.removesuffix("/v1")
        return LiteLLMStrategy("anthropic/claude-haiku-4-5", api_base=base, api_key=KEY, **kwargs)
    return LiteLLMStrategy("openai/gpt-4o-mini", api_base=sim.base_url, api_key=KEY, **kwargs)


def items(strat: LiteLLMStrategy, prompts: list[str]) -> list[LLMWorkItem[Any, Any, Any]]:
    return [LLMWorkItem(f"item-{n:03d}", strat, prompt) for n, prompt in enumerate(prompts)]


def config(clock: ManualClock | None = None, **kwargs: Any) -> BatchApiConfig:
    kwargs.setdefault("limits", BatchLimits(4, 1_000_000))
    kwargs.setdefault("poll_interval", 0.01)
    kwargs.setdefault("max_poll_interval", kwargs["poll_interval"] * 5)
    if clock is not None:
        kwargs.update(clock=clock, sleep=clock.sleep)
    return BatchApiConfig(**kwargs)


async def collect(runner: ProviderBatchRunner, work: list[Any]) -> dict[str, BatchItemOutcome]:
    found: dict[str, BatchItemOutcome] = {}
    async for outcome in runner.outcomes(work):
        assert outcome.item_id not in found, "an item's outcome was delivered twice"
        found[outcome.item_id] = outcome
    return found


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_success_one_batch_per_chunk_every_item_submitted_once(
    provider: str, sim: ProviderSimulator
) -> None:
    work = items(strategy(provider, sim), [f"classify thing {n}" for n in range(10)])
    statuses: list[ChunkRecord] = []
    runner = ProviderBatchRunner(MemoryBatchJournal(), config(), on_status=statuses.append)

    found = await collect(runner, work)

    assert sorted(found) == [w.item_id for w in work]
    assert all(o.result.success and not o.rescue for o in found.values())
    assert found["item-003"].result.output == "sim reply to classify thing 3"
    assert len(sim.batches.batch_ids(provider)) == 3  # 10 items in chunks of 4
    assert sim.batches.submissions() == {w.prompt: 1 for w in work}
    assert sim.ledger == []  # nothing went online
    usage = found["item-000"].result.token_usage
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    ended = [s for s in statuses if s.state == "ended"]
    assert len(ended) == 3 and {s.batch_id for s in ended} == set(sim.batches.batch_ids())
    assert sum(s.succeeded for s in ended) == 10


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_cost_is_half_the_online_price(provider: str, sim: ProviderSimulator) -> None:
    work = items(strategy(provider, sim), ["price me " * 20])
    found = await collect(ProviderBatchRunner(MemoryBatchJournal(), config()), work)

    result = found["item-000"].result
    usage = result.token_usage
    name = "claude-haiku-4-5" if provider == "anthropic" else "gpt-4o-mini"
    online = model_price(provider, name)
    assert online is not None and result.cost is not None
    expected = online.cost(usage["input_tokens"], usage["output_tokens"]) / 2
    assert result.cost == pytest.approx(expected, rel=1e-9)
    assert result.cost > 0


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_partial_failure_is_rescued_online_and_a_400_is_final(
    provider: str, sim: ProviderSimulator
) -> None:
    prompts = [
        "fine 0",
        "flaky [[sim:503 x1]]",
        "bad [[sim:400]]",
        "fine 3",
        "limited [[sim:429 x1]]",
    ]
    work = items(strategy(provider, sim), prompts)
    by_id = {w.item_id: w for w in work}
    runner = ProviderBatchRunner(MemoryBatchJournal(), config(rescue="online"))
    processor: ParallelBatchProcessor[Any, Any, Any] = ParallelBatchProcessor(
        config=ProcessorConfig(max_workers=2, timeout_per_item=5)
    )
    results: dict[str, WorkItemResult[Any, Any]] = {}
    async with processor:
        async for result in rescue_online(runner.outcomes(work), by_id, processor):
            results[result.item_id] = result

    assert sorted(results) == sorted(by_id)
    assert [i for i, r in sorted(results.items()) if not r.success] == ["item-002"]
    assert results["item-002"].error_category == "bad_request"
    rescued = results["item-001"]
    assert rescued.attempts == 2 and rescued.metadata is not None
    assert rescued.metadata["batch"]["rescued"] is True
    assert rescued.metadata["batch"]["error_category"] in ("overloaded", "server_error")
    # Online calls only for the rescues (the 503 and the 429), one each.
    online = sim.requests_by_prompt()
    assert {p: o for p, o in online.items()} == {
        "flaky [[sim:503 x1]]": ["ok"],
        "limited [[sim:429 x1]]": ["ok"],
    }
    assert sim.batches.submissions() == {p: 1 for p in prompts}


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_rescue_none_keeps_the_batch_failure(provider: str, sim: ProviderSimulator) -> None:
    work = items(strategy(provider, sim), ["ok", "flaky [[sim:503 x1]]"])
    runner = ProviderBatchRunner(MemoryBatchJournal(), config())
    processor: ParallelBatchProcessor[Any, Any, Any] = ParallelBatchProcessor(
        config=ProcessorConfig(max_workers=1)
    )
    async with processor:
        results = {
            r.item_id: r
            async for r in rescue_online(
                runner.outcomes(work), {w.item_id: w for w in work}, processor, mode="none"
            )
        }
    assert results["item-001"].success is False
    assert sim.ledger == []


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_expired_batch_leaves_the_rest_to_rescue(
    provider: str, sim: ProviderSimulator
) -> None:
    clock = ManualClock()
    # Four requests over 100 s, but the provider gives up after 60 s: two done, two expired.
    sim.batches.settings = BatchSimSettings(processing_seconds=100, window_seconds=60, clock=clock)
    work = items(strategy(provider, sim), [f"slow {n}" for n in range(4)])
    runner = ProviderBatchRunner(MemoryBatchJournal(), config(clock, poll_interval=7))

    found = await collect(runner, work)

    done = sorted(i for i, o in found.items() if o.result.success)
    expired = sorted(i for i, o in found.items() if o.rescue)
    assert done == ["item-000", "item-001"]
    assert expired == ["item-002", "item-003"]
    assert {found[i].result.error_category for i in expired} == {"batch_expired"}
    assert sim.ledger == []


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_deadline_cancels_the_batch_and_rescues_the_rest_online(
    provider: str, sim: ProviderSimulator
) -> None:
    clock = ManualClock()
    sim.batches.settings = BatchSimSettings(processing_seconds=100, clock=clock)
    work = items(strategy(provider, sim), [f"wait {n}" for n in range(4)])
    statuses: list[ChunkRecord] = []
    runner = ProviderBatchRunner(
        MemoryBatchJournal(),
        config(clock, poll_interval=10, batch_deadline=30),
        on_status=statuses.append,
    )
    processor: ParallelBatchProcessor[Any, Any, Any] = ParallelBatchProcessor(
        config=ProcessorConfig(max_workers=2)
    )
    async with processor:
        results = {
            r.item_id: r
            async for r in rescue_online(
                runner.outcomes(work), {w.item_id: w for w in work}, processor
            )
        }

    assert all(r.success for r in results.values())
    batch_served = sorted(i for i, r in results.items() if not r.metadata["batch"].get("rescued"))
    assert batch_served == ["item-000"]  # 30 s of 100: one of four requests done
    assert sorted(sim.requests_by_prompt()) == ["wait 1", "wait 2", "wait 3"]
    cancel = [s for s in statuses if s.cancel_requested_at is not None]
    assert cancel and cancel[0].cancel_requested_at == pytest.approx(cancel[0].deadline_at)
    assert statuses[-1].state == "ended"


async def test_a_strategy_without_a_batch_api_is_refused(sim: ProviderSimulator) -> None:
    strat = LiteLLMStrategy("deepseek/deepseek-chat", api_base=sim.base_url, api_key=KEY)
    runner = ProviderBatchRunner(MemoryBatchJournal(), config())
    with pytest.raises(ValueError, match="no batch API for provider 'deepseek'"):
        await collect(runner, items(strat, ["x"]))
