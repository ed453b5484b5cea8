"""Issue 11's 429 storm without Retry-After, against an independent provider: 20 items, each
answered 429 twice (no Retry-After, no limit headers), then 200.

The issue's bar is "finishes within a minute"; ``abl-tui run`` once took ~9 minutes because
each of those 429s, sent one at a time by the slow start after a cooldown, started a new global
cooldown (10 s, then 15, 22.5, ... for the runner). Now a storm costs one cooldown and the
items' further 429s back off alone (``core.cooldown``). This test counts the cooldowns instead
of timing them (tiny cooldowns, so it is fast either way): a storm should cost a few, not one
per 429.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from async_batch_llm import (
    LiteLLMStrategy,
    LLMWorkItem,
    ParallelBatchProcessor,
    ProcessingEvent,
    ProcessorConfig,
    RateLimitConfig,
    RetryConfig,
)
from conftest import EventRecorder
from independent_provider import running_provider


async def _storm(base: str, recorder: EventRecorder) -> list[bool]:
    strategy = LiteLLMStrategy(
        "openai/gpt-4o-mini", api_base=base, api_key="sk-test", transport="native"
    )
    config = ProcessorConfig(
        max_workers=8,
        timeout_per_item=30,
        retry=RetryConfig(max_attempts=4, initial_wait=0.01, max_wait=0.05),
        # the runner's policy (abl_tui.runner._make_processor), its cooldown scaled down 200x,
        # the slow start 10x: long beside an answer, as in the runner
        rate_limit=RateLimitConfig(
            cooldown_seconds=0.05, slow_start_items=8, slow_start_initial_delay=0.05,
            slow_start_final_delay=0.002,
        ),
    )  # fmt: skip
    processor: ParallelBatchProcessor[Any, str, Any] = ParallelBatchProcessor(
        config=config, observers=[recorder]
    )
    async with processor:
        for n in range(20):
            await processor.add_work(LLMWorkItem(f"s{n}", strategy, f"storm {n} STORM"))
        batch = await processor.process_all()
    return [r.success for r in batch.results]


async def test_a_storm_without_retry_after_costs_a_few_cooldowns_not_one_per_429(
    tmp_path: Path, recorder: EventRecorder
) -> None:
    with running_provider(tmp_path, latency=0.002) as provider:
        outcomes = await _storm(provider.openai_base, recorder)
        ledger = provider.ledger()
    assert outcomes == [True] * 20
    assert sum(r["status"] == 429 for r in ledger) == 40
    cooldowns = recorder.of(ProcessingEvent.COOLDOWN_STARTED)
    assert len(cooldowns) <= 4, json.dumps(cooldowns)[:400]
