"""The durable record of a run's provider batches: what each chunk holds and where it is.

A chunk is one provider batch's worth of items. Its life: ``planned`` (ids chosen and
committed, nothing sent), ``uploaded`` (OpenAI's input file exists), ``submitted`` (the
provider's batch id is committed), ``cancelling``, ``ended`` (the provider changes nothing
more), or ``released`` (checked against the provider and never submitted: its items are
free to go in another chunk). An item belongs to at most one chunk, ever, which is what
makes "never submitted to a batch twice" hold across kills and resumes.

:class:`BatchJournal` is the protocol; :class:`MemoryBatchJournal` keeps it in memory (a run
that need not survive its process), ``store.provider_batches.SqliteBatchJournal`` in SQLite.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = [
    "CHUNK_STATES",
    "OPEN_STATES",
    "BatchJournal",
    "ChunkRecord",
    "ChunkState",
    "MemoryBatchJournal",
]

ChunkState = Literal["planned", "uploaded", "submitted", "cancelling", "ended", "released"]
CHUNK_STATES: tuple[ChunkState, ...] = (
    "planned",
    "uploaded",
    "submitted",
    "cancelling",
    "ended",
    "released",
)
OPEN_STATES: frozenset[str] = frozenset({"planned", "uploaded", "submitted", "cancelling"})
"""States in which a chunk still needs the provider (submission or polling)."""


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """One chunk as journaled. Times are Unix seconds; counts are the provider's last word."""

    chunk_id: str
    provider: str
    model: str
    request_count: int
    request_bytes: int
    planned_at: float
    state: ChunkState = "planned"
    input_file_id: str | None = None
    batch_id: str | None = None
    submitted_at: float | None = None
    expires_at: float | None = None
    """When the provider gives up on the batch (its 24 h window)."""
    deadline_at: float | None = None
    """When we cancel it (``BatchApiConfig.batch_deadline`` after submission), if set."""
    provider_status: str | None = None
    succeeded: int = 0
    failed: int = 0
    cancel_requested_at: float | None = None
    ended_at: float | None = None
    updated_at: float | None = None

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    def replace(self, **changes: object) -> ChunkRecord:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


class BatchJournal(Protocol):
    """Where a run's chunks are committed. Every method returns once its write is durable."""

    async def record_planned(self, chunk: ChunkRecord, item_ids: Sequence[str]) -> None:
        """Commit a new chunk and its items (in request order) before anything is sent.
        ``ValueError`` if an item already belongs to a chunk."""
        ...

    async def record(self, chunk: ChunkRecord) -> None:
        """Commit a chunk's new state (file or batch id, status, counts, times)."""
        ...

    async def release(self, chunk_id: str, at: float) -> None:
        """Mark a never-submitted chunk ``released`` and free its items."""
        ...

    async def chunks(self, *, open_only: bool = False) -> list[ChunkRecord]:
        """The run's chunks in planning order (only the open ones if asked)."""
        ...

    async def assignments(self, item_ids: Sequence[str]) -> dict[str, str]:
        """``item_id -> chunk_id`` for those of ``item_ids`` that belong to a chunk."""
        ...

    async def chunk_items(self, chunk_id: str) -> list[str]:
        """A chunk's item ids by position (position ``n`` is custom id ``<chunk_id>-<n>``)."""
        ...


class MemoryBatchJournal:
    """A :class:`BatchJournal` in memory: for runs that need no resume, and for tests."""

    def __init__(self) -> None:
        self._chunks: dict[str, ChunkRecord] = {}
        self._items: dict[str, list[str]] = {}
        self._owner: dict[str, str] = {}

    async def record_planned(self, chunk: ChunkRecord, item_ids: Sequence[str]) -> None:
        taken = [i for i in item_ids if i in self._owner]
        if taken or chunk.chunk_id in self._chunks:
            raise ValueError(f"items already in a chunk: {taken[:5]}")
        self._chunks[chunk.chunk_id] = chunk
        self._items[chunk.chunk_id] = list(item_ids)
        self._owner.update(dict.fromkeys(item_ids, chunk.chunk_id))

    async def record(self, chunk: ChunkRecord) -> None:
        if chunk.chunk_id not in self._chunks:
            raise KeyError(chunk.chunk_id)
        self._chunks[chunk.chunk_id] = chunk

    async def release(self, chunk_id: str, at: float) -> None:
        self._chunks[chunk_id] = self._chunks[chunk_id].replace(state="released", updated_at=at)
        for item_id in self._items.get(chunk_id, ()):
            self._owner.pop(item_id, None)

    async def chunks(self, *, open_only: bool = False) -> list[ChunkRecord]:
        return [c for c in self._chunks.values() if c.is_open or not open_only]

    async def assignments(self, item_ids: Sequence[str]) -> dict[str, str]:
        return {i: self._owner[i] for i in item_ids if i in self._owner}

    async def chunk_items(self, chunk_id: str) -> list[str]:
        return list(self._items.get(chunk_id, ()))


def custom_id(chunk_id: str, position: int) -> str:
    """The custom id of a chunk's ``position``-th request (Anthropic allows ``[A-Za-z0-9_-]``)."""
    return f"{chunk_id}-{position}"


def position_of(chunk_id: str, custom: str) -> int | None:
    """The position a custom id names within ``chunk_id``, or None if it is not ours."""
    prefix = chunk_id + "-"
    if not custom.startswith(prefix) or not custom[len(prefix) :].isdigit():
        return None
    return int(custom[len(prefix) :])


def positions(item_ids: Iterable[str]) -> dict[str, int]:
    """``item_id -> position`` of a chunk's items."""
    return {item_id: n for n, item_id in enumerate(item_ids)}
