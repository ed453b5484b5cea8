"""RunStore: one SQLite file (WAL) holding runs, their items and each item's attempts.

All access goes through one aiosqlite connection (its own thread) and one asyncio lock, so
a transaction is never interleaved with another statement of the same store; the run's
writer (:meth:`RunStore.observer`) alone has a connection of its own, in its own thread
(see :mod:`.committer`), and SQLite's write lock keeps the two apart. Writes are batched:
ingest commits thousands of rows at a time and the writer one transaction per flush.
Other processes may open the same file with ``readonly=True`` while a run writes it: WAL
lets them read committed data.

Durability: ``synchronous=NORMAL`` in WAL mode loses nothing committed when the *process*
is killed at any instant; only an OS crash or power cut can lose the last commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sqlite3
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import aiosqlite

from ..secrets import redact_known
from .diagnose import describe_write_error
from .encode import clean_text, from_json, new_run_id, strip_secrets, to_json
from .errors import StoreError
from .exit_guard import stop_at_exit
from .lease import (
    STALE_AFTER,
    WHOLE_RUN,
    Lease,
    LeaseClaim,
    LeaseScope,
    acquire,
    insert_lease,
    leases_of,
    release,
    renew,
)
from .records import (
    ATTEMPT_COLUMNS,
    ITEM_COLUMNS,
    RUN_COLUMNS,
    AttemptRecord,
    ItemRecord,
    PendingItem,
    RunSummary,
    attempt_from_row,
    item_from_row,
    run_from_row,
)
from .schema import (
    ITEM_STATUSES,
    RUN_STATUSES,
    SCHEMA_VERSION,
    WRITER_PRAGMAS,
    check_file,
    inspect,
    upgrade,
)
from .writer import StoreObserver

#: Rows per ingest transaction: large enough to amortise the commit, small enough for memory.
INGEST_BATCH = 5_000
#: Rows per page when streaming items out (resume, export).
PAGE_SIZE = 1_000

_NOT_DONE = ("pending", "running", "interrupted")
#: The term that lets a query use the partial status index (which leaves out successes).
_USE_STATUS_INDEX = "status <> 'succeeded'"

_INSERT_ITEM = "INSERT INTO items (run_id, item_id, idx, prompt, context) VALUES (?, ?, ?, ?, ?)"
_RESET_COLUMNS = (
    "status = 'pending', attempt_base = attempts, output = NULL, output_json = 0, "
    "error = NULL, error_category = NULL, finished_at = NULL, duration = NULL"
)


class RunStore:
    """The run store of one file. Open with :meth:`open`; close with :meth:`close`."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        path: Path,
        readonly: bool,
        *,
        uri: str = "",
        busy_timeout: float = 10.0,
    ) -> None:
        self._db = db
        self.path = path
        self.readonly = readonly
        #: The file as a read-write URI (the writer thread opens its own connection with it).
        self.uri = uri or path.resolve().as_uri() + "?mode=rw"
        self.busy_timeout = busy_timeout
        self._lock = asyncio.Lock()
        self._observers: set[StoreObserver] = set()
        self._closed = False

    # ------------------------------------------------------------------ opening

    @classmethod
    async def open(
        cls, path: str | Path, *, readonly: bool = False, busy_timeout: float = 10.0
    ) -> RunStore:
        """Open (creating or migrating) the store at ``path``.

        ``readonly=True`` opens an existing store for reading only (``mode=ro``), e.g. a
        second process watching a run. A file that is not a run store, is corrupt, or comes
        from a newer version raises :class:`StoreError` naming the file and the problem.
        """
        path = Path(path).expanduser()
        check_file(path, readonly=readonly)
        if not readonly:
            _create_private(path)
        uri = path.resolve().as_uri() + ("?mode=ro" if readonly else "?mode=rwc")
        connection = aiosqlite.connect(uri, uri=True, isolation_level=None, timeout=busy_timeout)
        stop_at_exit(connection)  # its thread must not hold the interpreter at exit
        try:
            db = await connection
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open run store {path}: {exc}") from None
        try:
            await db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            version = await inspect(db, path, readonly=readonly)  # reads only
            if readonly:
                await db.execute("PRAGMA query_only = 1")
            else:
                await db.execute("PRAGMA journal_mode = WAL")
                for pragma in WRITER_PRAGMAS:
                    await db.execute(pragma)
                if version < SCHEMA_VERSION:
                    await upgrade(db, path, version)
        except BaseException as exc:
            await db.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise StoreError(_database_error(path, exc)) from None
            raise
        return cls(
            db, path, readonly, uri=path.resolve().as_uri() + "?mode=rw", busy_timeout=busy_timeout
        )

    async def set_busy_timeout(self, seconds: float) -> None:
        """How long a write waits for another connection's lock (shorter when giving up)."""
        self.busy_timeout = seconds
        async with self._lock:
            await self._db.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")

    async def close(self) -> None:
        """Close the writers opened on this store (committing what they hold), then the file."""
        if self._closed:
            return
        try:
            for observer in list(self._observers):
                await observer.close()
        finally:
            self._closed = True
            await self._db.close()

    async def __aenter__(self) -> RunStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ plumbing

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``), committed on success, else rolled back."""
        if self.readonly:
            raise StoreError(f"{self.path} is open read-only")
        db = self._db
        async with self._lock:
            # A cancelled await does not stop the statement in the connection's thread: a
            # BEGIN cut short by a Ctrl-C still begins, and must then be rolled back, or
            # every later statement finds "a transaction within a transaction".
            begin = asyncio.ensure_future(db.execute("BEGIN IMMEDIATE"))
            try:
                await asyncio.shield(begin)
            except sqlite3.OperationalError as exc:  # busy past busy_timeout
                raise StoreError(f"{self.path} is locked by another writer ({exc})") from None
            except asyncio.CancelledError:
                await asyncio.wait([begin])
                if db.in_transaction:
                    await db.rollback()
                raise
            try:
                yield db
                await db.commit()
            except BaseException as exc:
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        await db.rollback()
                if isinstance(exc, sqlite3.OperationalError):  # full, locked, failing disk
                    raise StoreError(describe_write_error(exc, self.path)) from None
                raise

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._lock:
            return list(await self._db.execute_fetchall(sql, params))

    async def _fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self._fetchall(sql, params)
        return rows[0] if rows else None

    async def _require_run(self, run_id: str) -> None:
        if await self._fetchone("SELECT 1 FROM runs WHERE id = ?", (run_id,)) is None:
            raise StoreError(f"no run {run_id!r} in {self.path}")

    def _forget_observer(self, observer: StoreObserver) -> None:
        self._observers.discard(observer)

    # ------------------------------------------------------------------ runs

    async def create_run(
        self,
        *,
        name: str | None = None,
        source: str | None = None,
        settings: Mapping[str, Any] | None = None,
        lease: LeaseClaim | None = None,
    ) -> str:
        """Create a pending run and return its id (``r-YYYYMMDD-xxxxxx``).

        ``settings`` are stored without anything that could be a credential (see
        :func:`~async_batch_llm.store.encode.strip_secrets`). With ``lease``, the run is
        leased to that claim in the same transaction: nobody else can take it even while
        its items are still being stored.
        """
        clean = redact_known(to_json(strip_secrets(dict(settings or {}))) or "{}")
        for _ in range(20):
            now = time.time()
            run_id = new_run_id(now)
            try:
                async with self.transaction() as db:
                    await db.execute(
                        "INSERT INTO runs (id, name, source, settings, created_at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (run_id, name, source, clean, now),
                    )
                    if lease is not None:
                        await insert_lease(db, run_id, lease, WHOLE_RUN, now)
            except sqlite3.IntegrityError:
                continue  # that id is taken: draw another
            return run_id
        raise StoreError(f"{self.path}: could not find a free run id")

    async def set_run_status(self, run_id: str, status: str) -> None:
        """Set a run's status; ``running`` stamps the start, a final status the finish."""
        if status not in RUN_STATUSES:
            raise StoreError(f"unknown run status {status!r} (one of {', '.join(RUN_STATUSES)})")
        now = time.time()
        if status == "running":
            sql = (
                "UPDATE runs SET status = ?, started_at = COALESCE(started_at, ?), "
                "finished_at = NULL, note = NULL WHERE id = ?"
            )
            params: tuple[Any, ...] = (status, now, run_id)
        elif status == "pending":
            sql, params = "UPDATE runs SET status = ? WHERE id = ?", (status, run_id)
        else:
            sql = "UPDATE runs SET status = ?, finished_at = ? WHERE id = ?"
            params = (status, now, run_id)
        async with self.transaction() as db:
            cursor = await db.execute(sql, params)
            if cursor.rowcount == 0:
                raise StoreError(f"no run {run_id!r} in {self.path}")

    async def delete_run(self, run_id: str) -> None:
        """Remove a run with its items and attempts."""
        async with self.transaction() as db:
            await db.execute("DELETE FROM attempts WHERE run_id = ?", (run_id,))
            await db.execute("DELETE FROM items WHERE run_id = ?", (run_id,))
            await db.execute("DELETE FROM leases WHERE run_id = ?", (run_id,))
            cursor = await db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            if cursor.rowcount == 0:
                raise StoreError(f"no run {run_id!r} in {self.path}")

    async def list_runs(self) -> list[RunSummary]:
        """Every run, newest first."""
        rows = await self._fetchall(
            f"SELECT {RUN_COLUMNS} FROM runs ORDER BY created_at DESC, rowid DESC"
        )
        return [run_from_row(row) for row in rows]

    async def get_run(self, run_ref: str) -> RunSummary:
        """A run by id, or the newest with ``"latest"``; :class:`StoreError` if there is none."""
        if run_ref == "latest":
            row = await self._fetchone(
                f"SELECT {RUN_COLUMNS} FROM runs ORDER BY created_at DESC, rowid DESC LIMIT 1"
            )
            if row is None:
                raise StoreError(f"no runs in {self.path} yet")
        else:
            row = await self._fetchone(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_ref,))
            if row is None:
                raise StoreError(f"no run {run_ref!r} in {self.path}")
        return run_from_row(row)

    # ------------------------------------------------------------------ leases

    async def acquire_lease(
        self,
        run_id: str,
        claim: LeaseClaim,
        *,
        scope: LeaseScope = WHOLE_RUN,
        stale_after: float = STALE_AFTER,
    ) -> Lease:
        """Lease ``run_id`` (its ``scope``) to ``claim``, taking over a dead owner's lease.

        Raises :class:`~.lease.LeaseHeld` (a :class:`StoreError`) naming a live owner.
        See :mod:`.lease` for what dead means and how runs will be shared.
        """
        await self._require_run(run_id)
        async with self.transaction() as db:
            return await acquire(db, run_id, claim, scope, stale_after)

    async def renew_lease(
        self, run_id: str, claim: LeaseClaim, *, scope: LeaseScope = WHOLE_RUN
    ) -> None:
        """The owner's heartbeat; :class:`~.lease.LeaseLost` if another took the run over."""
        async with self.transaction() as db:
            await renew(db, run_id, claim, scope)

    async def release_lease(
        self, run_id: str, claim: LeaseClaim, *, scope: LeaseScope = WHOLE_RUN
    ) -> None:
        """Give the lease up (nothing happens if it is no longer this owner's)."""
        async with self.transaction() as db:
            await release(db, run_id, claim, scope)

    async def leases(self, run_id: str) -> list[Lease]:
        """The run's leases (at most one today), live or not."""
        async with self._lock:
            return await leases_of(self._db, run_id)

    # ------------------------------------------------------------------ ingest

    async def ingest(
        self,
        run_id: str,
        items: Iterable[Any] | AsyncIterable[Any],
        *,
        batch_size: int = INGEST_BATCH,
    ) -> int:
        """Store ``items`` as pending, in input order, before anything is sent; return how many.

        Items are objects with ``id`` (or ``item_id``), ``prompt`` and ``context``, mappings
        with those keys, or ``(id, prompt[, context])`` tuples, from an iterable or async
        iterable. They are streamed in transactions of ``batch_size`` rows, so memory stays
        flat however many there are; each commit also adds its rows to the run's total.
        """
        await self._require_run(run_id)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        row = await self._fetchone(
            "SELECT COALESCE(MAX(idx), -1) + 1 FROM items WHERE run_id = ?", (run_id,)
        )
        chunks = _chunks(run_id, items, row[0], batch_size)
        rows = await anext(chunks, None)
        count = 0
        while rows is not None:
            # The next chunk is built while this one is inserted: SQLite works in its own
            # thread (without the GIL), so reading the input and writing overlap.
            error: Exception | None = None
            try:
                async with self.transaction() as db:
                    insert = asyncio.ensure_future(db.executemany(_INSERT_ITEM, rows))
                    await asyncio.sleep(0)  # hand the rows to the connection's thread
                    try:
                        following = await anext(chunks, None)
                    except Exception as exc:  # bad input: store everything before it, then raise
                        error, following = exc, None
                    finally:
                        await asyncio.wait([insert])
                    insert.result()
                    await db.execute(
                        "UPDATE runs SET total = total + ? WHERE id = ?", (len(rows), run_id)
                    )
            except sqlite3.IntegrityError:
                duplicate = await self._find_duplicate(run_id, rows)
                raise StoreError(
                    f"duplicate item id {duplicate!r} in run {run_id} (the first {count} items "
                    f"are stored; item ids must be unique within a run)"
                ) from None
            count += len(rows)
            if error is not None:
                raise error
            rows = following
        return count

    async def _find_duplicate(self, run_id: str, rows: list[tuple[Any, ...]]) -> str:
        seen: set[str] = set()
        for row in rows:
            if row[1] in seen:
                return str(row[1])
            seen.add(row[1])
        for row in rows:
            if await self._fetchone(
                "SELECT 1 FROM items WHERE run_id = ? AND item_id = ?", (run_id, row[1])
            ):
                return str(row[1])
        return "?"

    # ------------------------------------------------------------------ the writer

    def observer(
        self,
        run_id: str,
        *,
        flush_interval: float = 0.05,
        flush_rows: int = 5_000,
        owner: str | None = None,
        max_unsettled: int | None = None,
    ) -> StoreObserver:
        """The observer that records ``run_id``'s events; close it when the processor is done.

        Its ``on_event`` never awaits; a writer thread commits every ``flush_interval``
        seconds (or once ``flush_rows`` events wait), one transaction per flush. With
        ``owner`` (a lease owner id) each commit first checks that the owner still holds
        the run's lease. ``max_unsettled``: see :class:`StoreObserver` (back-pressure).
        """
        if self.readonly:
            raise StoreError(f"{self.path} is open read-only: it cannot record a run")
        observer = StoreObserver(
            self,
            run_id,
            flush_interval=flush_interval,
            flush_rows=flush_rows,
            owner=owner,
            max_unsettled=max_unsettled,
        )
        self._observers.add(observer)
        return observer

    async def _flush_observers(self, run_id: str) -> None:
        for observer in list(self._observers):
            if observer.run_id == run_id:
                await observer.flush()

    # ------------------------------------------------------------------ resume and retry

    async def pending_items(
        self, run_id: str, *, include_failed: bool = False, page_size: int = PAGE_SIZE
    ) -> AsyncIterator[PendingItem]:
        """Items not done yet (failed too with ``include_failed``), in input order.

        Streams pages by keyset on ``idx``, so a million items never sit in memory; items
        whose result is committed meanwhile are skipped by the pages still to come.
        """
        await self._require_run(run_id)
        statuses = _NOT_DONE + (("failed",) if include_failed else ())
        marks = ", ".join("?" * len(statuses))
        sql = (
            "SELECT item_id, idx, prompt, context, status, attempts FROM items "
            f"INDEXED BY items_order WHERE run_id = ? AND idx > ? AND status IN ({marks}) "
            "ORDER BY idx LIMIT ?"
        )
        last = -1
        while True:
            rows = await self._fetchall(sql, (run_id, last, *statuses, page_size))
            for item_id, idx, prompt, context, status, attempts in rows:
                yield PendingItem(item_id, idx, prompt, from_json(context), status, attempts)
            if len(rows) < page_size:
                return
            last = rows[-1][1]

    async def mark_interrupted(self, run_id: str, note: str | None = None) -> int:
        """After a stop or a crash: items left running become interrupted (their open
        attempts too) and the run is interrupted, with ``note`` saying why if given.
        Returns how many items were running."""
        await self._flush_observers(run_id)
        now = time.time()
        async with self.transaction() as db:
            await db.execute(
                "UPDATE attempts SET outcome = 'interrupted' WHERE run_id = ? AND outcome IS NULL",
                (run_id,),
            )
            cursor = await db.execute(
                "UPDATE items SET status = 'interrupted' WHERE run_id = ? AND status = 'running' "
                f"AND {_USE_STATUS_INDEX}",
                (run_id,),
            )
            count = cursor.rowcount
            cursor = await db.execute(
                "UPDATE runs SET status = 'interrupted', finished_at = ?, "
                "note = COALESCE(?, note) WHERE id = ?",
                (now, note, run_id),
            )
            if cursor.rowcount == 0:
                raise StoreError(f"no run {run_id!r} in {self.path}")
        return count

    async def reset_for_retry(self, run_id: str, item_ids: Sequence[str] | None = None) -> int:
        """Set failed items (these ids, or all failed with None) back to pending for another go.

        Their attempt history stays: the next session's attempts are numbered after it
        (``attempts`` keeps counting; tokens and cost keep adding up). Items given by id
        may also be interrupted ones; others are left alone. Returns how many were reset;
        the run's failed count follows, and a finished run with work again becomes
        interrupted (resumable).
        """
        await self._flush_observers(run_id)
        async with self.transaction() as db:
            if item_ids is None:
                cursor = await db.execute(
                    f"UPDATE items SET {_RESET_COLUMNS} WHERE run_id = ? AND status = 'failed' "
                    f"AND {_USE_STATUS_INDEX}",
                    (run_id,),
                )
            else:
                cursor = await db.executemany(
                    f"UPDATE items SET {_RESET_COLUMNS} WHERE run_id = ? AND item_id = ? "
                    "AND status IN ('failed', 'interrupted')",
                    [(run_id, item_id) for item_id in item_ids],
                )
            count = max(cursor.rowcount, 0)
            if count:
                await db.execute(
                    "UPDATE runs SET failed = (SELECT count(*) FROM items WHERE run_id = ?1 "
                    f"AND status = 'failed' AND {_USE_STATUS_INDEX}) WHERE id = ?1",
                    (run_id,),
                )
                await db.execute(
                    "UPDATE runs SET status = 'interrupted' WHERE id = ? "
                    "AND status IN ('completed', 'failed')",
                    (run_id,),
                )
        return count

    # ------------------------------------------------------------------ reads

    async def items(
        self,
        run_id: str,
        status: str | Sequence[str] | None = None,
        search: str | None = None,
        limit: int | None = 100,
        offset: int = 0,
    ) -> list[ItemRecord]:
        """A page of items in input order, filtered by status(es) and a text search.

        ``search`` matches a substring of the id, prompt, output or error (case-insensitive
        for ASCII).
        """
        where = ["run_id = ?"]
        params: list[Any] = [run_id]
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
            if "succeeded" not in statuses:
                where.append(_USE_STATUS_INDEX)
        if search:
            pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern += "%"
            where.append(
                "(item_id LIKE ? ESCAPE '\\' OR prompt LIKE ? ESCAPE '\\' "
                "OR output LIKE ? ESCAPE '\\' OR error LIKE ? ESCAPE '\\')"
            )
            params.extend([pattern] * 4)
        params.extend([-1 if limit is None else limit, offset])
        rows = await self._fetchall(
            f"SELECT {ITEM_COLUMNS} FROM items WHERE {' AND '.join(where)} "
            "ORDER BY idx LIMIT ? OFFSET ?",
            params,
        )
        return [item_from_row(row) for row in rows]

    async def item(self, run_id: str, item_id: str) -> ItemRecord | None:
        """One item with its attempt history (``history``), or None if the run has no such item."""
        row = await self._fetchone(
            f"SELECT {ITEM_COLUMNS} FROM items WHERE run_id = ? AND item_id = ?",
            (run_id, item_id),
        )
        if row is None:
            return None
        attempts = await self._fetchall(
            f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = ? AND item_id = ? "
            "ORDER BY attempt",
            (run_id, item_id),
        )
        history = [attempt_from_row(a) for a in attempts]
        record = item_from_row(row)
        if (
            record.status == "succeeded"
            and record.attempts
            and (not history or history[-1].attempt < record.attempts)
        ):
            # The writer keeps no row for a first attempt that succeeded within one flush.
            history.append(
                AttemptRecord(
                    record.attempts,
                    record.started_at,
                    record.finished_at,
                    record.duration,
                    "ok",
                    None,
                    None,
                    None,
                )
            )
        return dataclasses.replace(record, history=tuple(history))

    async def counts(self, run_id: str) -> dict[str, int]:
        """Items per status (every status present, zeros included) and ``total``.

        Reads the partial status index (items not succeeded) and the run's total, so it
        costs in proportion to the items not yet succeeded, not to the run's size.
        """
        rows = await self._fetchall(
            "SELECT status, count(*) FROM items WHERE run_id = ? "
            f"AND {_USE_STATUS_INDEX} GROUP BY status",
            (run_id,),
        )
        total = await self._fetchone("SELECT total FROM runs WHERE id = ?", (run_id,))
        counts = dict.fromkeys(ITEM_STATUSES, 0)
        counts.update({status: number for status, number in rows})
        counts["total"] = total[0] if total else 0
        counts["succeeded"] = counts["total"] - sum(number for _, number in rows)
        return counts

    async def attempt_outcomes(self, run_id: str) -> dict[str, int]:
        """How many of the run's stored attempts ended each way (``retry``, ``rate_limited``, ...).

        A first attempt that succeeded has no row of its own (it is told by the item row),
        so ``ok`` counts only later successes. Scans the run's attempt rows: a reader
        (watch mode) should not ask every poll.
        """
        rows = await self._fetchall(
            "SELECT outcome, COUNT(*) FROM attempts"
            " WHERE run_id = ? AND outcome IS NOT NULL GROUP BY outcome",
            (run_id,),
        )
        return {outcome: count for outcome, count in rows}

    async def failed_items(self, run_id: str, limit: int | None = 100) -> list[ItemRecord]:
        """Failed items in input order (all of them with ``limit=None``)."""
        return await self.items(run_id, status="failed", limit=limit)

    async def iter_items(
        self, run_id: str, *, page_size: int = PAGE_SIZE
    ) -> AsyncIterator[ItemRecord]:
        """Every item of a run in input order, streamed in pages (keyset on ``idx``)."""
        sql = f"SELECT {ITEM_COLUMNS} FROM items WHERE run_id = ? AND idx > ? ORDER BY idx LIMIT ?"
        last = -1
        while True:
            rows = await self._fetchall(sql, (run_id, last, page_size))
            for row in rows:
                yield item_from_row(row)
            if len(rows) < page_size:
                return
            last = rows[-1][2]

    async def export(self, run_id: str, fmt: str, out: TextIO) -> int:
        """Write the run's items to ``out`` as ``jsonl`` or ``csv``, one per item in input
        order (streamed); returns how many."""
        from .export import export_items

        await self._require_run(run_id)
        return await export_items(self.iter_items(run_id), fmt, out)

    async def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: ``"ok"`` for a sound file."""
        rows = await self._fetchall("PRAGMA integrity_check")
        return "\n".join(str(row[0]) for row in rows)


async def _chunks(
    run_id: str, items: Iterable[Any] | AsyncIterable[Any], start: int, size: int
) -> AsyncIterator[list[tuple[Any, ...]]]:
    """Insert rows of ``items`` in lists of ``size``, numbered from ``start`` in input order."""
    rows: list[tuple[Any, ...]] = []
    idx = start
    if isinstance(items, AsyncIterable):
        async for item in items:
            rows.append(_item_row(run_id, idx, item))
            idx += 1
            if len(rows) >= size:
                yield rows
                rows = []
    else:
        for item in items:
            rows.append(_item_row(run_id, idx, item))
            idx += 1
            if len(rows) >= size:
                yield rows
                rows = []
    if rows:
        yield rows


_MISSING: Any = object()


def _item_row(run_id: str, idx: int, item: Any) -> tuple[Any, ...]:
    """The insert row of one input item (duck-typed: object, mapping or tuple)."""
    if type(item) is tuple or type(item) is list:
        item_id = item[0]
        prompt = item[1] if len(item) > 1 else ""
        context = item[2] if len(item) > 2 else None
    elif (prompt := getattr(item, "prompt", _MISSING)) is not _MISSING:
        item_id = getattr(item, "id", None)
        if item_id is None:
            item_id = getattr(item, "item_id", None)
        context = getattr(item, "context", None)
    elif isinstance(item, Mapping):
        item_id = item.get("id", item.get("item_id"))
        prompt = item.get("prompt", "")
        context = item.get("context")
    else:
        raise StoreError(
            f"item #{idx + 1}: expected an object with id and prompt, a mapping or a tuple, "
            f"got {type(item).__name__}"
        )
    if type(item_id) is not str:
        if isinstance(item_id, int) and not isinstance(item_id, bool):
            item_id = str(item_id)
        else:
            raise StoreError(f"item #{idx + 1}: the id must be a string, got {item_id!r}")
    if not item_id or item_id.isspace():
        raise StoreError(f"item #{idx + 1}: the id is empty")
    if not item_id.isascii() and not _is_utf8(item_id):
        raise StoreError(f"item #{idx + 1}: the id is not valid text (a lone surrogate)")
    if type(prompt) is not str:
        if prompt is None:
            prompt = ""
        else:
            raise StoreError(
                f"item {item_id!r}: the prompt must be a string, got {type(prompt).__name__}"
            )
    if not prompt.isascii() and not _is_utf8(prompt):
        raise StoreError(f"item {item_id!r}: the prompt is not valid text (a lone surrogate)")
    context_text = to_json(context)
    return (
        run_id,
        item_id,
        idx,
        prompt,
        None if context_text is None else clean_text(context_text),
    )


def _is_utf8(text: str) -> bool:
    """False for text SQLite cannot store (lone surrogates, e.g. from a JSON "\\ud800")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _create_private(path: Path) -> None:
    """Create a new store file readable by its owner only (0600): runs hold prompts and
    answers. SQLite gives the ``-wal`` and ``-shm`` files it adds the same mode."""
    if path.exists():
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return  # another process made it meanwhile
    except OSError as exc:
        raise StoreError(f"cannot create run store {path}: {exc.strerror or exc}") from None


def _database_error(path: Path, exc: sqlite3.DatabaseError) -> str:
    message = str(exc)
    if "not a database" in message or "malformed" in message or "corrupt" in message:
        return f"{path} is corrupt or not a run store ({message})"
    if "locked" in message or "busy" in message:
        return f"{path} is locked by another process ({message})"
    return f"cannot open run store {path}: {message}"
