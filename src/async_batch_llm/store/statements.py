"""The SQL of a flush, and writing folded segments with it: many rows per statement.

Each statement takes a chunk of rows as one multi-row ``VALUES`` list (``UPDATE items ...
FROM (VALUES (?, ...), (?, ...), ...)``), not one row per ``executemany`` step. Why:
``sqlite3`` lets go of the GIL around every step, so ``executemany`` needs the GIL back
once per row, and while the engine keeps the interpreter busy each of those hand-offs
waits for the loop (measured: ~40 us per row under a dry run vs ~17 us of work). One
statement per chunk binds its parameters in one go and runs the whole chunk without the
GIL: the writer's thread needs the GIL back once per chunk of up to ``CHUNK_ROWS`` rows.
Chunks are padded to a power of two with rows whose id is empty (no item has one), so a
handful of statement texts covers every flush and each is parsed once (``sqlite3``'s
statement cache). The rows hold no NULL or bool where they can help it (see
:func:`.rows.fold`): ``sqlite3`` binds those ten times slower than ints and floats.

Why not one statement per flush with the rows as one JSON parameter (``json_each``)? It
was measured: it also spares the hand-offs, but costs twice the CPU per row (about 28 vs
14 us here) and came out slower end to end.

Run totals are counted here, not by a trigger (an item trigger, even one that never
fires, costs every item update a third more): each final row *arrives* in its status
(+1, its tokens and cost added), and an item that was already finished also *leaves* its
old status. Results for items the store does not hold change nothing and cause a recount.
"""

from __future__ import annotations

import logging
import sqlite3
from functools import lru_cache
from typing import Any

from .rows import (
    ATTEMPT_WIDTH,
    FINAL_WIDTH,
    RUN_COMPLETED,
    RUN_STARTED,
    RUNNING_WIDTH,
    Segment,
)
from .schema import RECOUNT_SQL

logger = logging.getLogger("async_batch_llm.store")

RUNNING_FIELDS = ("item_id", "new", "n", "start")
# Succeeded and failed rows share one layout (see rows.fold): the output, or the error.
_TOTALS_FIELDS = ("tin", "tout", "tcached", "priced", "cost", "finished", "duration")
SUCCEEDED_FIELDS = ("item_id", "new", "n", "start", "output", "output_json", *_TOTALS_FIELDS)
FAILED_FIELDS = ("item_id", "new", "n", "start", "error", "category", *_TOTALS_FIELDS)
# What each kind of final row does not carry, as SQL constants.
_SUCCEEDED_CONSTANTS = {"status": "'succeeded'", "error": "NULL", "category": "NULL"}
_FAILED_CONSTANTS = {"status": "'failed'", "output": "NULL", "output_json": "0"}
#: Where a final row holds its input/output/cached tokens, whether it is priced, its cost.
TIN, TOUT, TCACHED, PRICED, COST = range(6, 11)
ATTEMPT_FIELDS = (
    "item_id", "attempt", "started", "ended", "outcome", "error", "category", "wait",
    "status", "limits", "prompt", "parameters",
)  # fmt: skip
assert len(SUCCEEDED_FIELDS) == len(FAILED_FIELDS) == FINAL_WIDTH
assert (len(RUNNING_FIELDS), len(ATTEMPT_FIELDS)) == (RUNNING_WIDTH, ATTEMPT_WIDTH)

# A session is one pass of the engine over an item (attempts 1..n). ``attempt_base`` holds
# the attempts of earlier sessions, set when a session's first attempt starts, so attempt
# numbers go on across resumes and retries by hand: stored attempt = base + engine attempt.
_BASE = "CASE WHEN {new} THEN items.attempts ELSE items.attempt_base END"

_RUNNING_SET = f"""
  status = 'running',
  attempt_base = {_BASE},
  attempts = MAX(items.attempts, {_BASE} + {{n}}),
  started_at = CASE WHEN {{new}} THEN {{start}} ELSE items.started_at END,
  output = CASE WHEN {{new}} THEN NULL ELSE items.output END,
  output_json = CASE WHEN {{new}} THEN 0 ELSE items.output_json END,
  error = CASE WHEN {{new}} THEN NULL ELSE items.error END,
  error_category = CASE WHEN {{new}} THEN NULL ELSE items.error_category END,
  finished_at = CASE WHEN {{new}} THEN NULL ELSE items.finished_at END,
  duration = CASE WHEN {{new}} THEN NULL ELSE items.duration END"""

