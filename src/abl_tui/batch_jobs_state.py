"""The batch-jobs model: a run's provider batches as the dashboard and headless mode show them.

Pure (no Textual, no threads, no clock: every call takes ``now``). It is fed
:class:`~async_batch_llm.batch_api.ChunkRecord` s, either as the runner reports them (the
``provider_batch`` events of its buffer, or :attr:`abl_tui.runner.Runner.batch_chunks`) or
as read from the store's ``provider_batches`` table (watch mode).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the batch API (aiohttp with it) is imported by batch runs only
    from async_batch_llm.batch_api import ChunkRecord

__all__ = ["BATCH_EVENT", "BatchJobRow", "BatchJobs", "job_row", "job_rows", "summary"]

#: The name of the runner-buffer event that carries one chunk's new record (``{"record": r}``).
BATCH_EVENT = "provider_batch"

_SUBMITTED = frozenset({"submitted", "cancelling", "ended"})


@dataclass(frozen=True, slots=True)
class BatchJobRow:
    """One line of the batch-jobs panel. Times are seconds (None: unknown or not set)."""

    chunk_id: str
    provider: str
    batch_id: str | None
    status: str
    """The provider's word (``in_progress``, ``completed``...), else ours (``planned``,
    ``cancelling``)."""
    done: int
    failed: int
    total: int
    age: float | None
    """Since submission (since planning while not yet submitted)."""
    to_provider_deadline: float | None
    """Until the provider gives up on the batch (its 24 h window); None once ended."""
    to_our_deadline: float | None
    """Until we cancel it (``batch_deadline``); None without one, or once cancelled or ended."""
    ended: bool

    @property
    def label(self) -> str:
        """The provider's batch id, else our chunk id (a batch not yet submitted)."""
        return self.batch_id or self.chunk_id


def _status(record: ChunkRecord) -> str:
    """The provider's own word while it runs or once it ended (``in_progress``, ``completed``,
    ``expired``...); ours before submission and while we cancel it."""
    if record.state in ("submitted", "ended") and record.provider_status:
        return record.provider_status
    return record.state


def job_row(record: ChunkRecord, now: float) -> BatchJobRow:
    """The panel's row for one chunk at ``now``."""
    ended = record.state == "ended"
    start = record.submitted_at if record.submitted_at is not None else record.planned_at
    until = record.ended_at if ended and record.ended_at is not None else now
    to_provider = None
    if not ended and record.expires_at is not None:
        to_provider = record.expires_at - now
    to_ours = None
    if not ended and record.deadline_at is not None and record.cancel_requested_at is None:
        to_ours = record.deadline_at - now
    return BatchJobRow(
        chunk_id=record.chunk_id,
        provider=record.provider,
        batch_id=record.batch_id,
        status=_status(record),
        done=record.succeeded,
        failed=record.failed,
        total=record.request_count,
        age=max(until - start, 0.0),
        to_provider_deadline=to_provider,
        to_our_deadline=to_ours,
        ended=ended,
    )


def job_rows(records: Iterable[ChunkRecord], now: float) -> list[BatchJobRow]:
    """Rows for the panel: open batches first (oldest first), then ended ones (newest first).
    Released chunks (never submitted, their items planned again) are left out."""
    kept = [r for r in records if r.state != "released"]
    open_rows = sorted((r for r in kept if r.state != "ended"), key=lambda r: r.planned_at)
    ended = sorted(
        (r for r in kept if r.state == "ended"), key=lambda r: r.ended_at or 0.0, reverse=True
    )
    return [job_row(record, now) for record in (*open_rows, *ended)]


def summary(records: Iterable[ChunkRecord]) -> str:
    """``batches: 2 submitted, 1 ended`` (and what is planned or being cancelled); "" when the
    run has no batch."""
    planned = submitted = ended = cancelling = 0
    for record in records:
        if record.state in _SUBMITTED:
            submitted += 1
        elif record.state in ("planned", "uploaded"):
            planned += 1
        ended += record.state == "ended"
        cancelling += record.state == "cancelling"
    if not (planned or submitted):
        return ""
    parts = [f"{submitted} submitted", f"{ended} ended"]
    if cancelling:
        parts.append(f"{cancelling} cancelling")
    if planned:
        parts.append(f"{planned} being submitted")
    return "batches: " + ", ".join(parts)


class BatchJobs:
    """The run's chunks by id, folded from the runner's ``provider_batch`` events."""

    def __init__(self, records: Iterable[ChunkRecord] = ()) -> None:
        self.records: dict[str, ChunkRecord] = {r.chunk_id: r for r in records}
        self.version = 0
        """Bumped by every change, so a view can skip redrawing."""

    def apply(self, record: ChunkRecord) -> ChunkRecord | None:
        """Take a chunk's new record; returns the one it replaced (None: a new chunk)."""
        before = self.records.get(record.chunk_id)
        self.records[record.chunk_id] = record
        self.version += 1
        return before

    def apply_events(self, events: Iterable[tuple[str, dict[str, Any], float]]) -> None:
        """Fold the ``provider_batch`` events of a drained buffer (others are ignored)."""
        for name, data, _at in events:
            if name == BATCH_EVENT:
                self.apply(data["record"])

    def rows(self, now: float) -> list[BatchJobRow]:
        """The panel's rows (see :func:`job_rows`)."""
        return job_rows(self.records.values(), now)

    def summary(self) -> str:
        """See :func:`summary`."""
        return summary(self.records.values())

    def __len__(self) -> int:
        return len(self.records)
