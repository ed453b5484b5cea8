"""Run store overhead: the engine with and without the store's writer, side by side.

A dry run (``ProcessorConfig(dry_run=True)``) answers every item at once, so the engine's
own cost is the whole cost and the writer's share shows in full. Two trivial strategies:
``instant`` returns without ever awaiting (the engine then never yields to the event
loop, so the writer can only start once the batch is over), ``yielding`` awaits once per
call as any real I/O does (the writer flushes while the run goes on). Prints items/s
without and with the store observer attached (same process, alternating, best of
``--rounds``; "with" is timed until every result is committed) and their ratio; then the
ingest time and peak RSS of ``--ingest-items`` generated items into a fresh store
(measured in a child process, so the engine runs do not count).

    python benchmarks/store_overhead.py [--items 100000] [--workers 50] [--ingest-items 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The engine benchmark's strategy: it answers at once, never awaiting (a dry run answers
# with the base class's mock, ``LLMCallStrategy.dry_run``).
from engine_overhead import InstantStrategy  # a sibling script: its folder is on sys.path

from async_batch_llm import (
    BaseObserver,
    LLMWorkItem,
    ParallelBatchProcessor,
    ProcessingEvent,
    ProcessorConfig,
)
from async_batch_llm.store import RunStore


class YieldingStrategy(InstantStrategy):
    """Answers after yielding to the event loop once, as any call that does I/O would."""

    async def dry_run(self, prompt: str) -> tuple[Any, Any]:
        await asyncio.sleep(0)
        return await super().dry_run(prompt)


STRATEGIES: dict[str, type[InstantStrategy]] = {
    "instant": InstantStrategy,
    "yielding": YieldingStrategy,
}


class NullObserver(BaseObserver):
    """Takes every event on the synchronous fast path and does nothing: what emitting costs."""

    async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        self.on_event_sync(event, data)

    def on_event_sync(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        return None


def generated(n: int) -> Iterator[tuple[str, str, dict[str, int]]]:
    """``n`` input items as ``(id, prompt, context)``: the shape a batch file yields."""
    for i in range(n):
        yield f"item-{i:07d}", f"Summarise document number {i} in one sentence.", {"row": i}


def processor(workers: int, observers: list[Any]) -> ParallelBatchProcessor[Any, Any, Any]:
    return ParallelBatchProcessor(
        config=ProcessorConfig(dry_run=True, max_workers=workers), observers=observers
    )


async def without_store(n: int, workers: int, kind: str, null: bool = False) -> dict[str, Any]:
    """The engine alone (or with an observer that does nothing)."""
    strategy = STRATEGIES[kind]()
    proc = processor(workers, [NullObserver()] if null else [])
    await proc.add_many(LLMWorkItem(i, strategy, p, c) for i, p, c in generated(n))
    started = time.perf_counter()
    result = await proc.process_all()
    elapsed = time.perf_counter() - started
    assert result.succeeded == n
    return {"elapsed": elapsed}


async def with_store(n: int, workers: int, kind: str, path: Path) -> dict[str, Any]:
    """The engine with the store's writer, timed until every result is committed."""
    store = await RunStore.open(path)
    try:
        run_id = await store.create_run(name="bench", source="generated", settings={})
        await store.ingest(run_id, generated(n))
        strategy = STRATEGIES[kind]()
        writer = store.observer(run_id)
        proc = processor(workers, [writer])
        await proc.add_many(LLMWorkItem(i, strategy, p, c) for i, p, c in generated(n))
        started = time.perf_counter()
        result = await proc.process_all()
        engine_done = time.perf_counter()
        await writer.close()
        elapsed = time.perf_counter() - started
        run = await store.get_run(run_id)
        assert result.succeeded == n == run.succeeded, (result.succeeded, run.succeeded)
        return {
            "elapsed": elapsed,
            "tail": elapsed - (engine_done - started),
            "flushes": writer.flushes,
            "largest_flush": writer.largest_flush,
        }
    finally:
        await store.close()


