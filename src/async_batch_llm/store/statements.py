"""The SQL of a flush, and writing folded segments with it (``executemany`` per statement).

Why not one statement per flush (the rows as one JSON parameter, ``UPDATE ... FROM
json_each``)? It was measured: it spares the connection's thread the GIL between rows, but
costs twice the CPU per row (about 28 vs 14 us here) and came out slower end to end.

Run totals are counted here, not by a trigger (an item trigger, even one that never
fires, costs every item update a third more): each final row *arrives* in its status
(+1, its tokens and cost added), and an item that was already finished also *leaves* its
old status. Results for items the store does not hold change nothing and cause a recount.
"""

from __future__ import annotations

import logging
from typing import Any

import aiosqlite

from .rows import RUN_COMPLETED, RUN_STARTED, Segment
from .schema import RECOUNT_SQL

logger = logging.getLogger("async_batch_llm.store")

RUNNING_FIELDS = ("item_id", "new", "n", "start")
FINAL_FIELDS = (
    "item_id",
    "new",
    "n",
    "start",
    "output",
    "output_json",
    "error",
    "category",
    "tin",
    "tout",
    "tcached",
    "cost",
    "finished",
    "status",
    "duration",
)
ATTEMPT_FIELDS = ("item_id", "attempt", "started", "ended", "outcome", "error", "category", "wait")

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
  cost = CASE WHEN {{cost}} IS NULL THEN items.cost ELSE COALESCE(items.cost, 0) + {{cost}} END,
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
  outcome = COALESCE(attempts.outcome, excluded.outcome)"""

_ATTEMPT_VALUES = (
    "items.run_id, items.item_id, items.attempt_base + {attempt}, {started}, {ended}, "
    "{ended} - {started}, {outcome}, {error}, {category}, {wait}"
)
_ATTEMPT_INSERT = (
    "INSERT INTO attempts (run_id, item_id, attempt, started_at, ended_at, duration, "
    "outcome, error, error_category, wait) "
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


def _params(fields: tuple[str, ...]) -> dict[str, str]:
    """Each field's parameter: ``?1``, ``?2``, ... in order (the run id comes after them)."""
    return {field: f"?{number}" for number, field in enumerate(fields, 1)}


def _update(set_clause: str, fields: tuple[str, ...], guard: str) -> str:
    params = _params(fields)
    return (
        f"UPDATE items SET {set_clause.format(**params)} "
        f"WHERE items.run_id = ?{len(fields) + 1} AND items.item_id = ?1 "
        f"AND {guard.format(**params)}"
    )


ITEM_RUNNING_SQL = _update(_RUNNING_SET, RUNNING_FIELDS, _NOT_FINAL)
ITEM_FINAL_SQL = _update(_FINAL_SET, FINAL_FIELDS, _NOT_FINAL)
ITEM_RUNNING_FROM_SQL = {
    old: _update(_RUNNING_SET, RUNNING_FIELDS, _RUNNING_FROM.replace("{old}", old))
    for old in ("succeeded", "failed")
}
ITEM_FINAL_FROM_SQL = {
    old: _update(_FINAL_SET, FINAL_FIELDS, _FINAL_FROM.replace("{old}", old))
    for old in ("succeeded", "failed")
}
# Items the store does not hold find no row to select from: skipped, never an error.
ATTEMPT_SQL = (
    f"{_ATTEMPT_INSERT}SELECT {_ATTEMPT_VALUES.format(**_params(ATTEMPT_FIELDS))} FROM items "
    f"WHERE items.run_id = ?{len(ATTEMPT_FIELDS) + 1} AND items.item_id = ?1{_ATTEMPT_CONFLICT}"
)


async def _apply(
    db: aiosqlite.Connection, sql: str, rows: list[tuple[Any, ...]], run_id: str
) -> int:
    """Run ``sql`` for each row; returns how many items it changed."""
    cursor = await db.executemany(sql, [(*row, run_id) for row in rows])
    return max(cursor.rowcount, 0)


async def write_segments(db: aiosqlite.Connection, run_id: str, segments: list[Segment]) -> None:
    """Apply folded segments inside the caller's transaction, in order, then the run totals."""
    succeeded = failed = tokens_in = tokens_out = tokens_cached = 0
    cost: float | None = None
    recount = False
    for segment in segments:
        running, final, attempts = segment.rows()
        if running and await _apply(db, ITEM_RUNNING_SQL, running, run_id) < len(running):
            # Some were finished (sent again without a reset): they leave that status.
            succeeded -= await _apply(db, ITEM_RUNNING_FROM_SQL["succeeded"], running, run_id)
            failed -= await _apply(db, ITEM_RUNNING_FROM_SQL["failed"], running, run_id)
        if final:
            applied = await _apply(db, ITEM_FINAL_SQL, final, run_id)
            if applied < len(final):
                left_succeeded = await _apply(db, ITEM_FINAL_FROM_SQL["succeeded"], final, run_id)
                left_failed = await _apply(db, ITEM_FINAL_FROM_SQL["failed"], final, run_id)
                succeeded -= left_succeeded
                failed -= left_failed
                recount = recount or applied + left_succeeded + left_failed < len(final)
            for row in final:
                if row[13] == "succeeded":
                    succeeded += 1
                else:
                    failed += 1
                tokens_in += row[8]
                tokens_out += row[9]
                tokens_cached += row[10]
                if row[11] is not None:
                    cost = (cost or 0.0) + row[11]
        if attempts:
            await _apply(db, ATTEMPT_SQL, attempts, run_id)
        for op, now in segment.run_ops:
            await db.execute(_RUN_OPS[op], (now, run_id))
    if recount:
        await db.execute(RECOUNT_SQL + " WHERE id = ?", (run_id,))
        logger.warning("run store: results for items run %s does not hold were ignored", run_id)
    elif succeeded or failed or tokens_in or tokens_out or tokens_cached or cost is not None:
        await db.execute(
            RUN_TOTALS_SQL,
            (succeeded, failed, tokens_in, tokens_out, tokens_cached, cost, run_id),
        )
