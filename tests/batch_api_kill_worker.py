"""Worker process of the batch API kill test: run (or resume) items through a provider batch API.

    python tests/batch_api_kill_worker.py DB OUT API_BASE PROVIDER [--items 10] [--chunk 4]

The journal lives in the SQLite file DB (run ``kill-run``). Items whose outcome is already in
OUT (one JSON line per item, flushed and fsynced: the run store's commit) are done; the
others are handed to the runner, so a second start after a SIGKILL resumes the run. Prints
``SUBMITTED <chunk_id> <batch_id>`` once a chunk's batch id is journaled, ``DONE`` at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

from async_batch_llm import LiteLLMStrategy, LLMWorkItem
from async_batch_llm.batch_api import BatchApiConfig, ChunkRecord, ProviderBatchRunner
from async_batch_llm.providers.batch import BatchLimits
from async_batch_llm.store.provider_batches import SqliteBatchJournal

KEY = "sk-test-batch-0123456789"


def prompt_of(n: int) -> str:
    return f"kill test item {n}"


def make_strategy(provider: str, api_base: str) -> LiteLLMStrategy:
    if provider == "anthropic":
        return LiteLLMStrategy("anthropic/claude-haiku-4-5", api_base=api_base, api_key=KEY)
    return LiteLLMStrategy("openai/gpt-4o-mini", api_base=api_base + "/v1", api_key=KEY)


def on_status(record: ChunkRecord) -> None:
    if record.state == "submitted" and record.provider_status is not None:
        print(f"SUBMITTED {record.chunk_id} {record.batch_id}", flush=True)


async def main(args: argparse.Namespace) -> None:
    out = Path(args.out)
    done = (
        {json.loads(line)["item_id"] for line in out.read_text().splitlines()}
        if out.exists()
        else set()
    )
    strategy = make_strategy(args.provider, args.api_base)
    work: list[LLMWorkItem[Any, Any, Any]] = [
        LLMWorkItem(f"item-{n:03d}", strategy, prompt_of(n))
        for n in range(args.items)
        if f"item-{n:03d}" not in done
    ]
    journal = await SqliteBatchJournal.open(args.db, "kill-run")
    config = BatchApiConfig(
        poll_interval=0.02, max_poll_interval=0.05, limits=BatchLimits(args.chunk, 10_000_000)
    )
    runner = ProviderBatchRunner(journal, config, on_status=on_status)
    try:
        with out.open("a", encoding="utf-8") as sink:
            async for outcome in runner.outcomes(work):
                result = outcome.result
                line = {
                    "item_id": result.item_id,
                    "success": result.success,
                    "rescue": outcome.rescue,
                }
                sink.write(json.dumps(line) + "\n")
                sink.flush()
                os.fsync(sink.fileno())
    finally:
        await journal.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("out")
    parser.add_argument("api_base", help="the simulator's root URL, without /v1")
    parser.add_argument("provider", choices=("openai", "anthropic"))
    parser.add_argument("--items", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=4)
    asyncio.run(main(parser.parse_args()))
