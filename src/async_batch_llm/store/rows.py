"""Folding the engine's events into the rows one flush writes.

Each item's events within a flush are merged: an item that starts and finishes between two
flushes becomes ONE final item row (and no attempt row when its first attempt succeeded),
so the statements of a flush do not depend on their order. The rare item that starts a
new session within the same flush (a retry added while the run goes on) begins a new
:class:`Segment`, written after the first one in the same transaction.

:func:`fold` dispatches each event to the function that folds its kind, reading the
payload through its ``TypedDict`` (:mod:`..observers.payloads`), so a renamed key fails
type checking here. The rows themselves are flat lists of values, a list per kind of row,
in the column order of :mod:`.statements` (which binds them as one ``VALUES`` list per
chunk). Whatever a payload holds, folding never raises: text that SQLite could not store
is repaired, odd numbers become 0 or NULL, and an event that cannot be read at all is
logged and skipped, so one strange result can never block every later commit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from math import isfinite
from typing import Any

from ..observers import payloads as p
from ..observers.base import ProcessingEvent
from ..secrets import redact
from .encode import clean_text, encode_output

logger = logging.getLogger("async_batch_llm.store")

#: Run-level operations a segment may carry, applied after its item rows.
RUN_STARTED = "started"
RUN_COMPLETED = "completed"

#: Values per row: running ``(item_id, new, attempts, session start)``; final (see
#: :func:`_fold_final`); attempt ``(item_id, engine attempt, started, ended, outcome,
#: error, category, wait, status, rate limits JSON, replayed prompt, replayed parameters
#: JSON)``.
RUNNING_WIDTH, FINAL_WIDTH, ATTEMPT_WIDTH = 4, 13, 12

#: What a replay sent, by item id, until its session ends: ``(prompt, parameters JSON)``.
Requests = dict[str, tuple[str | None, str | None]]


#: One event as the store's observer keeps it until the next fold: ``(kind, payload, the
#: wall-clock time it was seen)``.
Event = tuple[ProcessingEvent, Mapping[str, Any], float]


@dataclass(slots=True)
class _Session:
    """An item under way in a segment: one pass of the engine over it (attempts 1..n)."""

    new: bool  # the session's first attempt started in this segment
    attempt: int  # the highest engine attempt seen
    start: float | None  # when the session began, if seen here
    open_since: float | None  # start of the attempt still open in this segment


@dataclass(slots=True)
class _Attempt:
    """One attempt's row: open (``outcome`` None) until an event ends it."""

    started: float | None
    ended: float | None = None
    outcome: str | None = None
    error: str | None = None
    category: str | None = None
    wait: float | None = None
    status: int | None = None  # the HTTP status of a failed attempt, when it had one
    limits: str | None = None  # the provider's rate-limit snapshot (JSON)
    prompt: str | None = None  # a replay's own prompt (None: the item's)
    parameters: str | None = None  # a replay's own parameters (JSON; None: the run's)


class Segment:
    """The rows of one flush, or of the part of it before an item starts a new session."""

    __slots__ = ("attempts", "failed", "finished", "run_ops", "running", "succeeded")

    def __init__(self) -> None:
        self.running: dict[str, _Session] = {}
        self.finished: set[str] = set()  # items whose final row is in this segment
        self.succeeded: list[Any] = []  # FINAL_WIDTH values a row
        self.failed: list[Any] = []
        self.attempts: dict[tuple[str, int], _Attempt] = {}  # (item_id, engine attempt)
        self.run_ops: list[tuple[str, float]] = []

    def rows(self) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        """``(running, succeeded, failed, attempt rows)``, each a flat list of row values.

        An attempt still under way gets an open row, so a crash leaves a trace that
        :meth:`RunStore.mark_interrupted` closes.
        """
        running: list[Any] = []
        for item_id, session in self.running.items():
            running += (item_id, int(session.new), session.attempt, session.start)
            if session.open_since is not None:
                self.attempts.setdefault((item_id, session.attempt), _Attempt(session.open_since))
        attempts: list[Any] = []
        for (item_id, number), row in self.attempts.items():
            attempts += (item_id, number, row.started, row.ended, row.outcome)
            attempts += (row.error, row.category, row.wait, row.status, row.limits)
            attempts += (row.prompt, row.parameters)
        return running, self.succeeded, self.failed, attempts

    def close_attempt(self, item_id: str, number: int, ended: _Attempt) -> None:
        """End an attempt with ``ended``'s outcome unless an earlier event already ended it."""
        row = self.attempts.get((item_id, number))
        if row is None:
            self.attempts[(item_id, number)] = ended
        elif row.outcome is None:
            ended.started = row.started
            self.attempts[(item_id, number)] = ended