# Tokens and cost add up over sessions: a failed session's tokens were paid for.
_FINAL_SET = f"""
  status = {{status}},
  attempt_base = {_BASE},
  attempts = MAX(items.attempts, {_BASE} + {{n}}),
  started_at = COALESCE({{start}}, items.started_at),
  output = {{output}}, output_json = {{output_json}},
  error = {{error}}, error_category = {{category}},
  input_tokens = items.input_tokens + {{tin}},
  output_tokens = items.output_tokens + {{tout}},
  cached_tokens = items.cached_tokens + {{tcached}},
  cost = CASE WHEN {{priced}} THEN COALESCE(items.cost, 0) + {{cost}} ELSE items.cost END,
  finished_at = {{finished}}, duration = {{duration}}"""

# The usual case: the item is not finished. The rare one that is (sent again without a
# reset) is updated by the "from" forms, once per old status, so it can leave its count.
_NOT_FINAL = "items.status <> 'succeeded' AND items.status <> 'failed'"
_RUNNING_FROM = "items.status = '{old}'"
# ``finished_at IS NOT`` skips rows the first statement has just written.
_FINAL_FROM = "items.status = '{old}' AND items.finished_at IS NOT {finished}"

# Upsert, so an attempt started in one flush is closed in a later one; the first outcome
# wins (a rate-limited last attempt stays rate_limited when the item then fails).
_ATTEMPT_CONFLICT = """
ON CONFLICT (run_id, item_id, attempt) DO UPDATE SET
  started_at = COALESCE(attempts.started_at, excluded.started_at),
  ended_at = CASE WHEN attempts.outcome IS NULL THEN excluded.ended_at
                  ELSE attempts.ended_at END,
  duration = CASE WHEN attempts.outcome IS NULL
                  THEN excluded.ended_at - COALESCE(attempts.started_at, excluded.started_at)
                  ELSE attempts.duration END,
  error = CASE WHEN attempts.outcome IS NULL THEN excluded.error ELSE attempts.error END,
  error_category = CASE WHEN attempts.outcome IS NULL THEN excluded.error_category
                        ELSE attempts.error_category END,
  wait = CASE WHEN attempts.outcome IS NULL THEN excluded.wait ELSE attempts.wait END,
  status = CASE WHEN attempts.outcome IS NULL THEN excluded.status ELSE attempts.status END,
  rate_limits = CASE WHEN attempts.outcome IS NULL THEN excluded.rate_limits
                     ELSE attempts.rate_limits END,
  prompt = COALESCE(attempts.prompt, excluded.prompt),
  parameters = COALESCE(attempts.parameters, excluded.parameters),
  outcome = COALESCE(attempts.outcome, excluded.outcome)"""

_ATTEMPT_VALUES = (
    "items.run_id, items.item_id, items.attempt_base + {attempt}, {started}, {ended}, "
    "{ended} - {started}, {outcome}, {error}, {category}, {wait}, {status}, {limits}, "
    "{prompt}, {parameters}"
)
_ATTEMPT_INSERT = (
    "INSERT INTO attempts (run_id, item_id, attempt, started_at, ended_at, duration, "
    "outcome, error, error_category, wait, status, rate_limits, prompt, parameters) "
)

# A succeeded item sent again (a replay) starts a new session: the attempt that succeeded
# keeps a row of its own first, if it had none (see rows.fold: a first attempt that succeeded
# is told by the item row alone, which the new session overwrites). ``v.column2``: "new".
KEEP_SUCCESS_SQL = (
    "INSERT OR IGNORE INTO attempts (run_id, item_id, attempt, started_at, ended_at, "
    "duration, outcome) SELECT items.run_id, items.item_id, items.attempts, items.started_at, "
    "items.finished_at, items.duration, 'ok' FROM (VALUES {values}) AS v, items "
    "WHERE items.run_id = ? AND items.item_id = v.column1 AND v.column2 "
    "AND items.status = 'succeeded' AND items.attempts > 0"
)

RUN_TOTALS_SQL = """
UPDATE runs SET
  succeeded = succeeded + ?1, failed = failed + ?2,
  input_tokens = input_tokens + ?3, output_tokens = output_tokens + ?4,
  cached_tokens = cached_tokens + ?5,
  cost = CASE WHEN ?6 IS NULL THEN cost ELSE COALESCE(cost, 0) + ?6 END
WHERE id = ?7
"""

