"""Folding the engine's events into the rows one flush writes.

Each item's events within a flush are merged: an item that starts and finishes between two
flushes becomes ONE final item row (and no attempt row when its first attempt succeeded),
so the statements of a flush do not depend on their order. The rare item that starts a
new session within the same flush (a retry added while the run goes on) begins a new
:class:`Segment`, written after the first one in the same transaction.

Rows are plain tuples in the column order of :mod:`.statements`. Whatever a payload holds,
folding never raises: text that SQLite could not store is repaired and odd numbers become
0 or NULL, so one strange result can never block every later commit.
"""

from __future__ import annotations

import math
from typing import Any

from ..observers.base import ProcessingEvent
from .encode import clean_text, encode_output

_STARTED = ProcessingEvent.ITEM_STARTED
_COMPLETED = ProcessingEvent.ITEM_COMPLETED
_FAILED = ProcessingEvent.ITEM_FAILED
_RETRY = ProcessingEvent.ITEM_RETRY
_RATE_LIMIT = ProcessingEvent.RATE_LIMIT_HIT
_BATCH_STARTED = ProcessingEvent.BATCH_STARTED
_BATCH_COMPLETED = ProcessingEvent.BATCH_COMPLETED

#: Run-level operations a segment may carry, applied after its item rows.
RUN_STARTED = "started"
RUN_COMPLETED = "completed"

# An item's state in a segment: [new session?, highest attempt, session start,
# final row or None, start of the attempt still open in this segment or None].
_NEW, _COUNT, _START, _FINAL, _OPEN = range(5)

Event = tuple[ProcessingEvent, dict[str, Any], float]


class Segment:
    """The rows of one flush, or of the part of it before an item starts a new session."""

    __slots__ = ("attempts", "items", "run_ops")

    def __init__(self) -> None:
        self.items: dict[str, list[Any]] = {}
        # (item_id, engine attempt) -> [started, ended, outcome, error, category, wait]
        self.attempts: dict[tuple[str, int], list[Any]] = {}
        self.run_ops: list[tuple[str, float]] = []

    def rows(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """``(running rows, final rows, attempt rows)``, in :mod:`.statements` column order.

        Running: ``(item_id, new, attempts, session start)``. Final: see :func:`fold`.
        Attempt: ``(item_id, engine attempt, started, ended, outcome, error, category,
        wait)``. An attempt still under way gets an open row, so a crash leaves a trace that
        :meth:`RunStore.mark_interrupted` closes.
        """
        running: list[tuple[Any, ...]] = []
        final: list[tuple[Any, ...]] = []
        attempts = self.attempts
        for item_id, state in self.items.items():
            row = state[_FINAL]
            if row is not None:
                final.append(row)
                continue
            running.append((item_id, state[_NEW], state[_COUNT], state[_START]))
            if state[_OPEN] is not None:
                attempts.setdefault(
                    (item_id, state[_COUNT]), [state[_OPEN], None, None, None, None, None]
                )
        return (
            running,
            final,
            [(item_id, attempt, *fields) for (item_id, attempt), fields in attempts.items()],
        )


def fold(events: list[Event]) -> list[Segment]:
    """Fold ``(event, payload, time)`` triples, in order, into segments of merged rows.

    A final row is ``(item_id, new, attempts, session start, output, output_is_json, error,
    category, input, output and cached tokens, cost, finished, status, duration)``.
    """
    segment = Segment()
    segments = [segment]
    items = segment.items
    for event, data, now in events:
        if event is _STARTED:
            item_id, attempt = data["item_id"], data.get("attempt", 1)
            state = items.get(item_id)
            if state is not None and (attempt == 1 or state[_FINAL] is not None):
                segment = Segment()
                segments.append(segment)
                items = segment.items
                state = None
            if state is None:
                first = attempt == 1
                items[item_id] = [first, attempt, now if first else None, None, now]
            else:
                state[_COUNT] = attempt
                state[_OPEN] = now
        elif event is _COMPLETED or event is _FAILED:
            item_id = data["item_id"]
            state = items.get(item_id)
            if state is not None and state[_FINAL] is not None:
                segment = Segment()
                segments.append(segment)
                items = segment.items
                state = None
            count = data.get("attempts") or 0
            duration = _real(data.get("duration"))
            if state is None:
                start = now - duration if count == 0 and duration is not None else None
                state = items[item_id] = [False, count, start, None, None]
            elif count > state[_COUNT]:
                state[_COUNT] = count
            result = data.get("result")
            tokens = data.get("tokens")
            if tokens is None:
                tokens = getattr(result, "token_usage", None) or {}
            if event is _COMPLETED:
                text, is_json = encode_output(getattr(result, "output", None))
                status, error, category, outcome = "succeeded", None, None, "ok"
            else:
                text, is_json, status, outcome = None, 0, "failed", "failed"
                error, category = _text(data.get("error")), _text(data.get("error_category"))
            state[_FINAL] = (
                item_id,
                state[_NEW],
                state[_COUNT],
                state[_START],
                text,
                is_json,
                error,
                category,
                _count(tokens.get("input_tokens")),
                _count(tokens.get("output_tokens")),
                _count(tokens.get("cached_input_tokens")),
                _real(data.get("cost")),
                now,
                status,
                duration,
            )
            if count:
                opened = state[_OPEN] if state[_COUNT] == count else None
                state[_OPEN] = None
                # A session's first attempt that started and succeeded within the segment
                # gets no row: the item's own row tells that story (see RunStore.item).
                if count != 1 or opened is None or outcome != "ok":
                    _close(segment, item_id, count, opened, now, outcome, error, category, None)
        elif event is _RETRY or event is _RATE_LIMIT:
            item_id, attempt = data["item_id"], data.get("attempt", 1)
            state = items.get(item_id)
            opened = None
            if state is not None and state[_COUNT] == attempt:
                opened, state[_OPEN] = state[_OPEN], None
            if event is _RETRY:
                outcome, category = "retry", _text(data.get("error_category"))
                wait = _real(data.get("wait"))
            else:
                outcome, category, wait = (
                    "rate_limited",
                    "rate_limit",
                    _real(data.get("suggested_wait")),
                )
            error = _text(data.get("error"))
            _close(segment, item_id, attempt, opened, now, outcome, error, category, wait)
        elif event is _BATCH_STARTED:
            segment.run_ops.append((RUN_STARTED, now))
        elif event is _BATCH_COMPLETED:
            segment.run_ops.append((RUN_COMPLETED, now))
    return segments


def _close(
    segment: Segment,
    item_id: str,
    attempt: int,
    started: float | None,
    now: float,
    outcome: str,
    error: str | None,
    category: str | None,
    wait: float | None,
) -> None:
    """End an attempt with ``outcome`` unless an earlier event already ended it."""
    fields = segment.attempts.get((item_id, attempt))
    if fields is None:
        segment.attempts[(item_id, attempt)] = [started, now, outcome, error, category, wait]
    elif fields[2] is None:
        fields[1:] = [now, outcome, error, category, wait]


def _count(value: Any) -> int:
    """A token count: ints as they are, anything else as a whole number or 0."""
    if type(value) is int:
        return value
    if isinstance(value, int | float) and math.isfinite(value):
        return int(value)
    return 0


def _real(value: Any) -> float | None:
    """A finite number or None (NaN would make the row unwritable)."""
    if value is None or (type(value) is float and math.isfinite(value)):
        return value
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _text(value: Any) -> str | None:
    """Text as SQLite can store it (None stays None; other values become their ``str``)."""
    if value is None:
        return None
    return clean_text(value if type(value) is str else str(value))