class _Folding:
    """Segments being folded into: the last one takes new events."""

    __slots__ = ("requests", "segment", "segments")

    def __init__(self, segments: list[Segment], requests: Requests) -> None:
        self.segments = segments
        self.segment = segments[-1]
        self.requests = requests

    def replayed(self, item_id: str, ended: _Attempt) -> None:
        """Mark an attempt of a replay with what it sent (a no-op for every other item)."""
        request = self.requests.get(item_id)
        if request is not None:
            ended.prompt, ended.parameters = request

    def next_segment(self) -> Segment:
        """Start a new segment: an item begins a new session within this flush."""
        self.segment = Segment()
        self.segments.append(self.segment)
        return self.segment


def fold(
    events: Iterable[Event],
    segments: list[Segment] | None = None,
    requests: Requests | None = None,
) -> list[Segment]:
    """Fold events, in order, into segments of merged rows; returns the segments.

    Given ``segments`` (what earlier events were folded into), folding goes on from the
    last of them: folding a run of events in pieces gives the same rows as all at once.
    ``requests`` holds what replays sent (see ``StoreObserver.note_request``): their
    attempts record it, and an item's entry goes once its session ends.
    """
    folding = _Folding(segments or [Segment()], {} if requests is None else requests)
    skipped = 0
    for kind, payload, at in events:
        folder = _FOLDERS.get(kind)
        if folder is None:
            continue
        try:
            folder(folding, payload, at)
        except Exception:
            if not skipped:
                logger.exception("run store: an unreadable %s event was not recorded", kind)
            skipped += 1
    if skipped > 1:
        logger.error("run store: %d unreadable events were not recorded", skipped)
    return folding.segments


def _fold_started(folding: _Folding, data: p.ItemStarted, now: float) -> None:
    """An attempt starts: open it, beginning a new segment if it begins a new session."""
    item_id, attempt = data["item_id"], data.get("attempt", 1)
    segment = folding.segment
    if item_id in segment.finished or (attempt == 1 and item_id in segment.running):
        segment = folding.next_segment()
    session = segment.running.get(item_id)
    if session is None:
        first = attempt == 1
        segment.running[item_id] = _Session(first, attempt, now if first else None, now)
    else:
        session.attempt = attempt
        session.open_since = now


def _fold_completed(folding: _Folding, data: p.ItemCompleted, now: float) -> None:
    output = getattr(data.get("result"), "output", None)
    text: str | None
    second: str | int | None
    if type(output) is str and output.isascii():
        text, second = output, 0
    else:
        text, second = encode_output(output)
    _fold_final(folding, data, now, outcome="ok", text=text, second=second)


def _fold_failed(folding: _Folding, data: p.ItemFailed, now: float) -> None:
    error = _error(data.get("error"))
    category = _text(data.get("error_category"))
    _fold_final(folding, data, now, outcome="failed", text=error, second=category)


def _fold_final(
    folding: _Folding,
    data: p.ItemCompleted | p.ItemFailed,
    now: float,
    *,
    outcome: str,
    text: str | None,
    second: str | int | None,
) -> None:
    """An item's result: its final row, and the row of the attempt that ended it.

    A session's first attempt that started and succeeded within the segment gets no
    attempt row: the item's own row tells that story (see ``RunStore.item``).
    """
    item_id = data["item_id"]
    segment = folding.segment
    if item_id in segment.finished:
        segment = folding.next_segment()
    count = data.get("attempts") or 0
    duration = _real(data.get("duration"))
    session = segment.running.pop(item_id, None)
    segment.finished.add(item_id)
    if session is None:
        new, highest, opened = False, count, None
        start = now - duration if count == 0 and duration is not None else None
    else:
        new, start = session.new, session.start
        highest = max(count, session.attempt)
        opened = session.open_since if highest == count else None
    usage = _usage(data.get("tokens"), data.get("result"))
    cost = _real(data.get("cost"))
    rows = segment.succeeded if outcome == "ok" else segment.failed
    rows += (item_id, int(new), highest, start, text, second, *usage)
    rows += (0 if cost is None else 1, 0.0 if cost is None else cost, now, duration)
    replay = folding.requests.pop(item_id, None) if folding.requests else None
    if count and (count != 1 or opened is None or outcome != "ok" or replay is not None):
        error, category = (None, None) if outcome == "ok" else (text, second)
        ended = _Attempt(opened, now, outcome, error, _text(category))
        _attempt_facts(ended, data)
        if replay is not None:
            ended.prompt, ended.parameters = replay
        segment.close_attempt(item_id, count, ended)


