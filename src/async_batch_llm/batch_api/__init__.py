"""Work items through the provider batch APIs (OpenAI Batches, Anthropic Message Batches).

Half the online price for runs that can wait, durable across kills, results streamed as
batches end, stragglers rescued online::

    journal = MemoryBatchJournal()          # or store.provider_batches.SqliteBatchJournal
    runner = ProviderBatchRunner(journal, BatchApiConfig(batch_deadline=3600))
    async with ParallelBatchProcessor(config=ProcessorConfig(max_workers=8)) as processor:
        async for result in rescue_online(runner.outcomes(items), by_id, processor):
            ...

See :mod:`.engine` for what is journaled when, and :mod:`.outcome` for what is rescued.
"""

from __future__ import annotations

from .config import BatchApiConfig, RescueMode
from .engine import BatchSubmitError, ProviderBatchRunner
from .journal import (
    CHUNK_STATES,
    OPEN_STATES,
    BatchJournal,
    ChunkRecord,
    ChunkState,
    MemoryBatchJournal,
)
from .outcome import BatchItemOutcome
from .rescue import ItemLookup, rescue_online

__all__ = [
    "CHUNK_STATES",
    "OPEN_STATES",
    "BatchApiConfig",
    "BatchItemOutcome",
    "BatchJournal",
    "BatchSubmitError",
    "ChunkRecord",
    "ChunkState",
    "ItemLookup",
    "MemoryBatchJournal",
    "ProviderBatchRunner",
    "RescueMode",
    "rescue_online",
]
