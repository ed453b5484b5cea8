"""The batch journal in SQLite: a run's provider batches (chunks) and which items each holds.

:class:`SqliteBatchJournal` implements :class:`async_batch_llm.batch_api.BatchJournal` on an
aiosqlite connection it is given (the run store's, or one of its own with :meth:`open`).
Each method is one short write transaction, committed before it returns, so a process
killed at any instant leaves either the state before or the state after. The primary key
``(run_id, item_id)`` of ``provider_batch_items`` is what makes an item belong to one
chunk at most. Its tables are part of the store's schema (``schema.PROVIDER_BATCHES_DDL``,
re-exported here as :data:`DDL`); :meth:`SqliteBatchJournal.setup` still creates them in a
file that lacks them (a journal of its own, or a store not yet upgraded).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from ..batch_api.journal import ChunkRecord
from .schema import PROVIDER_BATCHES_DDL as DDL
from .schema import WRITER_PRAGMAS

__all__ = ["DDL", "SqliteBatchJournal", "read_chunks"]


_CHUNK_FIELDS = (
    "chunk_id",
    "provider",
    "model",
    "request_count",
    "request_bytes",
    "planned_at",
    "state",
    "input_file_id",
    "batch_id",
    "submitted_at",
    "expires_at",
    "deadline_at",
    "provider_status",
    "succeeded",
    "failed",
    "cancel_requested_at",
    "ended_at",
    "updated_at",
)
_SELECT = f"SELECT {', '.join(_CHUNK_FIELDS)} FROM provider_batches WHERE run_id = ?"
_UPDATE = (
    "UPDATE provider_batches SET "
    + ", ".join(f"{name} = ?" for name in _CHUNK_FIELDS[1:])
    + " WHERE run_id = ? AND chunk_id = ?"
)
_LOOKUP_PAGE = 500  # ids per IN (...) query, below SQLite's variable limit

Transaction = Callable[[], AbstractAsyncContextManager[aiosqlite.Connection]]


def _values(chunk: ChunkRecord) -> tuple[Any, ...]:
    return tuple(getattr(chunk, name) for name in _CHUNK_FIELDS)


class SqliteBatchJournal:
    """A :class:`~async_batch_llm.batch_api.BatchJournal` for one run in SQLite.

    ``transaction`` (e.g. ``RunStore.transaction``) wraps each write when given, so the
    journal shares the store's lock; otherwise the journal takes its own ``BEGIN IMMEDIATE``.
    Call :meth:`setup` once (it creates the tables if missing).
    """

    def __init__(
        self,
        db: aiosqlite.Connection,
        run_id: str,
        *,
        transaction: Transaction | None = None,
    ) -> None:
        self._db = db
        self.run_id = run_id
        self._transaction = transaction
        self._lock = asyncio.Lock()
        self._owned = False

    @classmethod
    async def open(
        cls, path: str | Path, run_id: str, *, busy_timeout: float = 10.0
    ) -> SqliteBatchJournal:
        """A journal on a connection of its own to the SQLite file ``path`` (WAL); a write
        waits up to ``busy_timeout`` seconds for another connection's lock."""
        db = await aiosqlite.connect(str(path), isolation_level=None, timeout=busy_timeout)
        await db.execute("PRAGMA journal_mode = WAL")
        for pragma in WRITER_PRAGMAS:
            await db.execute(pragma)
        journal = cls(db, run_id)
        journal._owned = True
        await journal.setup()
        return journal

    async def close(self) -> None:
        """Close the connection if :meth:`open` made it."""
        if self._owned:
            await self._db.close()

    async def setup(self) -> None:
        """Create the tables and indexes if they are missing."""
        async with self._write() as db:
            for statement in DDL.split(";"):
                if statement.strip():
                    await db.execute(statement)

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        if self._transaction is not None:
            async with self._transaction() as db:
                yield db
            return
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await self._db.rollback()
                raise
            await self._db.commit()

    # BatchJournal

    async def record_planned(self, chunk: ChunkRecord, item_ids: Sequence[str]) -> None:
        names = ", ".join(("run_id", "seq", *_CHUNK_FIELDS))
        marks = ", ".join("?" * (len(_CHUNK_FIELDS) + 2))
        try:
            async with self._write() as db:
                cursor = await db.execute(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM provider_batches WHERE run_id = ?",
                    (self.run_id,),
                )
                row = await cursor.fetchone()
                seq = row[0] if row else 1
                await db.execute(
                    f"INSERT INTO provider_batches ({names}) VALUES ({marks})",
                    (self.run_id, seq, *_values(chunk)),
                )
                await db.executemany(
                    "INSERT INTO provider_batch_items (run_id, item_id, chunk_id, position) "
                    "VALUES (?, ?, ?, ?)",
                    ((self.run_id, item, chunk.chunk_id, n) for n, item in enumerate(item_ids)),
                )
        except sqlite3.IntegrityError as exc:
            raise ValueError(
                f"chunk {chunk.chunk_id}: an item is already in a chunk ({exc})"
            ) from None

    async def record(self, chunk: ChunkRecord) -> None:
        async with self._write() as db:
            cursor = await db.execute(_UPDATE, (*_values(chunk)[1:], self.run_id, chunk.chunk_id))
            if cursor.rowcount != 1:
                raise KeyError(chunk.chunk_id)

    async def release(self, chunk_id: str, at: float) -> None:
        async with self._write() as db:
            await db.execute(
                "UPDATE provider_batches SET state = 'released', updated_at = ? "
                "WHERE run_id = ? AND chunk_id = ?",
                (at, self.run_id, chunk_id),
            )
            await db.execute(
                "DELETE FROM provider_batch_items WHERE run_id = ? AND chunk_id = ?",
                (self.run_id, chunk_id),
            )

    async def chunks(self, *, open_only: bool = False) -> list[ChunkRecord]:
        sql = _SELECT
        if open_only:
            sql += " AND state IN ('planned', 'uploaded', 'submitted', 'cancelling')"
        cursor = await self._db.execute(sql + " ORDER BY seq", (self.run_id,))
        rows = await cursor.fetchall()
        return [ChunkRecord(*row) for row in rows]

    async def assignments(self, item_ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for start in range(0, len(item_ids), _LOOKUP_PAGE):
            page = list(item_ids[start : start + _LOOKUP_PAGE])
            marks = ", ".join("?" * len(page))
            cursor = await self._db.execute(
                "SELECT item_id, chunk_id FROM provider_batch_items "
                f"WHERE run_id = ? AND item_id IN ({marks})",
                (self.run_id, *page),
            )
            found.update({row[0]: row[1] for row in await cursor.fetchall()})
        return found

    async def chunk_items(self, chunk_id: str) -> list[str]:
        cursor = await self._db.execute(
            "SELECT item_id FROM provider_batch_items WHERE run_id = ? AND chunk_id = ? "
            "ORDER BY position",
            (self.run_id, chunk_id),
        )
        return [row[0] for row in await cursor.fetchall()]


def read_chunks(path: str | Path, run_id: str) -> list[ChunkRecord]:
    """A run's chunks read from the SQLite file ``path`` without writing to it (watch mode, a
    report); [] when the file has no batch table (no run of it went through a batch API)."""
    uri = f"{Path(path).resolve().as_uri()}?mode=ro"
    db = sqlite3.connect(uri, uri=True, timeout=2.0)
    try:
        rows = db.execute(_SELECT + " ORDER BY seq", (run_id,)).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        db.close()
    return [ChunkRecord(*row) for row in rows]
