"""Folding the engine's events into the rows one flush writes.

Each item's events within a flush are merged: an item that starts and finishes between two
flushes becomes ONE final item row (and no attempt row when its first attempt succeeded),
so the statements of a flush do not depend on their order. The rare item that starts a
new session within the same flush (a retry added while the run goes on) begins a new
:class:`Segment`, written after the first one in the same transaction.

Rows are kept flat, their values side by side in one list per kind of row (``WIDTH``
values a row, in the column order of :mod:`.statements`): a tuple per row would be one
more object for the garbage collector to count and walk for every item until its commit,
and the statements want the values in one list anyway. Whatever a payload holds, folding
never raises: text that SQLite could not store is repaired, odd numbers become 0 or NULL,
and an event that cannot be read at all is logged and skipped, so one strange result can
never block every later commit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from math import isfinite
from typing import Any

from ..observers.base import ProcessingEvent
from ..secrets import redact
from .encode import clean_text, encode_output

logger = logging.getLogger("async_batch_llm.store")

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

#: Values per row: running ``(item_id, new, attempts, session start)``; final (succeeded
#: or failed, see :func:`fold`); attempt ``(item_id, engine attempt, started, ended,
#: outcome, error, category, wait)``.
RUNNING_WIDTH, FINAL_WIDTH, ATTEMPT_WIDTH = 4, 13, 8

# An item under way in a segment: [new session? (1/0), highest attempt, session start,
# start of the attempt still open in this segment or None]. The usual item, in its first
# attempt, is only the time that attempt started (no list to make); and one finished in
# the segment is _DONE (its row is in ``succeeded`` or ``failed``).
_NEW, _COUNT, _START, _OPEN = range(4)
_DONE: Any = object()


class Segment:
    """The rows of one flush, or of the part of it before an item starts a new session."""

    __slots__ = ("attempts", "failed", "run_ops", "running", "succeeded")

    def __init__(self) -> None:
        self.running: dict[str, Any] = {}  # item_id -> state (see above)
        self.succeeded: list[Any] = []  # FINAL_WIDTH values a row
        self.failed: list[Any] = []
        # (item_id, engine attempt) -> [started, ended, outcome, error, category, wait]
        self.attempts: dict[tuple[str, int], list[Any]] = {}
        self.run_ops: list[tuple[str, float]] = []

    def rows(self) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        """``(running, succeeded, failed, attempt rows)``, each a flat list of row values.

        An attempt still under way gets an open row, so a crash leaves a trace that
        :meth:`RunStore.mark_interrupted` closes.
        """
        running: list[Any] = []
        attempts = self.attempts
        for item_id, state in self.running.items():
            if state is _DONE:
                continue
            if type(state) is not list:
                state = [1, 1, state, state]
            running += (item_id, state[_NEW], state[_COUNT], state[_START])
            if state[_OPEN] is not None:
                attempts.setdefault(
                    (item_id, state[_COUNT]), [state[_OPEN], None, None, None, None, None]
                )
        flat_attempts: list[Any] = []
        for (item_id, attempt), fields in attempts.items():
            flat_attempts += (item_id, attempt, *fields)
        return running, self.succeeded, self.failed, flat_attempts


def _next(segments: list[Segment]) -> Segment:
    segment = Segment()
    segments.append(segment)
    return segment


def _expand(running: dict[str, Any], item_id: str, state: Any) -> Any:
    """The list form of an item's state (a first attempt is kept as its start time alone)."""
    if state is None or state is _DONE or type(state) is list:
        return state
    state = running[item_id] = [1, 1, state, state]
    return state


