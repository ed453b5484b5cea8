"""Worker process of the run store's kill test: start or resume a run, then process it.

    python tests/store_kill_worker.py DB LEDGER [--items 400] [--workers 8] [--latency 0.003]

A fresh store gets a run of ``--items`` items; a store that has one resumes it (items left
running by a killed worker are marked interrupted first, then everything not done is sent
again). Every call the strategy makes is appended to LEDGER, flushed and fsynced BEFORE
the call returns success, so the ledger shows every item ever handed back to the engine,
even by a worker that was killed a moment later. Prints READY once the run is set up and
DONE when every item is committed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from async_batch_llm import LLMCallStrategy, LLMWorkItem, ParallelBatchProcessor, ProcessorConfig
from async_batch_llm.store import RunStore

USAGE = {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10, "cached_input_tokens": 0}


class LedgerStrategy(LLMCallStrategy[str]):
    """Answers after ``latency`` seconds; records the call durably before answering."""

    def __init__(self, ledger_path: str, latency: float) -> None:
        self.latency = latency
        self.ledger = open(ledger_path, "a", encoding="utf-8")  # noqa: SIM115 (lives as long as the process)

    async def execute(
        self, prompt: str, attempt: int, timeout: float, state: Any = None
    ) -> tuple[str, dict[str, int]]:
        await asyncio.sleep(self.latency)
        self.ledger.write(prompt + "\n")  # the prompt is the item id
        self.ledger.flush()
        os.fsync(self.ledger.fileno())
        return f"answer to {prompt}", USAGE


async def main(args: argparse.Namespace) -> None:
    store = await RunStore.open(args.db)
    try:
        runs = await store.list_runs()
        if runs:
            run_id = runs[0].id
            await store.mark_interrupted(run_id)
        else:
            run_id = await store.create_run(
                name="kill test", source="store_kill_worker", settings={"workers": args.workers}
            )
            await store.ingest(
                run_id, ((f"item-{i:04d}", f"item-{i:04d}", {"i": i}) for i in range(args.items))
            )
        print("READY", flush=True)
        strategy = LedgerStrategy(args.ledger, args.latency)
        writer = store.observer(run_id, flush_interval=0.02)
        processor: ParallelBatchProcessor[Any, str, Any] = ParallelBatchProcessor(
            config=ProcessorConfig(max_workers=args.workers), observers=[writer]
        )
        await processor.start(collect_results=False)
        async for item in store.pending_items(run_id):
            await processor.add_work(LLMWorkItem(item.item_id, strategy, item.prompt, item.context))
        await processor.finish()
        await processor.join()
        await writer.close()
        await store.set_run_status(run_id, "completed")
    finally:
        await store.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("ledger")
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.003)
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
