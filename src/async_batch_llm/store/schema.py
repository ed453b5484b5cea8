"""The store's schema, how a file is recognised as ours, and the migrations between versions.

``PRAGMA user_version`` holds the schema version; the ``meta`` table holds the app marker
that tells our files from any other SQLite database. A fresh file gets the current schema
at once; an older one is upgraded step by step by :data:`MIGRATIONS`, each step in one
transaction, so a failed upgrade leaves the file as it was.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite

from .errors import StoreError

#: The ``meta`` row that marks a SQLite file as a run store.
APP_ID = "async_batch_llm.run_store"
#: The schema this code writes. Files from a newer version are refused, older ones migrated.
SCHEMA_VERSION = 4

RUN_STATUSES = ("pending", "running", "completed", "failed", "interrupted")
ITEM_STATUSES = ("pending", "running", "succeeded", "failed", "interrupted")
ATTEMPT_OUTCOMES = ("ok", "retry", "rate_limited", "failed", "interrupted")

#: Settings of every connection that writes a store (the store's own and the writer
#: thread's), after ``busy_timeout`` and, for the store's, ``journal_mode = WAL``.
WRITER_PRAGMAS = (
    "PRAGMA synchronous = NORMAL",
    # Big flushes and ingests touch many pages: a 64 MiB cache keeps them from spilling
    # mid-transaction (it grows only as pages are used).
    "PRAGMA cache_size = -65536",
    # Checkpoint the WAL every ~40 MB rather than every 4 MB: far fewer fsyncs.
    "PRAGMA wal_autocheckpoint = 10000",
)

_SQLITE_HEADER = b"SQLite format 3\x00"


def _one_of(column: str, values: tuple[str, ...]) -> str:
    """A CHECK on ``column`` written with OR: an ``IN`` list costs a temporary table per row."""
    return " OR ".join(f"{column} = '{value}'" for value in values)


# Run totals are kept by the code that changes items (the writer adds each flush's
# arrivals; a retry by hand recounts), never by a trigger: even a trigger that does not
# fire costs every item update a third more.
RECOUNT_SQL = """
UPDATE runs SET
  total = (SELECT count(*) FROM items WHERE items.run_id = runs.id),
  succeeded = (SELECT count(*) FROM items WHERE items.run_id = runs.id
               AND items.status = 'succeeded'),
  failed = (SELECT count(*) FROM items WHERE items.run_id = runs.id
            AND items.status = 'failed' AND items.status <> 'succeeded'),
  input_tokens = (SELECT COALESCE(sum(input_tokens), 0) FROM items
                  WHERE items.run_id = runs.id),
  output_tokens = (SELECT COALESCE(sum(output_tokens), 0) FROM items
                   WHERE items.run_id = runs.id),
  cached_tokens = (SELECT COALESCE(sum(cached_tokens), 0) FROM items
                   WHERE items.run_id = runs.id),
  cost = (SELECT sum(cost) FROM items WHERE items.run_id = runs.id)