def _fold_retry(folding: _Folding, data: p.ItemRetry, now: float) -> None:
    category = _text(data.get("error_category"))
    ended = _Attempt(None, now, "retry", _error(data.get("error")), category)
    ended.wait = _real(data.get("wait"))
    _attempt_facts(ended, data)
    if folding.requests:
        folding.replayed(data["item_id"], ended)
    _end_attempt(folding.segment, data["item_id"], data.get("attempt", 1), ended)


def _fold_rate_limit(folding: _Folding, data: p.RateLimitHit, now: float) -> None:
    ended = _Attempt(None, now, "rate_limited", _error(data.get("error")), "rate_limit")
    ended.wait = _real(data.get("suggested_wait"))
    _attempt_facts(ended, data)
    if folding.requests:
        folding.replayed(data["item_id"], ended)
    _end_attempt(folding.segment, data["item_id"], data.get("attempt", 1), ended)


def _attempt_facts(ended: _Attempt, data: Mapping[str, Any]) -> None:
    """The attempt's HTTP status and rate-limit snapshot, when its event carries them."""
    status = data.get("status")
    if type(status) is int:
        ended.status = status
    limits = data.get("rate_limits")
    if limits:
        ended.limits = _limits_json(limits)


def _end_attempt(segment: Segment, item_id: str, attempt: int, ended: _Attempt) -> None:
    """An attempt failed and the item goes on: close the attempt's row."""
    session = segment.running.get(item_id)
    if session is not None and session.attempt == attempt:
        ended.started, session.open_since = session.open_since, None
    segment.close_attempt(item_id, attempt, ended)


def _fold_batch_started(folding: _Folding, data: p.BatchStarted, now: float) -> None:
    folding.segment.run_ops.append((RUN_STARTED, now))


def _fold_batch_completed(folding: _Folding, data: p.BatchCompleted, now: float) -> None:
    folding.segment.run_ops.append((RUN_COMPLETED, now))


#: How each event the store records is folded (the payload is read as its TypedDict).
_FOLDERS: dict[ProcessingEvent, Callable[[_Folding, Any, float], None]] = {
    ProcessingEvent.ITEM_STARTED: _fold_started,
    ProcessingEvent.ITEM_COMPLETED: _fold_completed,
    ProcessingEvent.ITEM_FAILED: _fold_failed,
    ProcessingEvent.ITEM_RETRY: _fold_retry,
    ProcessingEvent.RATE_LIMIT_HIT: _fold_rate_limit,
    ProcessingEvent.BATCH_STARTED: _fold_batch_started,
    ProcessingEvent.BATCH_COMPLETED: _fold_batch_completed,
}
#: The events the store records (its observer asks for these alone).
FOLDED_EVENTS = frozenset(_FOLDERS)


def _usage(tokens: Any, result: Any) -> tuple[int, int, int]:
    """``(input, output, cached)`` tokens of a payload: its own, else its result's, else 0."""
    if tokens is None:
        tokens = getattr(result, "token_usage", None)
    if not isinstance(tokens, Mapping):
        return 0, 0, 0
    return (
        _count(tokens.get("input_tokens", 0)),
        _count(tokens.get("output_tokens", 0)),
        _count(tokens.get("cached_input_tokens", 0)),
    )


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


def _limits_json(limits: Any) -> str | None:
    """A rate-limit snapshot as JSON text (numbers only; None when it cannot be written)."""
    try:
        return json.dumps(dict(limits), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str | None:
    """Text as SQLite can store it (None stays None; other values become their ``str``)."""
    if value is None:
        return None
    return clean_text(value if type(value) is str else str(value))
