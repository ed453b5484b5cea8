"""Engine overhead: the engine against bare asyncio worker pools, side by side in one process.

A strategy that returns at once makes the engine's own per-item cost the whole cost.
Baselines: a bare ``asyncio.Queue`` worker pool (the floor any framework pays) and
``Semaphore`` + ``gather``. Prints items/s and the engine/bare ratio, then peak RSS of a
1,000,000-item streaming run.

    python benchmarks/engine_overhead.py [--items 100000] [--stream-items 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import time
from typing import Any

from async_batch_llm import (
    BaseObserver,
    LLMCallStrategy,
    LLMWorkItem,
    MetricsObserver,
    ParallelBatchProcessor,
    ProcessingEvent,
    ProcessorConfig,
)

USAGE = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15, "cached_input_tokens": 0}


class InstantStrategy(LLMCallStrategy[str]):
    """Returns at once: no I/O, so only the framework's cost is measured."""

    async def execute(self, prompt: str, attempt: int, timeout: float, state: Any = None):
        return prompt, USAGE


async def instant_call(prompt: str) -> tuple[str, dict[str, int]]:
    """The baselines' equivalent of one call."""
    return prompt, USAGE


class CountingObserver(BaseObserver):
    """A typical user observer: an ``async def on_event`` counting completed items."""

    def __init__(self) -> None:
        self.completed = 0

    async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        if event is ProcessingEvent.ITEM_COMPLETED:
            self.completed += 1


class SyncCountingObserver(CountingObserver):
    """The same, with the synchronous fast path the built-in observers use (the run
    store's writer and the dashboard's event buffer are of this kind)."""

    async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        self.on_event_sync(event, data)

    def on_event_sync(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        if event is ProcessingEvent.ITEM_COMPLETED:
            self.completed += 1


async def bare_queue_pool(n: int, workers: int) -> int:
    """N workers pulling from one asyncio.Queue: the floor."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(f"item-{i}")
    for _ in range(workers):
        queue.put_nowait(None)
    results: list[tuple[str, dict[str, int]]] = []

    async def worker() -> None:
        while (prompt := await queue.get()) is not None:
            results.append(await instant_call(prompt))

    await asyncio.gather(*(worker() for _ in range(workers)))
    return len(results)


async def semaphore_gather(n: int, workers: int) -> int:
    """One task per item, bounded by a semaphore."""
    semaphore = asyncio.Semaphore(workers)

    async def one(prompt: str) -> tuple[str, dict[str, int]]:
        async with semaphore:
            return await instant_call(prompt)

    return len(await asyncio.gather(*(one(f"item-{i}") for i in range(n))))


async def engine(n: int, workers: int, counter: CountingObserver | None = None) -> int:
    """The engine in batch mode with a MetricsObserver and one user (async) observer."""
    strategy = InstantStrategy()
    counter = counter if counter is not None else CountingObserver()
    processor: ParallelBatchProcessor[Any, str, Any] = ParallelBatchProcessor(
        config=ProcessorConfig(max_workers=workers, timeout_per_item=30.0),
        observers=[MetricsObserver(), counter],
    )
    await processor.add_many(LLMWorkItem(f"item-{i}", strategy, f"item-{i}") for i in range(n))
    result = await processor.process_all()
    assert counter.completed == n == result.succeeded
    return result.succeeded


async def engine_sync_observers(n: int, workers: int) -> int:
    """The engine with a MetricsObserver and one observer on the synchronous fast path."""
    return await engine(n, workers, SyncCountingObserver())


async def engine_streaming(n: int, workers: int) -> int:
    """Streaming mode over generated items, keeping no results: memory must stay flat."""
    strategy = InstantStrategy()
    processor: ParallelBatchProcessor[Any, str, Any] = ParallelBatchProcessor(
        config=ProcessorConfig(max_workers=workers, max_queue_size=10_000),
        observers=[MetricsObserver()],
    )
    await processor.start(collect_results=False)
    for i in range(n):
        await processor.add_work(LLMWorkItem(f"item-{i}", strategy, f"item-{i}"))
    await processor.finish()
    await processor.join()
    return (await processor.get_stats())["succeeded"]


def timed(fn: Any, n: int, workers: int) -> float:
    """Items per second of one run (a fresh event loop each time)."""
    gc.collect()
    started = time.perf_counter()
    done = asyncio.run(fn(n, workers))
    elapsed = time.perf_counter() - started
    assert done == n, (fn.__name__, done, n)
    return n / elapsed


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--stream-items", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs per row")
    args = parser.parse_args()

    # Streaming first, in a fresh process, so its peak RSS is its own.
    rss_before = peak_rss_mb()
    rate = timed(engine_streaming, args.stream_items, 100)
    print(
        f"streaming {args.stream_items:,} items, 100 workers: {rate:,.0f}/s, "
        f"peak RSS {peak_rss_mb():.0f} MB (before: {rss_before:.0f} MB)"
    )

    print(f"{args.items:,} items, best of {args.repeat} (runs interleaved)")
    print("engine:  MetricsObserver + a user observer with an async on_event")
    print("engine*: MetricsObserver + an observer on the sync fast path (like the store's)")
    header = ("workers", "bare queue", "sem+gather", "engine", "engine/bare", "engine*", "*/bare")
    print("".join(f"{h:>13}" for h in header))
    runs = (bare_queue_pool, semaphore_gather, engine, engine_sync_observers)
    for workers in (10, 500):
        rates = dict.fromkeys((fn.__name__ for fn in runs), 0.0)
        for _ in range(args.repeat):
            for fn in runs:
                rates[fn.__name__] = max(rates[fn.__name__], timed(fn, args.items, workers))
        bare, sem = rates["bare_queue_pool"], rates["semaphore_gather"]
        eng, eng_sync = rates["engine"], rates["engine_sync_observers"]
        cells = (
            f"{workers}",
            f"{bare:,.0f}/s",
            f"{sem:,.0f}/s",
            f"{eng:,.0f}/s",
            f"{eng / bare:.3f}x",
            f"{eng_sync:,.0f}/s",
            f"{eng_sync / bare:.3f}x",
        )
        print("".join(f"{c:>13}" for c in cells))


if __name__ == "__main__":
    main()
