"""Streaming mode: start/add/finish/results, backpressure, bounded memory, live controls."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from async_batch_llm import (
    LLMCallStrategy,
    LLMWorkItem,
    ParallelBatchProcessor,
    ProcessingEvent,
    ProcessorConfig,
    RetryState,
    TokenUsage,
    WorkItemResult,
)
from async_batch_llm.testing import FakeStrategy

EV = ProcessingEvent
Config = Callable[..., ProcessorConfig]
GUARD = 20  # seconds: a hang guard only, never an assertion about speed


def usage(inp: int = 1, out: int = 1) -> TokenUsage:
    return {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}


async def settle(rounds: int = 50) -> None:
    """Let every ready task run for a while (no wall-clock wait)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class Gated(LLMCallStrategy[str]):
    """Each call waits for ``release``; tracks concurrent and peak calls."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.active = 0
        self.peak = 0
        self.started: list[str] = []

    def reset_peak(self) -> None:
        self.peak = self.active

    async def execute(
        self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
    ) -> tuple[str, TokenUsage]:
        self.started.append(prompt)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await self.release.wait()
        finally:
            self.active -= 1
        return f"out:{prompt}", usage()


class Lean(LLMCallStrategy[str]):
    """Retains nothing between calls."""

    async def execute(
        self, prompt: str, attempt: int, timeout: float, state: RetryState | None = None
    ) -> tuple[str, TokenUsage]:
        return prompt + "!", usage()


async def wait_until(predicate: Callable[[], bool], rounds: int = 2000) -> None:
    for _ in range(rounds):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


# --------------------------------------------------------------------------- basics


async def test_start_add_finish_and_iterate_results(fast_config: Config) -> None:
    strategy = FakeStrategy(script={"p3": ["error"]})
    processor = ParallelBatchProcessor(config=fast_config(max_workers=3))
    await processor.start()

    async def produce() -> None:
        for n in range(10):
            await processor.add_work(LLMWorkItem(f"i{n}", strategy, f"p{n}"))
            await asyncio.sleep(0)
        await processor.finish()

    producer = asyncio.create_task(produce())
    got = [r async for r in processor.results()]
    await producer
    await asyncio.wait_for(processor.join(), GUARD)
    assert sorted(r.item_id for r in got) == sorted(f"i{n}" for n in range(10))
    assert all(r.success for r in got)
    stats = await processor.get_stats()
    assert stats["processed"] == stats["total"] == 10


async def test_add_work_while_running_after_results_arrive(fast_config: Config) -> None:
    """Live additions: a failed item can be re-added while the run goes on."""
    strategy = FakeStrategy(script={"first": ["bad_request"]})
    processor = ParallelBatchProcessor(config=fast_config(max_workers=2))
    await processor.start()
    await processor.add_work(LLMWorkItem("a", strategy, "first"))
    seen: list[tuple[str, bool]] = []
    async for result in processor.results():
        seen.append((result.item_id, result.success))
        if not result.success:
            await processor.add_work(LLMWorkItem(result.item_id, strategy, "first"))
        else:
            await processor.finish()
    assert seen == [("a", False), ("a", True)]


async def test_wait_idle_returns_once_every_added_item_is_done(fast_config: Config) -> None:
    """wait_idle: nothing to wait for before any work; after additions, it returns only when
    each has its result, and the processor still takes more afterwards."""
    gate = asyncio.Event()

    class Gated(FakeStrategy):
        async def execute(
            self, prompt: str, attempt: int, timeout: float, state: Any = None
        ) -> Any:
            await gate.wait()
            return await super().execute(prompt, attempt, timeout, state)

    processor = ParallelBatchProcessor(config=fast_config(max_workers=2))
    await processor.start(collect_results=False)
    await processor.wait_idle()  # nothing added: idle at once
    await processor.add_work(LLMWorkItem("a", Gated(), "x"))
    waiter = asyncio.ensure_future(processor.wait_idle())
    await asyncio.sleep(0)
    assert not waiter.done()  # "a" is under way
    gate.set()
    await waiter
    assert (await processor.get_stats())["processed"] == 1
    await processor.add_work(LLMWorkItem("b", Gated(), "x"))
    await processor.wait_idle()
    assert (await processor.get_stats())["processed"] == 2
    await processor.finish()
    await processor.join()


async def test_streaming_rules(fast_config: Config) -> None:
    processor = ParallelBatchProcessor(config=fast_config())
    await processor.start()
    with pytest.raises(RuntimeError):
        await processor.start()
    with pytest.raises(RuntimeError):
        await processor.process_all()
    await processor.finish()
    with pytest.raises(RuntimeError):
        await processor.add_work(LLMWorkItem("late", FakeStrategy(), "late"))
    assert [r async for r in processor.results()] == []
    await asyncio.wait_for(processor.join(), GUARD)


@pytest.mark.parametrize("kind", ["list", "generator", "async generator"])
async def test_process_stream(fast_config: Config, kind: str) -> None:
    strategy = FakeStrategy()
    items = [LLMWorkItem(f"i{n}", strategy, f"p{n}") for n in range(25)]

    async def agen() -> AsyncIterator[LLMWorkItem[Any, Any, Any]]:
        for item in items:
            await asyncio.sleep(0)
            yield item

    source: Any = {"list": items, "generator": iter(items), "async generator": agen()}[kind]
    processor = ParallelBatchProcessor(config=fast_config(max_workers=4, max_queue_size=3))

    async def collect() -> list[WorkItemResult[Any, Any]]:
        return [r async for r in processor.process_stream(source)]

    results = await asyncio.wait_for(collect(), GUARD)
    assert sorted(r.item_id for r in results) == sorted(i.item_id for i in items)
    assert all(r.output == f"fake:{r.item_id.replace('i', 'p')}" for r in results)


async def test_streaming_emits_events_and_completes(fast_config: Config, recorder: Any) -> None:
    processor = ParallelBatchProcessor(config=fast_config(), observers=[recorder])
    await processor.start(collect_results=False)
    for n in range(3):
        await processor.add_work(LLMWorkItem(f"i{n}", FakeStrategy(), "p"))
    await processor.finish()
    await asyncio.wait_for(processor.join(), GUARD)
    assert len(recorder.of(EV.ITEM_COMPLETED)) == 3
    (done,) = recorder.of(EV.BATCH_COMPLETED)
    assert done["processed"] == 3 and done["total"] == 3


# --------------------------------------------------------------------------- backpressure


async def test_bounded_queue_blocks_add_work_while_full(fast_config: Config) -> None:
    strategy = Gated()
    processor = ParallelBatchProcessor(config=fast_config(max_workers=1, max_queue_size=2))
    await processor.start(collect_results=False)
    await processor.add_work(LLMWorkItem("i0", strategy, "p0"))
    await wait_until(lambda: strategy.active == 1)  # the worker holds i0
    await processor.add_work(LLMWorkItem("i1", strategy, "p1"))
    await processor.add_work(LLMWorkItem("i2", strategy, "p2"))  # queue now full

    blocked = asyncio.create_task(processor.add_work(LLMWorkItem("i3", strategy, "p3")))
    await settle()
    assert not blocked.done(), "add_work returned although the queue was full"

    strategy.release.set()
    await asyncio.wait_for(blocked, GUARD)
    await processor.finish()
    await asyncio.wait_for(processor.join(), GUARD)
    stats = await processor.get_stats()
    assert stats["processed"] == 4 and stats["succeeded"] == 4


async def test_bounded_queue_and_buffer_never_deadlock(fast_config: Config) -> None:
    processor = ParallelBatchProcessor(config=fast_config(max_workers=3, max_queue_size=1))
    await processor.start(max_buffered_results=2)
    strategy = FakeStrategy()

    async def produce() -> None:
        for n in range(300):
            await processor.add_work(LLMWorkItem(f"i{n}", strategy, f"p{n % 7}"))
        await processor.finish()

    async def consume() -> int:
        count = 0
        async for _ in processor.results():
            count += 1
            if count % 10 == 0:
                await asyncio.sleep(0.001)  # a slow consumer
        return count

    producer = asyncio.create_task(produce())
    count = await asyncio.wait_for(consume(), GUARD)
    await asyncio.wait_for(producer, GUARD)
    await asyncio.wait_for(processor.join(), GUARD)
    assert count == 300


async def test_results_buffer_holds_workers_back(fast_config: Config) -> None:
    processor = ParallelBatchProcessor(config=fast_config(max_workers=4))
    await processor.start(max_buffered_results=3)
    strategy = FakeStrategy()
    for n in range(20):
        await processor.add_work(LLMWorkItem(f"i{n}", strategy, "p"))
    await settle(200)
    # Nobody reads results: at most the buffer plus one result per blocked worker is done.
    assert len(strategy.calls) <= 3 + 4
    await processor.finish()
    got = [r async for r in processor.results()]
    assert len(got) == 20


# --------------------------------------------------------------------------- memory


def live_results() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj) is WorkItemResult)


async def test_collect_results_false_keeps_nothing(fast_config: Config, recorder: Any) -> None:
    before = live_results()  # results other tests' tracebacks may still hold
    processor = ParallelBatchProcessor(config=fast_config(max_workers=4), observers=[recorder])
    await processor.start(collect_results=False)
    strategy = Lean()
    for n in range(2000):
        await processor.add_work(LLMWorkItem(f"i{n}", strategy, "p"))
    await processor.finish()
    await asyncio.wait_for(processor.join(), GUARD)
    with pytest.raises(RuntimeError):
        async for _ in processor.results():
            pass
    assert len(recorder.of(EV.ITEM_COMPLETED)) == 2000
    recorder.records.clear()  # the observer's payloads hold the results: drop them
    assert live_results() - before < 10
    assert (await processor.get_stats())["processed"] == 2000


def retained_results_cost(count: int) -> int:
    """Bytes that ``count`` retained results like the engine's take (item id, output, usage)."""
    tracemalloc.start()
    try:
        kept = [
            WorkItemResult(f"item-{n}", True, f"p{n}!", None, None, usage()) for n in range(count)
        ]
        size = tracemalloc.get_traced_memory()[0]
        del kept
    finally:
        tracemalloc.stop()
    return size


