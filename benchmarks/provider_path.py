"""The litellm path: the engine on LiteLLMStrategy(transport="litellm") against bare litellm.

The simulator runs in its own process (so its CPU does not share the client's GIL).

(a) Throughput: the engine (``--workers`` workers) and a bare ``Semaphore`` + ``gather`` of
    ``litellm.acompletion`` at the same concurrency, against the same zero-latency simulator
    (profile ``fast``), in one run, alternating (A B B A) to cancel drift. Prints items/s of
    each and the engine/bare ratio (target >= 0.9x; litellm's own client CPU is the ceiling).
(b) Pacing: a simulator that admits ``--rpm`` requests a minute (over a sliding
    ``--window`` seconds: a short window is stricter on bursts than a provider's minute) and
    the engine told ``max_requests_per_minute=--rpm``, for ``--seconds``. Reads the
    simulator's ledger file: share of the limit achieved (target >= 95 %) and share of
    requests answered 429 (target < 1 %).

    python benchmarks/provider_path.py [--items 3000] [--workers 200] [--seconds 45]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servers import listening_process  # a sibling script: its folder is on sys.path

from async_batch_llm import (
    LiteLLMStrategy,
    LLMWorkItem,
    ParallelBatchProcessor,
    ProcessorConfig,
    RateLimitConfig,
    RetryConfig,
)
from async_batch_llm.providers._litellm_import import load_litellm

MODEL = "openai/sim-bench"
API_KEY = "bench-key"
TIMEOUT = 30.0


@dataclass
class Simulator:
    """A simulator process and its base URL."""

    process: subprocess.Popen[str]
    base_url: str
    ledger: Path | None


@contextlib.contextmanager
def simulator_process(*extra: str, ledger: Path | None = None) -> Iterator[Simulator]:
    """Run ``python -m async_batch_llm.simulator --port 0 ...`` until the block ends."""
    command = [sys.executable, "-m", "async_batch_llm.simulator", "--port", "0"]
    command += [*extra, *(["--ledger", str(ledger)] if ledger else [])]
    with listening_process(command) as (process, base_url):
        yield Simulator(process, base_url, ledger)


# --- (a) throughput -------------------------------------------------------------------------


async def bare_gather(base_url: str, items: int, workers: int) -> float:
    """``Semaphore(workers)`` + ``gather`` of ``litellm.acompletion``; returns items/s."""
    litellm = load_litellm()
    semaphore = asyncio.Semaphore(workers)
    failures = 0

    async def one(i: int) -> None:
        nonlocal failures
        async with semaphore:
            try:
                await litellm.acompletion(
                    model=MODEL,
                    messages=[{"role": "user", "content": f"bare item {i}"}],
                    api_base=base_url,
                    api_key=API_KEY,
                    timeout=TIMEOUT,
                    max_retries=0,
                )
            except Exception:
                failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(items)))
    elapsed = time.perf_counter() - started
    if failures:
        print(f"  (bare: {failures} failed calls)")
    return items / elapsed


async def engine_run(base_url: str, items: int, workers: int) -> float:
    """The engine with ``LiteLLMStrategy`` over the same calls; returns items/s."""
    strategy = LiteLLMStrategy(MODEL, api_base=base_url, api_key=API_KEY, transport="litellm")
    config = ProcessorConfig(max_workers=workers, timeout_per_item=TIMEOUT)
    processor: ParallelBatchProcessor[str, Any, None] = ParallelBatchProcessor(config=config)
    async with processor:
        await strategy.prepare()  # the import is paid before the clock starts, as for bare
        for i in range(items):
            await processor.add_work(LLMWorkItem(f"e{i}", strategy, f"engine item {i}"))
        started = time.perf_counter()
        result = await processor.process_all()
        elapsed = time.perf_counter() - started
    if result.failed:
        print(f"  (engine: {result.failed} failed items)")
    return items / elapsed


async def throughput(items: int, workers: int) -> None:
    print(f"(a) throughput: {items} items, {workers} concurrent, simulator profile 'fast'")
    with simulator_process("--profile", "fast") as sim:
        await bare_gather(sim.base_url, min(items, 2 * workers), workers)  # warm up
        bare: list[float] = []
        engine: list[float] = []
        for runner in ("bare", "engine", "engine", "bare"):
            if runner == "bare":
                rate = await bare_gather(sim.base_url, items, workers)
                bare.append(rate)
            else:
                rate = await engine_run(sim.base_url, items, workers)
                engine.append(rate)
            print(f"  {runner:<6} {rate:8.1f} items/s")
    bare_rate, engine_rate = sum(bare) / len(bare), sum(engine) / len(engine)
    print(f"  bare gather   {bare_rate:8.1f} items/s (mean of {len(bare)})")
    print(f"  engine        {engine_rate:8.1f} items/s (mean of {len(engine)})")
    print(f"  ratio         {engine_rate / bare_rate:8.2f}x  (target >= 0.90x)")


# --- (b) pacing -----------------------------------------------------------------------------


def read_ledger(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


async def pacing(rpm: int, engine_rpm: int, window: float, seconds: float, workers: int) -> None:
    per_window = max(1, round(rpm * window / 60.0))
    items = int(engine_rpm / 60.0 * seconds)
    print(
        f"(b) pacing: engine max_requests_per_minute={engine_rpm}; simulator admits {per_window} "
        f"requests per sliding {window:g} s (= {rpm}/min); {items} items (~{seconds:g} s), "
        f"{workers} workers"
    )
    with tempfile.TemporaryDirectory() as tmp:
        ledger_path = Path(tmp) / "ledger.jsonl"
        extra = ["--profile", "fast", "--rpm", str(per_window), "--set", f"rate_window={window}"]
        with simulator_process(*extra, ledger=ledger_path) as sim:
            strategy = LiteLLMStrategy(
                MODEL, api_base=sim.base_url, api_key=API_KEY, transport="litellm"
            )
            config = ProcessorConfig(
                max_workers=workers,
                timeout_per_item=TIMEOUT,
                max_requests_per_minute=engine_rpm,
                retry=RetryConfig(max_attempts=3, initial_wait=0.1, max_wait=1.0),
                rate_limit=RateLimitConfig(slow_start_items=0),
            )
            processor: ParallelBatchProcessor[str, Any, None] = ParallelBatchProcessor(
                config=config
            )
            async with processor:
                await strategy.prepare()
                for i in range(items):
                    await processor.add_work(LLMWorkItem(f"p{i}", strategy, f"paced item {i}"))
                started = time.perf_counter()
                result = await processor.process_all()
                elapsed = time.perf_counter() - started
                stats = await processor.get_stats()
        ledger = read_ledger(ledger_path)
    ok = [e for e in ledger if e["outcome"] == "ok"]
    limited = [e for e in ledger if e["status"] == 429]
    span = ok[-1]["time"] - ok[0]["time"] if len(ok) > 1 else elapsed
    achieved = (len(ok) - 1) / span * 60.0 if span > 0 else 0.0
    print(f"  succeeded      {result.succeeded}/{items} in {elapsed:.1f} s")
    print(f"  requests       {len(ledger)} ({len(ok)} ok, {len(limited)} answered 429)")
    share = achieved / rpm
    print(f"  achieved       {achieved:.0f}/min = {share:.1%} of the limit (target >= 95%)")
    print(f"  429 share      {len(limited) / max(1, len(ledger)):.2%} (target < 1%)")
    if limited and ledger:
        offsets = ", ".join(f"{e['time'] - ledger[0]['time']:.2f}" for e in limited[:8])
        print(f"  429s at (s)    {offsets}")
    print(f"  engine rate-limit hits {stats['rate_limit_count']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=3000, help="items per throughput run")
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=45.0, help="length of the pacing run")
    parser.add_argument("--rpm", type=int, default=1200, help="the pacing run's limit")
    parser.add_argument(
        "--engine-rpm", type=int, default=None, help="the engine's pace (default: --rpm)"
    )
    parser.add_argument("--window", type=float, default=10.0, help="simulator window, seconds")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-pacing", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    started = time.perf_counter()
    load_litellm()
    print(f"litellm imported in {time.perf_counter() - started:.1f} s")
    if not args.skip_throughput:
        asyncio.run(throughput(args.items, args.workers))
    if not args.skip_pacing:
        engine_rpm = args.engine_rpm or args.rpm
        asyncio.run(pacing(args.rpm, engine_rpm, args.window, args.seconds, args.workers))


if __name__ == "__main__":
    main()