RUN_STARTED_SQL = """
UPDATE runs SET status = 'running', started_at = COALESCE(started_at, ?1), finished_at = NULL
WHERE id = ?2
"""

# A batch that ends with items not done (a cancel, or only part of the run was sent)
# leaves the run resumable: interrupted, not completed.
RUN_COMPLETED_SQL = """
UPDATE runs SET
  finished_at = ?1,
  status = CASE WHEN EXISTS (SELECT 1 FROM items WHERE run_id = ?2 AND status <> 'succeeded'
                             AND (status = 'pending' OR status = 'running'
                                  OR status = 'interrupted'))
           THEN 'interrupted' ELSE 'completed' END
WHERE id = ?2
"""

_RUN_OPS = {RUN_STARTED: RUN_STARTED_SQL, RUN_COMPLETED: RUN_COMPLETED_SQL}


#: Most rows per statement: 2048 rows of 13 values fit SQLite's default limit of 32,766
#: parameters (a build that allows fewer gets smaller chunks, see :func:`chunk_rows`).
CHUNK_ROWS = 2048
#: The smallest chunk: one, two and four rows share the statement of eight.
_MIN_ROWS = 8


def _columns(fields: tuple[str, ...]) -> dict[str, str]:
    """Each field's column of the ``VALUES`` list: ``v.column1``, ``v.column2``, ..."""
    return {field: f"v.column{number}" for number, field in enumerate(fields, 1)}


def _update(
    set_clause: str, fields: tuple[str, ...], guard: str, constants: dict[str, str] | None = None
) -> str:
    """An item update over a ``VALUES`` list (``{values}``); the run id is the last parameter."""
    columns = {**_columns(fields), **(constants or {})}
    return (
        f"UPDATE items SET {set_clause.format(**columns)} FROM (VALUES {{values}}) AS v "
        f"WHERE items.run_id = ? AND items.item_id = v.column1 AND {guard.format(**columns)}"
    )


_OLD_STATUSES = ("succeeded", "failed")
_FINAL_KINDS = {
    "succeeded": (SUCCEEDED_FIELDS, _SUCCEEDED_CONSTANTS),
    "failed": (FAILED_FIELDS, _FAILED_CONSTANTS),
}
ITEM_RUNNING_SQL = _update(_RUNNING_SET, RUNNING_FIELDS, _NOT_FINAL)
ITEM_RUNNING_FROM_SQL = {
    old: _update(_RUNNING_SET, RUNNING_FIELDS, _RUNNING_FROM.replace("{old}", old))
    for old in _OLD_STATUSES
}
#: ``ITEM_FINAL_SQL[status]``: record results; ``ITEM_FINAL_FROM_SQL[status][old]``: the same
#: for items already finished with status ``old``.
ITEM_FINAL_SQL = {
    status: _update(_FINAL_SET, fields, _NOT_FINAL, constants)
    for status, (fields, constants) in _FINAL_KINDS.items()
}
ITEM_FINAL_FROM_SQL = {
    status: {
        old: _update(_FINAL_SET, fields, _FINAL_FROM.replace("{old}", old), constants)
        for old in _OLD_STATUSES
    }
    for status, (fields, constants) in _FINAL_KINDS.items()
}
# Items the store does not hold find no row to join: skipped, never an error.
ATTEMPT_SQL = (
    f"{_ATTEMPT_INSERT}SELECT {_ATTEMPT_VALUES.format(**_columns(ATTEMPT_FIELDS))} "
    "FROM (VALUES {values}) AS v, items "
    f"WHERE items.run_id = ? AND items.item_id = v.column1{_ATTEMPT_CONFLICT}"
)


@lru_cache(maxsize=128)
def _sql(template: str, width: int, rows: int) -> str:
    """``template`` with a ``VALUES`` list of ``rows`` rows of ``width`` parameters."""
    row = "(" + ", ".join("?" * width) + ")"
    return template.replace("{values}", ", ".join([row] * rows))


def chunk_rows(db: sqlite3.Connection, width: int) -> int:
    """Rows per statement for rows of ``width`` values: a power of two within SQLite's limit."""
    limit = (db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - 1) // width
    rows = CHUNK_ROWS
    while rows > limit and rows > 1:
        rows //= 2
    return rows