def fold(events: list[Any], segments: list[Segment] | None = None) -> list[Segment]:
    """Fold events, in order, into segments of merged rows; returns the segments.

    ``events`` holds each event's three values side by side, ``[event, payload, time,
    event, payload, time, ...]``, as the observer appends them (no tuple per event).
    Given ``segments`` (what earlier events were folded into), folding goes on from the
    last of them: folding a run of events in pieces gives the same rows as all at once.

    A succeeded row is ``(item_id, new, attempts, session start, output, output_is_json,
    input, output and cached tokens, priced, cost, finished, duration)``; a failed row has
    ``error, category`` where output and output_is_json are. ``new`` and ``priced`` are 1
    or 0 and an unknown cost is 0.0 with ``priced`` 0: NULLs and bools cost ``sqlite3``
    ten times as much to bind as ints and floats do, so the usual row has none.
    """
    segments = segments or [Segment()]
    segment = segments[-1]
    running = segment.running
    skipped = 0
    flat = iter(events)
    for event, data, now in zip(flat, flat, flat, strict=True):
        try:
            if event is _STARTED:
                item_id, attempt = data["item_id"], data.get("attempt", 1)
                state = running.get(item_id)
                if state is not None and (attempt == 1 or state is _DONE):
                    segment = _next(segments)
                    running = segment.running
                    state = None
                if state is None:
                    running[item_id] = now if attempt == 1 else [0, attempt, None, now]
                else:
                    state = _expand(running, item_id, state)
                    state[_COUNT] = attempt
                    state[_OPEN] = now
            elif event is _COMPLETED or event is _FAILED:
                item_id = data["item_id"]
                state = running.get(item_id)
                if state is _DONE:
                    segment = _next(segments)
                    running = segment.running
                    state = None
                count = data.get("attempts") or 0
                duration = data.get("duration")
                if type(duration) is not float or not isfinite(duration):
                    duration = _real(duration)
                if state is None:
                    new, highest, opened = 0, count, None
                    start = now - duration if count == 0 and duration is not None else None
                elif type(state) is not list:  # a first attempt: its start time
                    new, start = 1, state
                    highest = count if count > 1 else 1
                    opened = state if highest == count else None
                else:
                    new, start = state[_NEW], state[_START]
                    highest = count if count > state[_COUNT] else state[_COUNT]
                    opened = state[_OPEN] if highest == count else None
                running[item_id] = _DONE
                result = data.get("result")
                tokens = data.get("tokens")
                if type(tokens) is not dict:
                    tokens = _tokens(tokens, result)
                tin = tokens.get("input_tokens", 0)
                if type(tin) is not int:
                    tin = _count(tin)
                tout = tokens.get("output_tokens", 0)
                if type(tout) is not int:
                    tout = _count(tout)
                tcached = tokens.get("cached_input_tokens", 0)
                if type(tcached) is not int:
                    tcached = _count(tcached)
                cost = data.get("cost")
                if cost is not None and (type(cost) is not float or not isfinite(cost)):
                    cost = _real(cost)
                text: str | None
                second: str | int | None
                if event is _COMPLETED:
                    output = getattr(result, "output", None)
                    if type(output) is str and output.isascii():
                        text, second = output, 0
                    else:
                        text, second = encode_output(output)
                    rows, outcome, error, category = segment.succeeded, "ok", None, None
                else:
                    error, category = _error(data.get("error")), _text(data.get("error_category"))
                    text, second = error, category  # a failed row holds these in those places
                    rows, outcome = segment.failed, "failed"
                rows += (
                    item_id,
                    new,
                    highest,
                    start,
                    text,
                    second,
                    tin,
                    tout,
                    tcached,
                    0 if cost is None else 1,
                    0.0 if cost is None else cost,
                    now,
                    duration,
                )
                # A session's first attempt that started and succeeded within the segment
                # gets no row: the item's own row tells that story (see RunStore.item).
                if count and (count != 1 or opened is None or outcome != "ok"):
                    _close(segment, item_id, count, opened, now, outcome, error, category, None)
            elif event is _RETRY or event is _RATE_LIMIT:
                item_id, attempt = data["item_id"], data.get("attempt", 1)
                state = _expand(running, item_id, running.get(item_id))
                opened = None
                if type(state) is list and state[_COUNT] == attempt:
                    opened, state[_OPEN] = state[_OPEN], None
                if event is _RETRY:
                    outcome, category = "retry", _text(data.get("error_category"))
                    wait = _real(data.get("wait"))
                else:
                    outcome, category = "rate_limited", "rate_limit"
                    wait = _real(data.get("suggested_wait"))
                error = _error(data.get("error"))
                _close(segment, item_id, attempt, opened, now, outcome, error, category, wait)
            elif event is _BATCH_STARTED:
                segment.run_ops.append((RUN_STARTED, now))
            elif event is _BATCH_COMPLETED:
                segment.run_ops.append((RUN_COMPLETED, now))
        except Exception:
            if not skipped:
                logger.exception("run store: an unreadable %s event was not recorded", event)
            skipped += 1
    if skipped > 1:
        logger.error("run store: %d unreadable events were not recorded", skipped)
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


def _tokens(tokens: Any, result: Any) -> Mapping[str, Any]:
    """The token counts of a payload: its own, else its result's, else none."""
    if tokens is None:
        tokens = getattr(result, "token_usage", None)
    return tokens if isinstance(tokens, Mapping) else {}


def _count(value: Any) -> int:
    """A token count: ints as they are, anything else as a whole number or 0."""
    if type(value) is int:
        return value
    if isinstance(value, int | float) and isfinite(value):
        return int(value)
    return 0


def _real(value: Any) -> float | None:
    """A finite number or None (NaN would make the row unwritable)."""
    if value is None or (type(value) is float and isfinite(value)):
        return value
    if isinstance(value, int | float) and isfinite(value):
        return float(value)
    return None


def _error(value: Any) -> str | None:
    """An error's text without any key a provider echoed: the last gate before the disk."""
    text = _text(value)
    return None if text is None else redact(text)


def _text(value: Any) -> str | None:
    """Text as SQLite can store it (None stays None; other values become their ``str``)."""
    if value is None:
        return None
    return clean_text(value if type(value) is str else str(value))
