"""Cutting items into chunks that fit one provider batch (requests and bytes), per strategy.

Each strategy instance gets chunks of its own (one model per batch, as OpenAI requires, and
one strategy to shape the replies of a chunk). A chunk closes when one more request would
pass either limit; a single request larger than the byte limit is refused with ``ValueError``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from ..providers.batch import BatchClient, BatchTarget
from .journal import custom_id

__all__ = ["ChunkPlanner", "PlannedChunk", "new_chunk_id"]


def new_chunk_id() -> str:
    """A chunk id unique across runs and machines (it names the batch at the provider)."""
    return f"abl-{secrets.token_hex(8)}"


@dataclass(slots=True)
class PlannedChunk:
    """Items gathered for one batch: their ids and request lines, in position order."""

    chunk_id: str
    target: BatchTarget
    client: BatchClient
    item_ids: list[str] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    size: int = 0


class ChunkPlanner:
    """Accumulates request lines per strategy; hands out chunks as they fill up."""

    def __init__(self) -> None:
        self._open: dict[int, PlannedChunk] = {}

    def add(
        self, item_id: str, prompt: str, target: BatchTarget, client: BatchClient
    ) -> PlannedChunk | None:
        """Add one item; return the chunk it closed (without this item), if any."""
        key = id(target)
        chunk = self._open.get(key)
        if chunk is None:
            chunk = self._open[key] = PlannedChunk(new_chunk_id(), target, client)
        limits = client.limits
        line = client.request_line(custom_id(chunk.chunk_id, len(chunk.lines)), target.body(prompt))
        if len(line) > limits.max_bytes:
            raise ValueError(
                f"item {item_id!r}: its batch request is {len(line)} bytes, more than the "
                f"{limits.max_bytes} a {target.provider} batch may hold"
            )
        closed = None
        if len(chunk.lines) >= limits.max_requests or chunk.size + len(line) > limits.max_bytes:
            closed = chunk
            chunk = self._open[key] = PlannedChunk(new_chunk_id(), target, client)
            line = client.request_line(custom_id(chunk.chunk_id, 0), target.body(prompt))
        chunk.item_ids.append(item_id)
        chunk.lines.append(line)
        chunk.size += len(line)
        return closed

    def flush(self) -> list[PlannedChunk]:
        """Every chunk still open (the last, partly filled ones)."""
        chunks = [c for c in self._open.values() if c.lines]
        self._open.clear()
        return chunks
