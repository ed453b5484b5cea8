"""What the store's reads return: plain frozen dataclasses, cheap to build and safe to share."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

from .encode import decode_output, from_json


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One run: its spec, status, timings and totals (``pending`` = items not done yet)."""

    id: str
    name: str | None
    source: str | None
    status: str
    settings: dict[str, Any]
    total: int
    succeeded: int
    failed: int
    pending: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost: float | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    note: str | None = None  # why the run stopped, when something stopped it

    @property
    def done(self) -> int:
        """Items with a committed final result (succeeded or failed)."""
        return self.succeeded + self.failed

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish (None until the run has both)."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt of an item: when, how long, and how it ended (None while under way), its
    HTTP status and the provider's rate-limit snapshot (when it had them), and for a replay
    what it sent (None: the item's own prompt, the run's settings)."""

    attempt: int
    started_at: float | None
    ended_at: float | None
    duration: float | None
    outcome: str | None
    error: str | None
    error_category: str | None
    wait: float | None
    status: int | None = None
    rate_limits: dict[str, Any] | None = None
    prompt: str | None = None
    parameters: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """One item as stored; ``history`` is filled by :meth:`RunStore.item` only."""

    run_id: str
    item_id: str
    idx: int
    prompt: str
    context: Any
    status: str
    attempts: int
    output: str | None
    output_is_json: bool
    error: str | None
    error_category: str | None
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost: float | None
    started_at: float | None
    finished_at: float | None
    duration: float | None
    history: tuple[AttemptRecord, ...] = field(default=())

    @property
    def id(self) -> str:
        """The item id (``item_id``), under the name ingest reads."""
        return self.item_id

    @property
    def success(self) -> bool:
        """True once the item has succeeded."""
        return self.status == "succeeded"

    @property
    def output_value(self) -> Any:
        """The output as a value: structured outputs parsed back from their JSON."""
        return decode_output(self.output, self.output_is_json)


@dataclass(frozen=True, slots=True)
class PendingItem:
    """An item still to send, as :meth:`RunStore.pending_items` yields it."""

    item_id: str
    idx: int
    prompt: str
    context: Any
    status: str
    attempts: int

    @property
    def id(self) -> str:
        """The item id (``item_id``), under the name ingest reads."""
        return self.item_id


RUN_COLUMNS = (
    "id, name, source, status, settings, total, succeeded, failed, input_tokens, "
    "output_tokens, cached_tokens, cost, created_at, started_at, finished_at, note"
)

ITEM_COLUMNS = (
    "run_id, item_id, idx, prompt, context, status, attempts, output, output_json, error, "
    "error_category, input_tokens, output_tokens, cached_tokens, cost, started_at, "
    "finished_at, duration"
)

ATTEMPT_COLUMNS = (
    "attempt, started_at, ended_at, duration, outcome, error, error_category, wait, status, "
    "rate_limits, prompt, parameters"
)


def run_from_row(row: sqlite3.Row | tuple[Any, ...]) -> RunSummary:
    """A :class:`RunSummary` from a row selected with :data:`RUN_COLUMNS`."""
    total, succeeded, failed = row[5], row[6], row[7]
    return RunSummary(
        id=row[0],
        name=row[1],
        source=row[2],
        status=row[3],
        settings=from_json(row[4]) or {},
        total=total,
        succeeded=succeeded,
        failed=failed,
        pending=max(total - succeeded - failed, 0),
        input_tokens=row[8],
        output_tokens=row[9],
        cached_tokens=row[10],
        cost=row[11],
        created_at=row[12],
        started_at=row[13],
        finished_at=row[14],
        note=row[15] if len(row) > 15 else None,
    )


def item_from_row(
    row: sqlite3.Row | tuple[Any, ...], history: tuple[AttemptRecord, ...] = ()
) -> ItemRecord:
    """An :class:`ItemRecord` from a row selected with :data:`ITEM_COLUMNS`."""
    return ItemRecord(
        row[0],
        row[1],
        row[2],
        row[3],
        from_json(row[4]),
        row[5],
        row[6],
        row[7],
        bool(row[8]),
        row[9],
        row[10],
        row[11],
        row[12],
        row[13],
        row[14],
        row[15],
        row[16],
        row[17],
        history,
    )


def attempt_from_row(row: sqlite3.Row | tuple[Any, ...]) -> AttemptRecord:
    """An :class:`AttemptRecord` from a row selected with :data:`ATTEMPT_COLUMNS`."""
    limits, parameters = from_json(row[9]), from_json(row[11])
    return AttemptRecord(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        row[8],
        limits if isinstance(limits, dict) else None,
        row[10],
        parameters if isinstance(parameters, dict) else None,
    )