def _apply(db: sqlite3.Connection, sql: str, values: list[Any], width: int, run_id: str) -> int:
    """Run ``sql`` for every row of ``values`` (``width`` values a row), a chunk per
    statement; returns how many items it changed."""
    count = len(values) // width
    most = chunk_rows(db, width)
    changed = 0
    for first in range(0, count, most):
        rows = min(most, count - first)
        size = min(most, max(_MIN_ROWS, 1 << (rows - 1).bit_length()))
        params = values[first * width : (first + rows) * width]
        if size > rows:  # an empty id matches no item (ingest refuses empty ids)
            params += ("", *(0,) * (width - 1)) * (size - rows)
        params.append(run_id)
        changed += max(db.execute(_sql(sql, width, size), params).rowcount, 0)
    return changed


class _Totals:
    """What a flush adds to its run: results arrived per status, their tokens and cost."""

    __slots__ = ("arrived", "cost", "recount", "tokens_cached", "tokens_in", "tokens_out")

    def __init__(self) -> None:
        self.arrived = {"succeeded": 0, "failed": 0}
        self.tokens_in = self.tokens_out = self.tokens_cached = 0
        self.cost: float | None = None
        self.recount = False  # results for items the store does not hold


def write_segments(db: sqlite3.Connection, run_id: str, segments: list[Segment]) -> None:
    """Apply folded segments inside the caller's transaction, in order, then the run totals."""
    totals = _Totals()
    for segment in segments:
        running, succeeded, failed, attempts = segment.rows()
        _write_running(db, run_id, running, totals)
        _write_final(db, run_id, "succeeded", succeeded, totals)
        _write_final(db, run_id, "failed", failed, totals)
        if attempts:
            _apply(db, ATTEMPT_SQL, attempts, ATTEMPT_WIDTH, run_id)
        for op, now in segment.run_ops:
            db.execute(_RUN_OPS[op], (now, run_id))
    _write_totals(db, run_id, totals)


def _write_running(db: sqlite3.Connection, run_id: str, rows: list[Any], totals: _Totals) -> None:
    """Mark items under way (a finished item sent again leaves its old status)."""
    count = len(rows) // RUNNING_WIDTH
    if count and _apply(db, ITEM_RUNNING_SQL, rows, RUNNING_WIDTH, run_id) < count:
        # Some were finished (sent again without a reset): they leave that status.
        _apply(db, KEEP_SUCCESS_SQL, rows, RUNNING_WIDTH, run_id)
        for old in _OLD_STATUSES:
            totals.arrived[old] -= _apply(
                db, ITEM_RUNNING_FROM_SQL[old], rows, RUNNING_WIDTH, run_id
            )


def _write_final(
    db: sqlite3.Connection, run_id: str, status: str, rows: list[Any], totals: _Totals
) -> None:
    """Record results in ``status`` and add them to the run's totals."""
    count = len(rows) // FINAL_WIDTH
    if not count:
        return
    applied = _apply(db, ITEM_FINAL_SQL[status], rows, FINAL_WIDTH, run_id)
    if applied < count:
        _apply(db, KEEP_SUCCESS_SQL, rows, FINAL_WIDTH, run_id)
        for old in _OLD_STATUSES:
            left = _apply(db, ITEM_FINAL_FROM_SQL[status][old], rows, FINAL_WIDTH, run_id)
            totals.arrived[old] -= left
            applied += left
        totals.recount = totals.recount or applied < count
    totals.arrived[status] += count
    totals.tokens_in += sum(rows[TIN::FINAL_WIDTH])
    totals.tokens_out += sum(rows[TOUT::FINAL_WIDTH])
    totals.tokens_cached += sum(rows[TCACHED::FINAL_WIDTH])
    if any(rows[PRICED::FINAL_WIDTH]):
        totals.cost = (totals.cost or 0.0) + sum(rows[COST::FINAL_WIDTH])


def _write_totals(db: sqlite3.Connection, run_id: str, totals: _Totals) -> None:
    """Add the flush's totals to its run (or recount it, if some results found no item)."""
    tokens_in, tokens_out, tokens_cached = totals.tokens_in, totals.tokens_out, totals.tokens_cached
    cost = totals.cost
    succeeded_total, failed_total = totals.arrived["succeeded"], totals.arrived["failed"]
    if totals.recount:
        db.execute(RECOUNT_SQL + " WHERE id = ?", (run_id,))
        logger.warning("run store: results for items run %s does not hold were ignored", run_id)
    elif (
        succeeded_total or failed_total or tokens_in or tokens_out or tokens_cached
    ) or cost is not None:
        db.execute(
            RUN_TOTALS_SQL,
            (succeeded_total, failed_total, tokens_in, tokens_out, tokens_cached, cost, run_id),
        )
