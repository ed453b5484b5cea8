"""Helpers shared by several test modules (imported as ``support``: tests/ is on sys.path)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from async_batch_llm import LLMWorkItem, ParallelBatchProcessor


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of an ``abl-tui`` subprocess: no store, keys, proxies or forced colour;
    litellm stays offline."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"ABL_DB", "FORCE_COLOR", "CLICOLOR_FORCE", "COLUMNS", "LINES"}
        and not key.endswith("_API_KEY")
        and not key.lower().endswith("_proxy")
    }
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONIOENCODING="utf-8",
    )
    env.update(extra)
    return env


async def results_by_id(
    processor: ParallelBatchProcessor[Any, Any, Any], strategy: Any, prompts: list[str]
) -> dict[str, Any]:
    """Process one item per prompt (item id = prompt); every item must come back."""
    async with processor:
        for prompt in prompts:
            await processor.add_work(LLMWorkItem(prompt, strategy, prompt))
        batch = await asyncio.wait_for(processor.process_all(), 20)
    assert sorted(r.item_id for r in batch.results) == sorted(prompts)
    return {r.item_id: r for r in batch.results}