async def ingest_only(n: int, path: Path) -> dict[str, Any]:
    """Ingest ``n`` generated items into a fresh store (run in a child process)."""
    store = await RunStore.open(path)
    try:
        run_id = await store.create_run(name="ingest", source="generated", settings={})
        started = time.perf_counter()
        count = await store.ingest(run_id, generated(n))
        elapsed = time.perf_counter() - started
        started = time.perf_counter()
        pending = 0
        async for _ in store.pending_items(run_id):  # what a resume reads
            pending += 1
        resume_read = time.perf_counter() - started
        assert count == n == pending == (await store.get_run(run_id)).total
    finally:
        await store.close()
    return {
        "elapsed": elapsed,
        "resume_read": resume_read,
        "peak_rss_mb": peak_rss_mb(),
        "file_mb": path.stat().st_size / 1e6,
    }


def peak_rss_mb() -> float:
    """This process's peak RSS. ``VmHWM`` where Linux has it: ``ru_maxrss`` can carry the
    parent's peak over a fork, and the ingest child must not count the engine runs."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fresh_db(directory: str, name: str) -> Path:
    path = Path(directory) / name
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000, help="items per engine run")
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each, best counts")
    parser.add_argument("--ingest-items", type=int, default=1_000_000)
    parser.add_argument("--dir", default=None, help="where the store files go (default: tmp)")
    parser.add_argument("--ingest-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        if args.ingest_only:
            path = fresh_db(directory, "ingest.db")
            print(json.dumps(asyncio.run(ingest_only(args.ingest_items, path))))
            return
        n, workers = args.items, args.workers
        results: dict[str, tuple[float, float, dict[str, Any]]] = {}
        for kind in STRATEGIES:
            bare: list[float] = []
            null: list[float] = []
            stored: list[dict[str, Any]] = []
            for _ in range(args.rounds):
                gc.collect()
                bare.append(asyncio.run(without_store(n, workers, kind))["elapsed"])
                gc.collect()
                null.append(asyncio.run(without_store(n, workers, kind, null=True))["elapsed"])
                gc.collect()
                path = fresh_db(directory, "bench.db")
                stored.append(asyncio.run(with_store(n, workers, kind, path)))
            results[kind] = (min(bare), min(null), min(stored, key=lambda r: r["elapsed"]))
        child = subprocess.run(
            [sys.executable, __file__, "--ingest-only", "--ingest-items", str(args.ingest_items)]
            + (["--dir", args.dir] if args.dir else []),
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        ingest = json.loads(child.stdout.strip().splitlines()[-1])

    print(f"engine dry run: {n:,} items, {workers} workers, items/s, best of {args.rounds}")
    print(
        f"{'strategy':10}{'no store':>10}{'no-op obs.':>12}{'with store':>12}{'ratio':>8}"
        f"{'flushes':>9}{'largest':>9}{'tail ms':>9}"
    )
    for kind, (bare_s, null_s, best) in results.items():
        print(
            f"{kind:10}{n / bare_s:>10,.0f}{n / null_s:>12,.0f}{n / best['elapsed']:>12,.0f}"
            f"{bare_s / best['elapsed']:>7.2f}x{best['flushes']:>9,}{best['largest_flush']:>9,}"
            f"{best['tail'] * 1000:>9.0f}"
        )
    print("ratio = with store / no store (target >= 0.50x); with store is timed until every")
    print("result is committed; no-op obs. = the engine with an observer that does nothing;")
    print("largest = events in the biggest flush; tail = commit time left after the engine.")
    print()
    print(f"ingest: {args.ingest_items:,} items into a fresh store")
    print(f"{'seconds':32}{ingest['elapsed']:>12.2f}   (target < 30 s)")
    print(f"{'items/s':32}{args.ingest_items / ingest['elapsed']:>12,.0f}")
    print(f"{'resume read (pending_items) s':32}{ingest['resume_read']:>12.2f}")
    print(f"{'peak RSS (MB)':32}{ingest['peak_rss_mb']:>12.0f}   (target < 300 MB)")
    print(f"{'file size (MB)':32}{ingest['file_mb']:>12.0f}")


if __name__ == "__main__":
    main()