async def test_100k_items_stream_in_bounded_memory(fast_config: Config) -> None:
    """100,000 items through a streaming run with bounded memory.

    Tracing every allocation of the whole run costs ~10x its time, so the allocations of
    the last TRACED items are traced: if results (or anything per item) were retained,
    those items alone would push the traced peak to what TRACED retained results cost.
    """
    total, traced = 100_000, 10_000
    bound = retained_results_cost(traced) // 10
    assert bound > 200_000  # the bound stays meaningful

    processor = ParallelBatchProcessor(config=fast_config(max_workers=8, max_queue_size=100))
    strategy = Lean()
    await processor.start(collect_results=False)
    try:
        for n in range(total):
            if n == total - traced:
                tracemalloc.start()
            await processor.add_work(LLMWorkItem(f"item-{n}", strategy, f"p{n}"))
        await processor.finish()
        await asyncio.wait_for(processor.join(), 60)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    stats = await processor.get_stats()
    assert stats["processed"] == total and stats["succeeded"] == total
    assert peak < bound, f"traced peak {peak} B over the last {traced} items (bound {bound} B)"


# --------------------------------------------------------------------------- live controls


async def test_pause_stops_and_resume_restarts_dispatch(fast_config: Config) -> None:
    strategy = FakeStrategy()
    processor = ParallelBatchProcessor(config=fast_config(max_workers=2))
    await processor.start(collect_results=False)
    processor.pause()
    assert processor.paused
    for n in range(5):
        await processor.add_work(LLMWorkItem(f"i{n}", strategy, f"p{n}"))
    await settle(100)
    assert strategy.calls == []
    stats = await processor.get_stats()
    assert stats["paused"] is True and stats["processed"] == 0

    processor.resume()
    assert not processor.paused
    await wait_until(lambda: len(strategy.calls) == 5)
    processor.pause()
    await processor.add_work(LLMWorkItem("late", strategy, "late"))
    await settle(100)
    assert len(strategy.calls) == 5
    processor.resume()
    await processor.finish()
    await asyncio.wait_for(processor.join(), GUARD)
    assert (await processor.get_stats())["processed"] == 6