"""

_ATTEMPTS_TABLE = f"""
CREATE TABLE attempts (
  run_id TEXT NOT NULL,
  item_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,          -- 1, 2, ... over the item's whole life (resumes included)
  started_at REAL,
  ended_at REAL,
  duration REAL,
  outcome TEXT CHECK (outcome IS NULL OR {_one_of("outcome", ATTEMPT_OUTCOMES)}),
  error TEXT,
  error_category TEXT,
  wait REAL,                         -- backoff before the next attempt / suggested cooldown
  PRIMARY KEY (run_id, item_id, attempt)
);
CREATE INDEX attempts_open ON attempts (run_id) WHERE outcome IS NULL;
"""

# Who runs what: one row per lease (see :mod:`.lease`). A lease covers the items with
# ``first_idx <= idx < end_idx`` (``end_idx`` NULL: to the end); today every lease covers
# the whole run (0, NULL), later processes may lease disjoint ranges of one run.
_LEASES_TABLE = """
CREATE TABLE leases (
  run_id TEXT NOT NULL,
  first_idx INTEGER NOT NULL DEFAULT 0,
  end_idx INTEGER,
  owner TEXT NOT NULL,               -- random per runner: who may write the run's results
  pid INTEGER NOT NULL,
  host TEXT NOT NULL,
  acquired_at REAL NOT NULL,
  heartbeat_at REAL NOT NULL,
  PRIMARY KEY (run_id, first_idx)
);
"""

#: The provider batch journal (:mod:`.provider_batches`): a run's batches (chunks) and which
#: items each holds. ``IF NOT EXISTS``: journals made these tables before they joined the schema.
PROVIDER_BATCHES_DDL = """
CREATE TABLE IF NOT EXISTS provider_batches (
    run_id TEXT NOT NULL,
    chunk_id TEXT NOT NULL PRIMARY KEY,
    seq INTEGER NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    request_count INTEGER NOT NULL,
    request_bytes INTEGER NOT NULL,
    planned_at REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN
        ('planned', 'uploaded', 'submitted', 'cancelling', 'ended', 'released')),
    input_file_id TEXT,
    batch_id TEXT,
    submitted_at REAL,
    expires_at REAL,
    deadline_at REAL,
    provider_status TEXT,
    succeeded INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    cancel_requested_at REAL,
    ended_at REAL,
    updated_at REAL
);
CREATE INDEX IF NOT EXISTS provider_batches_run ON provider_batches (run_id, seq);
CREATE TABLE IF NOT EXISTS provider_batch_items (
    run_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    chunk_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (run_id, item_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS provider_batch_items_chunk
    ON provider_batch_items (chunk_id, position);
"""

# What v4 added to an attempt: its HTTP status, the provider's rate-limit snapshot (JSON) and,
# for a replay with an edited prompt or parameters, what was sent (NULL: the item's own prompt
# and the run's settings).
_ATTEMPT_V4_COLUMNS = """
ALTER TABLE attempts ADD COLUMN status INTEGER;
ALTER TABLE attempts ADD COLUMN rate_limits TEXT;
ALTER TABLE attempts ADD COLUMN prompt TEXT;
ALTER TABLE attempts ADD COLUMN parameters TEXT;
"""

#: The current schema, as a fresh file gets it.
CREATE_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta (key, value) VALUES ('app', '{APP_ID}'), ('schema_version', '{SCHEMA_VERSION}');
CREATE TABLE runs (
  id TEXT PRIMARY KEY,
  name TEXT,
  source TEXT,
  settings TEXT NOT NULL DEFAULT '{{}}',
  status TEXT NOT NULL DEFAULT 'pending' CHECK ({_one_of("status", RUN_STATUSES)}),
  created_at REAL NOT NULL,
  started_at REAL,
  finished_at REAL,
  total INTEGER NOT NULL DEFAULT 0,
  succeeded INTEGER NOT NULL DEFAULT 0,
  failed INTEGER NOT NULL DEFAULT 0,
  input_tokens INTEGER NOT NULL DEFAULT 0,
  output_tokens INTEGER NOT NULL DEFAULT 0,
  cached_tokens INTEGER NOT NULL DEFAULT 0,
  cost REAL,
  note TEXT                          -- why the run stopped, when it did not end by itself
);
CREATE TABLE items (
  run_id TEXT NOT NULL,
  item_id TEXT NOT NULL,
  idx INTEGER NOT NULL,              -- input order
  prompt TEXT NOT NULL,
  context TEXT,                      -- JSON
  status TEXT NOT NULL DEFAULT 'pending' CHECK ({_one_of("status", ITEM_STATUSES)}),
  attempts INTEGER NOT NULL DEFAULT 0,     -- attempts over the item's whole life
  attempt_base INTEGER NOT NULL DEFAULT 0, -- attempts before the current session
  output TEXT,
  output_json INTEGER NOT NULL DEFAULT 0,  -- 1: output is JSON of a non-string value
  error TEXT,
  error_category TEXT,
  input_tokens INTEGER NOT NULL DEFAULT 0,
  output_tokens INTEGER NOT NULL DEFAULT 0,
  cached_tokens INTEGER NOT NULL DEFAULT 0,
  cost REAL,
  started_at REAL,
  finished_at REAL,
  duration REAL,
  PRIMARY KEY (run_id, item_id)
);
-- Partial: succeeded items (most of a run) leave it, so recording a success costs one index
-- delete instead of a delete and an insert. Queries add "status <> 'succeeded'" to use it.
CREATE INDEX items_status ON items (run_id, status) WHERE status <> 'succeeded';
CREATE UNIQUE INDEX items_order ON items (run_id, idx);
{_ATTEMPTS_TABLE}
{_ATTEMPT_V4_COLUMNS}
{_LEASES_TABLE}
{PROVIDER_BATCHES_DDL}
"""

# v1 -> v2: v1 had no cached tokens or cost and no attempt history; totals are recounted.
_MIGRATE_1_TO_2 = f"""
ALTER TABLE runs ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN cost REAL;
ALTER TABLE items ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE items ADD COLUMN cost REAL;
ALTER TABLE items ADD COLUMN attempt_base INTEGER NOT NULL DEFAULT 0;
ALTER TABLE items ADD COLUMN output_json INTEGER NOT NULL DEFAULT 0;
UPDATE items SET attempt_base = attempts;
DROP INDEX IF EXISTS items_status;
CREATE INDEX items_status ON items (run_id, status) WHERE status <> 'succeeded';
{_ATTEMPTS_TABLE}
{RECOUNT_SQL};
UPDATE meta SET value = '2' WHERE key = 'schema_version';
"""

# v2 -> v3: leases (one owner per run) and the note saying why a run stopped.
_MIGRATE_2_TO_3 = f"""
ALTER TABLE runs ADD COLUMN note TEXT;
{_LEASES_TABLE}
UPDATE meta SET value = '3' WHERE key = 'schema_version';
"""

# v3 -> v4: each attempt's status, rate-limit snapshot and replayed request; the provider
# batch journal's tables join the schema (a v3 file may have them already: IF NOT EXISTS).
_MIGRATE_3_TO_4 = f"""
{_ATTEMPT_V4_COLUMNS}
{PROVIDER_BATCHES_DDL}
UPDATE meta SET value = '4' WHERE key = 'schema_version';
"""

#: ``MIGRATIONS[n]`` upgrades a version-``n`` file to version ``n + 1``.
MIGRATIONS: dict[int, str] = {1: _MIGRATE_1_TO_2, 2: _MIGRATE_2_TO_3, 3: _MIGRATE_3_TO_4}


def check_file(path: Path, *, readonly: bool) -> None:
    """Refuse, before SQLite sees it, a path that cannot be a run store (with a clear reason)."""
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a run store file")
    if not path.exists():
        if readonly:
            raise StoreError(f"no run store at {path}")
        if not path.parent.is_dir():
            raise StoreError(f"cannot create run store {path}: no directory {path.parent}")
        return
    try:
        with path.open("rb") as handle:
            head = handle.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head and head != _SQLITE_HEADER:
        kind = "a text file" if _is_text(head) else "not a SQLite database"
        raise StoreError(f"{path} is {kind}, not a run store")


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(byte >= 32 or byte in b"\t\r\n" for byte in head)


async def inspect(db: aiosqlite.Connection, path: Path, *, readonly: bool) -> int:
    """The schema version of ``path`` (0: an empty file to set up), once it is known to be ours.

    Reads only, so a file that turns out not to be a run store is left exactly as it was.
    """
    found = await _one(db, "PRAGMA user_version")
    version = int(str(found[0])) if found is not None else 0
    tables = [row[0] for row in await db.execute_fetchall(_TABLES)]
    if version == 0 and not tables:
        if readonly:
            raise StoreError(f"{path} is an empty database, not a run store")
        return 0
    marker = None
    if "meta" in tables:
        row = await _one(db, "SELECT value FROM meta WHERE key = 'app'")
        marker = row[0] if row else None
    if marker != APP_ID:
        listed = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise StoreError(
            f"{path} is a SQLite database but not a run store (tables: {listed or 'none'})"
        )
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} was written by a newer version (store schema v{version}; this version "
            f"reads up to v{SCHEMA_VERSION}): upgrade async_batch_llm to open it"
        )
    if version < SCHEMA_VERSION and readonly:
        raise StoreError(
            f"{path} uses the older store schema v{version}: open it once read-write "
            f"(any run or resume) to upgrade it to v{SCHEMA_VERSION}"
        )
    return version


async def upgrade(db: aiosqlite.Connection, path: Path, version: int) -> None:
    """Create the schema (version 0) or migrate it step by step to :data:`SCHEMA_VERSION`."""
    if version == 0:
        await _script(db, CREATE_SCHEMA, SCHEMA_VERSION)
        return
    for step in range(version, SCHEMA_VERSION):
        if step not in MIGRATIONS:
            raise StoreError(f"{path}: no migration from store schema v{step}")
        await _script(db, MIGRATIONS[step], step + 1)


_TABLES = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"


async def _one(db: aiosqlite.Connection, sql: str) -> sqlite3.Row | tuple[object, ...] | None:
    async with db.execute(sql) as cursor:
        return await cursor.fetchone()


async def _script(db: aiosqlite.Connection, script: str, version: int) -> None:
    """Run ``script`` and set ``user_version`` in one transaction (all or nothing)."""
    try:
        await db.executescript(
            f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {int(version)};\nCOMMIT;"
        )
    except BaseException:
        if db.in_transaction:
            await db.rollback()
        raise
