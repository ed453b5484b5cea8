"""CLI overhead: `abl-tui run --headless --dry-run` against the engine's own dry run with the store.

Both store every item in a fresh SQLite file and send nothing. The engine side is the
floor: ingest plus a dry run with the store's writer attached, in this process. The CLI
side is the whole command in a subprocess: start-up, batch validation, ingest, the run,
the progress display and the summary. Prints items/s of each and the ratio (target >= 0.7x).

    python benchmarks/cli_overhead.py [--items 100000] [--workers 50] [--repeat 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from async_batch_llm import LLMWorkItem, ParallelBatchProcessor, ProcessorConfig
from async_batch_llm.llm_strategies import LLMCallStrategy
from async_batch_llm.store import RunStore


class DryOnly(LLMCallStrategy[str]):
    """Never called: the dry run answers for it."""

    async def execute(self, prompt: str, attempt: int, timeout: float, state: Any = None):
        raise AssertionError("a dry run sends nothing")


def write_batch(folder: Path, count: int) -> Path:
    """A JSONL batch of ``count`` short items."""
    path = folder / "items.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for n in range(count):
            out.write(json.dumps({"id": f"item-{n}", "prompt": f"Classify product {n}"}) + "\n")
    return path


async def engine_dry_run(items_path: Path, db_path: Path, workers: int) -> float:
    """Seconds for ingest + a dry run with the store attached, all in this process."""
    started = time.perf_counter()
    store = await RunStore.open(db_path)
    run_id = await store.create_run(name="bench", source=str(items_path), settings={})
    with items_path.open(encoding="utf-8") as lines:
        await store.ingest(run_id, (json.loads(line) for line in lines))
    writer = store.observer(run_id)
    strategy = DryOnly()
    processor: ParallelBatchProcessor[Any, Any, Any] = ParallelBatchProcessor(
        config=ProcessorConfig(max_workers=workers, dry_run=True, max_queue_size=4 * workers),
        observers=[writer],
    )
    await processor.start(collect_results=False)
    async for item in store.pending_items(run_id):
        await processor.add_work(LLMWorkItem(item.item_id, strategy, item.prompt, item.context))
    await processor.finish()
    await processor.join()
    await writer.close()
    await store.close()
    return time.perf_counter() - started


def cli_dry_run(items_path: Path, db_path: Path, workers: int) -> float:
    """Seconds for the whole `abl-tui run --headless --dry-run` command."""
    command = [
        sys.executable,
        "-m",
        "abl_tui.cli",
        "run",
        str(items_path),
        "--headless",
        "--dry-run",
        "--db",
        str(db_path),
        "--workers",
        str(workers),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "CI": "1"})
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"abl-tui failed ({done.returncode}):\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=2, help="best of N, runs alternating")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        items_path = write_batch(folder, args.items)
        best_engine = best_cli = float("inf")
        for round_no in range(args.repeat):
            engine_db, cli_db = folder / f"e{round_no}.db", folder / f"c{round_no}.db"
            best_engine = min(
                best_engine, asyncio.run(engine_dry_run(items_path, engine_db, args.workers))
            )
            best_cli = min(best_cli, cli_dry_run(items_path, cli_db, args.workers))
    engine_rate, cli_rate = args.items / best_engine, args.items / best_cli
    print(
        f"{args.items:,} items, {args.workers} workers, dry run, store attached,"
        f" best of {args.repeat}"
    )
    print(f"engine + store (in process): {engine_rate:>10,.0f} items/s  ({best_engine:.1f} s)")
    print(f"abl-tui run --headless:      {cli_rate:>10,.0f} items/s  ({best_cli:.1f} s)")
    print(f"ratio cli/engine: {cli_rate / engine_rate:.2f}x (target >= 0.7x)")


if __name__ == "__main__":
    main()