async def test_pause_lets_calls_under_way_finish(fast_config: Config) -> None:
    strategy = Gated()
    processor = ParallelBatchProcessor(config=fast_config(max_workers=1))
    await processor.start(collect_results=False)
    for n in range(3):
        await processor.add_work(LLMWorkItem(f"i{n}", strategy, f"p{n}"))
    await wait_until(lambda: strategy.active == 1)
    processor.pause()
    strategy.release.set()
    await wait_until(lambda: strategy.active == 0)
    await settle(100)
    assert strategy.started == ["p0"]
    assert (await processor.get_stats())["processed"] == 1
    processor.resume()
    await processor.finish()
    await asyncio.wait_for(processor.join(), GUARD)
    assert strategy.started == ["p0", "p1", "p2"]


async def test_set_max_workers_raises_concurrency(fast_config: Config) -> None:
    strategy = Gated()
    processor = ParallelBatchProcessor(config=fast_config(max_workers=1))
    await processor.start(collect_results=False)
    for n in range(8):
        await processor.add_work(LLMWorkItem(f"i{n}", strategy, f"p{n}"))
    await settle()
    assert strategy.active == 1
    processor.set_max_workers(4)
    await wait_until(lambda: strategy.active == 4)
    await settle()
    assert strategy.peak == 4
    strategy.release.set()
    await processor.finish()
    await asyncio.wait_for(processor.join(), GUARD)
    assert (await processor.get_stats())["processed"] == 8


async def test_set_max_workers_lowers_concurrency_of_busy_workers(fast_config: Config) -> None:
    strategy = Gated()
    processor = ParallelBatchProcessor(config=fast_config(max_workers=4))
    await processor.start(collect_results=False)
    for n in range(4):
        await processor.add_work(LLMWorkItem(f"a{n}", strategy, f"a{n}"))
    await wait_until(lambda: strategy.active == 4)
    processor.set_max_workers(2)
    strategy.release.set()
    await wait_until(lambda: strategy.active == 0)
    strategy.release.clear()
    strategy.reset_peak()
    for n in range(6):
        await processor.add_work(LLMWorkItem(f"b{n}", strategy, f"b{n}"))
    await settle(200)
    assert strategy.active == 2
    assert strategy.peak == 2
    strategy.release.set()
    await processor.finish()
    await asyncio.wait_for(processor.join(), GUARD)
    assert (await processor.get_stats())["processed"] == 10


async def test_set_max_workers_lowers_concurrency_of_idle_workers(fast_config: Config) -> None:
    strategy = Gated()
    processor = ParallelBatchProcessor(config=fast_config(max_workers=4))
    await processor.start(collect_results=False)
    await settle()  # four idle workers wait for input
    processor.set_max_workers(1)
    for n in range(4):
        await processor.add_work(LLMWorkItem(f"i{n}", strategy, f"p{n}"))
    await settle(200)
    assert strategy.peak == 1, f"{strategy.peak} calls ran at once after set_max_workers(1)"
    strategy.release.set()
    await processor.finish()
    await asyncio.wait_for(processor.join(), GUARD)
    assert (await processor.get_stats())["processed"] == 4


async def test_cancel_stops_workers_and_ends_results(fast_config: Config) -> None:
    strategy = Gated()
    processor = ParallelBatchProcessor(config=fast_config(max_workers=2))
    await processor.start()
    for n in range(5):
        await processor.add_work(LLMWorkItem(f"i{n}", strategy, f"p{n}"))
    await wait_until(lambda: strategy.active == 2)
    await asyncio.wait_for(processor.cancel(), GUARD)
    assert strategy.active == 0  # the calls under way were cancelled
    assert (await processor.get_stats())["workers"] == 0
    got = await asyncio.wait_for(_drain(processor), GUARD)
    assert got == []
    with pytest.raises(RuntimeError):
        await processor.add_work(LLMWorkItem("late", strategy, "late"))


async def test_cancel_with_a_full_results_buffer(fast_config: Config) -> None:
    processor = ParallelBatchProcessor(config=fast_config(max_workers=2))
    await processor.start(max_buffered_results=1)
    for n in range(5):
        await processor.add_work(LLMWorkItem(f"i{n}", FakeStrategy(), f"p{n}"))
    await settle(100)  # the buffer fills up; nobody reads it
    await asyncio.wait_for(processor.cancel(), GUARD)
    got = await asyncio.wait_for(_drain(processor), GUARD)
    assert 1 <= len(got) <= 5


async def _drain(processor: ParallelBatchProcessor[Any, Any, Any]) -> list[Any]:
    return [r async for r in processor.results()]


async def test_shutdown_cancels_and_cleans_up(fast_config: Config) -> None:
    strategy = FakeStrategy(latency=10.0)
    processor = ParallelBatchProcessor(config=fast_config(max_workers=2))
    await processor.start(collect_results=False)
    await processor.add_work(LLMWorkItem("i0", strategy, "p"))
    await wait_until(lambda: len(strategy.calls) == 1)
    await asyncio.wait_for(processor.shutdown(), GUARD)
    assert strategy.prepare_count == 1
    assert strategy.cleanup_count == 1
    assert (await processor.get_stats())["workers"] == 0
