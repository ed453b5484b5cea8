"""The run store against real SQLite files: recording runs, refusing bad files, resume, retry,
readers beside the writer, export, and nothing committed lost when a worker is killed."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from async_batch_llm import (
    LLMWorkItem,
    ParallelBatchProcessor,
    ProcessingEvent,
    ProcessorConfig,
)
from async_batch_llm.core.events import sync_handler
from async_batch_llm.store import (
    SCHEMA_VERSION,
    PendingItem,
    RunStore,
    StoreError,
    strip_secrets,
)
from async_batch_llm.testing.fake import FakeStrategy

WORKER = Path(__file__).with_name("store_kill_worker.py")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[RunStore]:
    opened = await RunStore.open(tmp_path / "runs.db")
    try:
        yield opened
    finally:
        await opened.close()


def _items(n: int, prefix: str = "item") -> list[tuple[str, str, dict[str, int]]]:
    return [(f"{prefix}-{i:03d}", f"prompt {i}", {"i": i}) for i in range(n)]


async def _run(
    store: RunStore,
    run_id: str,
    strategy: Any,
    config: ProcessorConfig,
    *,
    include_failed: bool = False,
) -> Any:
    """Send the run's pending items through a real processor with the store's writer."""
    writer = store.observer(run_id)
    processor: ParallelBatchProcessor[Any, Any, Any] = ParallelBatchProcessor(
        config=config, observers=[writer]
    )
    async for item in store.pending_items(run_id, include_failed=include_failed):
        await processor.add_work(LLMWorkItem(item.item_id, strategy, item.prompt, item.context))
    result = await processor.process_all()
    await writer.close()
    return result


# ---------------------------------------------------------------------- recording a run


async def test_rows_and_totals_match_the_batch_result(
    store: RunStore, fast_config: Callable[..., ProcessorConfig]
) -> None:
    strategy = FakeStrategy(
        script={
            "prompt 1": ["server_error", "ok"],
            "prompt 2": ["bad_request"],
            "prompt 3": ["error", "error", "error"],
            "prompt 4": ["rate_limit:0.01", "ok"],
        },
        usage={
            "input_tokens": 10,
            "output_tokens": 5,
            "total_tokens": 15,
            "cached_input_tokens": 4,
        },
    )
    run_id = await store.create_run(name="t", source="t.toml", settings={"model": "fake"})
    assert await store.ingest(run_id, _items(30)) == 30
    result = await _run(store, run_id, strategy, fast_config(max_workers=4))

    run = await store.get_run(run_id)
    assert (run.total, run.succeeded, run.failed, run.pending) == (30, 28, 2, 0)
    assert (run.succeeded, run.failed) == (result.succeeded, result.failed)
    assert run.input_tokens == result.total_input_tokens == 28 * 10
    assert run.output_tokens == result.total_output_tokens
    assert run.cached_tokens == result.total_cached_tokens == 28 * 4
    assert run.status == "completed"
    assert run.started_at is not None and run.finished_at is not None
    assert await store.counts(run_id) == {
        "pending": 0,
        "running": 0,
        "succeeded": 28,
        "failed": 2,
        "interrupted": 0,
        "total": 30,
    }
    rows = {row.item_id: row for row in await store.items(run_id, limit=None)}
    for res in result.results:
        row = rows[res.item_id]
        assert row.status == ("succeeded" if res.success else "failed")
        assert row.attempts == res.attempts
        assert row.output == res.output
        assert row.error == res.error
        assert row.error_category == res.error_category
        assert row.input_tokens == res.token_usage["input_tokens"]
        assert row.cached_tokens == res.token_usage["cached_input_tokens"]
        assert row.finished_at is not None and row.duration is not None
    assert [row.item_id for row in await store.failed_items(run_id)] == ["item-002", "item-003"]
    assert rows["item-003"].attempts == 3 and rows["item-003"].error_category


async def test_attempt_history_tells_a_retried_items_story(
    store: RunStore, fast_config: Callable[..., ProcessorConfig]
) -> None:
    strategy = FakeStrategy(
        script={"prompt 0": ["server_error", "rate_limit:0.01", "server_error", "ok"]}
    )
    run_id = await store.create_run(name="t")
    await store.ingest(run_id, _items(3))
    await _run(store, run_id, strategy, fast_config(retry={"max_attempts": 4}))

    item = await store.item(run_id, "item-000")
    assert item is not None and item.status == "succeeded" and item.attempts == 4
    story = [(a.attempt, a.outcome, a.error_category) for a in item.history]
    assert story == [
        (1, "retry", "server_overloaded"),
        (2, "rate_limited", "rate_limit"),
        (3, "retry", "server_overloaded"),
        (4, "ok", None),
    ]
    assert all(a.started_at and a.ended_at and a.duration is not None for a in item.history)
    # The run's attempt outcomes, as watch mode counts its retries and 429s (a success at
    # the first attempt has no attempt row: only item-000's final "ok" is stored).
    assert await store.attempt_outcomes(run_id) == {"retry": 2, "rate_limited": 1, "ok": 1}
    assert item.history[0].error and "503" in item.history[0].error
    assert item.history[0].wait is not None and item.history[1].wait == pytest.approx(0.01)
    # An item that succeeded at once has a one-line story (kept off the hot path).
    plain = await store.item(run_id, "item-001")
    assert plain is not None
    assert [(a.attempt, a.outcome) for a in plain.history] == [(1, "ok")]
    assert await store.item(run_id, "no-such-item") is None


async def test_the_writer_never_awaits_and_keeps_up(
    store: RunStore, fast_config: Callable[..., ProcessorConfig]
) -> None:
    run_id = await store.create_run(name="t")
    await store.ingest(run_id, _items(1000))
    writer = store.observer(run_id, flush_interval=0.01)
    # The dispatcher's synchronous fast path: one plain call per event, no coroutine.
    assert sync_handler(writer) is not None
    coro = writer.on_event(ProcessingEvent.WORKER_STARTED, {"worker_id": 0})
    with pytest.raises(StopIteration):
        coro.send(None)  # finishes on its first step: never awaits
    strategy = FakeStrategy(latency=0.003)
    processor: ParallelBatchProcessor[Any, Any, Any] = ParallelBatchProcessor(
        config=fast_config(max_workers=20), observers=[writer]
    )
    async for item in store.pending_items(run_id):
        await processor.add_work(LLMWorkItem(item.item_id, strategy, item.prompt, item.context))
    seen: list[int] = []

    async def watch() -> None:
        while True:
            seen.append(writer.buffered)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    await processor.process_all()
    watcher.cancel()
    await writer.close()
    assert writer.flushes > 3  # flushed while the run went on, not only at the end
    assert max(seen) < 1000  # drained as it filled: never half the run's 2,000 events
    assert writer.error is None and writer.buffered == 0
    assert (await store.get_run(run_id)).succeeded == 1000


async def test_a_retry_added_within_one_flush_starts_a_new_session(store: RunStore) -> None:
    """A failed item sent again at once (a retry by hand during the run) numbers on."""
    run_id = await store.create_run(name="t")
    await store.ingest(run_id, _items(1))
    writer = store.observer(run_id)
    ev, item = ProcessingEvent, "item-000"
    for event, data in [
        (ev.ITEM_STARTED, {"item_id": item, "attempt": 1}),
        (ev.ITEM_FAILED, {"item_id": item, "attempts": 1, "error": "boom", "error_category": "x"}),
        (ev.ITEM_STARTED, {"item_id": item, "attempt": 1}),
        (ev.ITEM_RETRY, {"item_id": item, "attempt": 1, "wait": 0.0, "error": "again"}),
        (ev.ITEM_STARTED, {"item_id": item, "attempt": 2}),
    ]:
        writer.on_event_sync(event, data)
    await writer.flush()
    running = await store.item(run_id, item)
    assert running is not None and running.status == "running" and running.attempts == 3
    assert [(a.attempt, a.outcome) for a in running.history] == [
        (1, "failed"),
        (2, "retry"),
        (3, None),
    ]
    assert (await store.get_run(run_id)).failed == 0  # it left "failed" when sent again
    writer.on_event_sync(
        ev.ITEM_COMPLETED, {"item_id": item, "attempts": 2, "tokens": {"input_tokens": 3}}
    )
    await writer.close()
    done = await store.item(run_id, item)
    assert done is not None and done.status == "succeeded" and done.attempts == 3
    assert [a.outcome for a in done.history] == ["failed", "retry", "ok"]
    run = await store.get_run(run_id)
    assert (run.succeeded, run.failed, run.input_tokens) == (1, 0, 3)


async def test_an_item_sent_again_without_a_reset_moves_between_counts(store: RunStore) -> None:
    run_id = await store.create_run(name="t")
    await store.ingest(run_id, _items(2))
    writer = store.observer(run_id)
    ev, item = ProcessingEvent, "item-000"
    done = {"item_id": item, "attempts": 1, "tokens": {"input_tokens": 5}, "cost": 0.25}
    for event, data in [
        (ev.ITEM_STARTED, {"item_id": item, "attempt": 1}),
        (ev.ITEM_COMPLETED, done),
    ]:
        writer.on_event_sync(event, data)
    await writer.flush()
    failed = {"item_id": item, "attempts": 1, "error": "E", "error_category": "c", "cost": 0.5}
    for event, data in [
        (ev.ITEM_STARTED, {"item_id": item, "attempt": 1}),
        (ev.ITEM_FAILED, failed),
    ]:
        writer.on_event_sync(event, data)  # sent again though it had succeeded
    # Results for an item this run does not hold change nothing (and force a recount).
    writer.on_event_sync(ev.ITEM_COMPLETED, {"item_id": "stranger", "attempts": 1})
    await writer.close()
    run = await store.get_run(run_id)
    assert (run.succeeded, run.failed, run.input_tokens, run.cost) == (0, 1, 5, 0.75)
    row = await store.item(run_id, item)
    assert row is not None and (row.status, row.attempts, row.cost) == ("failed", 2, 0.75)
    # The success it had keeps a row of its own once the item is sent again.
    assert [(a.attempt, a.outcome) for a in row.history] == [(1, "ok"), (2, "failed")]
    assert await store.item(run_id, "stranger") is None


async def test_a_failed_flush_keeps_its_events_for_the_next(
    store: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from async_batch_llm.store import committer as committer_module

    run_id = await store.create_run(name="t")
    await store.ingest(run_id, _items(3))
    # A long interval: the writer flushes only when asked, so the failure stays visible.
    writer = store.observer(run_id, flush_interval=60)
    real = committer_module.write_segments
    calls = 0

    def flaky(*args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise sqlite3.OperationalError("disk I/O error")
        real(*args)

    monkeypatch.setattr(committer_module, "write_segments", flaky)
    writer.on_event_sync(ProcessingEvent.ITEM_COMPLETED, {"item_id": "item-000", "attempts": 1})
    with pytest.raises(StoreError, match=r"could not record run .*disk I/O error"):
        await writer.flush()
    assert writer.buffered == 1 and writer.error is not None
    writer.on_event_sync(ProcessingEvent.ITEM_COMPLETED, {"item_id": "item-001", "attempts": 1})
    await writer.close()
    assert writer.error is None and writer.buffered == 0
    assert (await store.get_run(run_id)).succeeded == 2


async def test_a_commit_refused_by_a_locked_file_is_made_once_the_lock_is_gone(
    tmp_path: Path,
) -> None:
    """The writer has a connection of its own: another writer's lock fails a flush, not a run."""
    path = tmp_path / "runs.db"
    store = await RunStore.open(path, busy_timeout=0.1)
    try:
        run_id = await store.create_run(name="t")
        await store.ingest(run_id, _items(2))
        writer = store.observer(run_id, flush_interval=60)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        done = {"item_id": "item-000", "attempts": 1, "tokens": {"input_tokens": 4}}
        writer.on_event_sync(ProcessingEvent.ITEM_COMPLETED, done)
        with pytest.raises(StoreError, match="could not record run"):
            await writer.flush()
        assert writer.buffered == 1 and writer.error is not None
        other.execute("ROLLBACK")
        other.close()
        writer.on_event_sync(ProcessingEvent.ITEM_COMPLETED, {**done, "item_id": "item-001"})
        await writer.close()
        assert writer.error is None and writer.buffered == 0
        run = await store.get_run(run_id)
        assert (run.succeeded, run.input_tokens) == (2, 8)
    finally:
        await store.close()


def _random_events(rng: random.Random, items: int, count: int) -> list[Any]:
    """A plausible event stream: sessions of attempts, retries, results, resends."""
    ev = ProcessingEvent
    attempt = dict.fromkeys(range(items), 0)
    events: list[Any] = [(ev.BATCH_STARTED, {}, 0.0)]
    for step in range(1, count + 1):
        i = rng.randrange(items)
        item, now = f"item-{i:03d}", float(step)
        n = attempt[i]
        kind = rng.random()
        if n == 0 or kind < 0.2:
            attempt[i] = n = 1 if n == 0 or kind < 0.05 else n + 1
            events.append((ev.ITEM_STARTED, {"item_id": item, "attempt": n}, now))
        elif kind < 0.35:
            events.append((ev.ITEM_RETRY, {"item_id": item, "attempt": n, "wait": 0.1}, now))
        elif kind < 0.4:
            data = {"item_id": item, "attempt": n, "suggested_wait": 1.0}
            events.append((ev.RATE_LIMIT_HIT, data, now))
        else:
            done = {"item_id": item, "attempts": n, "duration": 0.5, "cost": i / 10 or None}
            if kind < 0.8:
                done["tokens"] = {"input_tokens": i, "output_tokens": 2, "cached_input_tokens": 1}
                events.append((ev.ITEM_COMPLETED, done, now))
            else:
                events.append((ev.ITEM_FAILED, {**done, "error": "E", "error_category": "c"}, now))
            attempt[i] = 0
    return events


def test_folding_in_pieces_gives_the_rows_of_folding_at_once() -> None:
    """The observer folds a flush's events in several goes: the rows must not depend on it."""
    from async_batch_llm.store.rows import fold

    rng = random.Random(4)
    for _ in range(50):
        events = _random_events(rng, items=rng.randint(1, 6), count=rng.randint(1, 40))
        whole = [segment.rows() for segment in fold(events)]
        pieces = None
        cut = 0
        while cut < len(events):
            step = rng.randint(1, 5)
            pieces = fold(events[cut : cut + step], pieces)
            cut += step
        assert pieces is not None
        assert [segment.rows() for segment in pieces] == whole


# ---------------------------------------------------------------------- settings


async def test_settings_are_stored_without_secrets(tmp_path: Path) -> None:
    settings = {
        "model": "openai/gpt-4o-mini",
        "api_base": "http://localhost:8000/v1",
        "api_key": "sk-live-1234567890abcdef",
        "OPENAI_API_KEY": "sk-other-secret-value-123",
        "token": "tok-secret-1",
        "auth_token": "tok-secret-2",
        "client_secret": "shh-secret-3",
        "password": "hunter2-secret",
        "max_tokens": 256,
        "max_tokens_per_minute": 90000,
        "workers": 8,
        "system_prompt": "Be brief.",
        "completion_options": {
            "temperature": 0.2,
            "extra_headers": {"Authorization": "Bearer abc-secret-4", "X-Trace": "1"},
        },
        "response_schema": {"properties": {"key_points": {"type": "array"}}},
    }
    path = tmp_path / "runs.db"
    async with await RunStore.open(path) as store:
        run_id = await store.create_run(name="s", settings=settings)
        stored = (await store.get_run(run_id)).settings
    assert stored == {
        "model": "openai/gpt-4o-mini",
        "api_base": "http://localhost:8000/v1",
        "max_tokens": 256,
        "max_tokens_per_minute": 90000,
        "workers": 8,
        "system_prompt": "Be brief.",
        "completion_options": {"temperature": 0.2, "extra_headers": {"X-Trace": "1"}},
        "response_schema": {"properties": {"key_points": {"type": "array"}}},
    }
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for secret in (
        b"sk-live",
        b"sk-other",
        b"tok-secret",
        b"shh-secret",
        b"hunter2",
        b"abc-secret",
    ):
        assert secret not in raw
    assert strip_secrets([{"session_token": "x", "keep": 1}]) == [{"keep": 1}]


# ---------------------------------------------------------------------- opening


async def test_files_that_are_not_run_stores_are_refused_clearly(tmp_path: Path) -> None:
    random_file = tmp_path / "random.bin"
    random_file.write_bytes(random.Random(7).randbytes(8192))
    text_file = tmp_path / "notes.txt"
    text_file.write_text("id,prompt\n1,hello\n")
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    corrupt = tmp_path / "corrupt.db"
    async with await RunStore.open(corrupt) as store:
        run_id = await store.create_run(name="x")
        await store.ingest(run_id, _items(2000))
    data = bytearray(corrupt.read_bytes())
    data[100 : 4096 * 4] = random.Random(3).randbytes(4096 * 4 - 100)
    corrupt.write_bytes(bytes(data))

    cases = {
        random_file: "not a SQLite database",
        text_file: "text file",
        foreign: "not a run store (tables: customers)",
        corrupt: "corrupt",
        tmp_path: "directory",
        tmp_path / "missing" / "runs.db": "no directory",
    }
    for path, reason in cases.items():
        with pytest.raises(StoreError) as caught:
            await RunStore.open(path)
        message = str(caught.value)
        assert str(path) in message and reason in message, message
        assert "\n" not in message and "Traceback" not in message
    with pytest.raises(StoreError, match="no run store at"):
        await RunStore.open(tmp_path / "absent.db", readonly=True)
    with sqlite3.connect(foreign) as db:  # someone else's file is left as it was
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert not Path(f"{foreign}-wal").exists()


async def test_a_store_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    await (await RunStore.open(path)).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    for readonly in (False, True):
        newer = rf"newer version .*schema v{SCHEMA_VERSION + 1}.* up to v{SCHEMA_VERSION}"
        with pytest.raises(StoreError, match=newer):
            await RunStore.open(path, readonly=readonly)


V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('app', 'async_batch_llm.run_store'), ('schema_version', '1');
CREATE TABLE runs (
  id TEXT PRIMARY KEY, name TEXT, source TEXT, settings TEXT NOT NULL DEFAULT '{}',
  status TEXT NOT NULL DEFAULT 'pending', created_at REAL NOT NULL, started_at REAL,
  finished_at REAL, total INTEGER NOT NULL DEFAULT 0, succeeded INTEGER NOT NULL DEFAULT 0,
  failed INTEGER NOT NULL DEFAULT 0, input_tokens INTEGER NOT NULL DEFAULT 0,
  output_tokens INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE items (
  run_id TEXT NOT NULL, item_id TEXT NOT NULL, idx INTEGER NOT NULL, prompt TEXT NOT NULL,
  context TEXT, status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
  output TEXT, error TEXT, error_category TEXT, input_tokens INTEGER NOT NULL DEFAULT 0,
  output_tokens INTEGER NOT NULL DEFAULT 0, started_at REAL, finished_at REAL, duration REAL,
  PRIMARY KEY (run_id, item_id)
);
CREATE INDEX items_status ON items (run_id, status);
CREATE UNIQUE INDEX items_order ON items (run_id, idx);
PRAGMA user_version = 1;
"""


async def test_a_v1_store_is_migrated(
    tmp_path: Path, fast_config: Callable[..., ProcessorConfig]
) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(V1_SCHEMA)
        db.execute("INSERT INTO runs (id, name, created_at) VALUES ('r-1', 'old run', 1.0)")
        db.executemany(
            "INSERT INTO items (run_id, item_id, idx, prompt, status, attempts, output, "
            "input_tokens, output_tokens) VALUES ('r-1', ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                ("a", 0, "p a", "succeeded", 1, "done a", 10, 5),
                ("b", 1, "p b", "failed", 3, None, 30, 0),
                ("c", 2, "p c", "pending", 0, None, 0, 0),
            ],
        )
    with pytest.raises(StoreError, match="older store schema v1"):
        await RunStore.open(path, readonly=True)
    async with await RunStore.open(path) as store:
        run = await store.get_run("r-1")
        assert (run.total, run.succeeded, run.failed, run.pending) == (3, 1, 1, 1)
        assert (run.input_tokens, run.cached_tokens, run.cost) == (40, 0, None)
        assert [p.item_id async for p in store.pending_items("r-1")] == ["c"]
        assert await store.reset_for_retry("r-1") == 1
        await _run(store, "r-1", FakeStrategy(), fast_config())
        b = await store.item("r-1", "b")
        assert b is not None and b.status == "succeeded" and b.attempts == 4
        assert [a.attempt for a in b.history] == [4]  # v1 kept no attempt history
        assert (await store.get_run("r-1")).succeeded == 3
        assert await store.integrity_check() == "ok"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = {row[1] for row in db.execute("PRAGMA table_info(items)")}
        assert {"cached_tokens", "cost", "attempt_base", "output_json"} <= columns


# ---------------------------------------------------------------------- ingest and reads


async def test_ingest_takes_objects_mappings_tuples_and_async_iterables(store: RunStore) -> None:
    class Obj:
        def __init__(self, id: str, prompt: str, context: Any = None) -> None:
            self.id, self.prompt, self.context = id, prompt, context

    async def agen() -> AsyncIterator[PendingItem]:
        for i in range(3):
            yield PendingItem(f"async-{i}", 0, f"p{i}", None, "pending", 0)

    run_id = await store.create_run(name="ingest")
    assert await store.ingest(run_id, [Obj("o1", "p", {"k": [1, 2]})]) == 1
    assert await store.ingest(run_id, [{"id": "m1", "prompt": "q", "context": None}]) == 1
    assert await store.ingest(run_id, [("t1", "r"), (7, "numeric id")]) == 2
    assert await store.ingest(run_id, agen(), batch_size=2) == 3
    rows = await store.items(run_id, limit=None)
    assert [(r.item_id, r.idx) for r in rows] == [
        ("o1", 0),
        ("m1", 1),
        ("t1", 2),
        ("7", 3),
        ("async-0", 4),
        ("async-1", 5),
        ("async-2", 6),
    ]
    assert rows[0].context == {"k": [1, 2]}
    assert (await store.get_run(run_id)).total == 7

    with pytest.raises(StoreError, match=r"duplicate item id 'd2'.*first 3 items are stored"):
        await store.ingest(
            run_id, [(f"d{i}", "x") for i in range(3)] + [("d2", "again")], batch_size=3
        )
    with pytest.raises(StoreError, match="the id is empty"):
        await store.ingest(run_id, [("  ", "x")])
    with pytest.raises(StoreError, match="prompt must be a string"):
        await store.ingest(run_id, [("p", 12)])
    with pytest.raises(StoreError, match="prompt is not valid text"):
        await store.ingest(run_id, [("p", "broken \ud800 text")])
    assert await store.ingest(run_id, [("ctx", "p", {"note": "broken \ud800"})]) == 1
    assert (await store.get_run(run_id)).total == 11
    with pytest.raises(StoreError, match=r"no run 'r-nope' in .*runs\.db"):
        await store.ingest("r-nope", [("a", "b")])


async def test_runs_by_id_or_latest_and_item_queries(
    store: RunStore, fast_config: Callable[..., ProcessorConfig]
) -> None:
    with pytest.raises(StoreError, match="no runs in"):
        await store.get_run("latest")
    first = await store.create_run(name="first")
    second = await store.create_run(name="second")
    assert first != second and first.startswith("r-") and len(first) == len("r-20261125-1a2b3c")
    assert (await store.get_run("latest")).id == second
    assert [r.id for r in await store.list_runs()] == [second, first]
    with pytest.raises(StoreError, match=r"no run 'r-missing' in .*runs\.db"):
        await store.get_run("r-missing")

    await store.ingest(second, _items(20))
    strategy = FakeStrategy(script={f"prompt {i}": ["bad_request"] for i in (3, 7, 11)})
    await _run(store, second, strategy, fast_config(max_workers=3))
    assert [r.item_id for r in await store.items(second, status="failed")] == [
        "item-003",
        "item-007",
        "item-011",
    ]
    page = await store.items(second, limit=5, offset=5)
    assert [r.idx for r in page] == [5, 6, 7, 8, 9]
    assert [r.item_id for r in await store.items(second, search="PROMPT 1")] == [
        "item-001",
        *[f"item-{i:03d}" for i in range(10, 20)],
    ]
    assert [r.item_id for r in await store.items(second, search="400 bad")] == [
        "item-003",
        "item-007",
        "item-011",
    ]
    assert await store.items(second, search="100%") == []
    assert [r.item_id for r in await store.failed_items(second, limit=2)] == [
        "item-003",
        "item-007",
    ]
    counts = await store.counts(second)
    assert (counts["succeeded"], counts["failed"], counts["total"]) == (17, 3, 20)
    await store.delete_run(first)
    assert [r.id for r in await store.list_runs()] == [second]


# ---------------------------------------------------------------------- resume and retry


async def test_resume_after_an_interruption_sends_exactly_what_is_not_done(
    store: RunStore, fast_config: Callable[..., ProcessorConfig]
) -> None:
    run_id = await store.create_run(name="r")
    await store.ingest(run_id, _items(60))
    release = asyncio.Event()

    class Stalling(FakeStrategy):
        async def execute(self, prompt: str, attempt: int, timeout: float, state: Any = None):
            if int(prompt.split()[1]) >= 20:
                await release.wait()  # the "slow" half never finishes before the crash
            return await super().execute(prompt, attempt, timeout, state)

    strategy = Stalling(script={"prompt 5": ["bad_request"]})
    writer = store.observer(run_id, flush_interval=0.01)
    processor: ParallelBatchProcessor[Any, Any, Any] = ParallelBatchProcessor(
        config=fast_config(max_workers=6), observers=[writer]
    )
    async for item in store.pending_items(run_id):
        await processor.add_work(LLMWorkItem(item.item_id, strategy, item.prompt, item.context))
    task = asyncio.create_task(processor.process_all())
    while (await store.counts(run_id))["running"] < 6:
        await asyncio.sleep(0.01)
    await writer.flush()
    task.cancel()  # the crash: the processor dies with six items under way
    await processor.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await writer.close()

    done = {r.item_id for r in await store.items(run_id, status=["succeeded", "failed"])}
    assert done == {f"item-{i:03d}" for i in range(20)}
    assert await store.mark_interrupted(run_id) == 6
    run = await store.get_run(run_id)
    assert run.status == "interrupted" and run.pending == 40
    interrupted = await store.items(run_id, status="interrupted")
    assert len(interrupted) == 6
    history = (await store.item(run_id, interrupted[0].item_id)).history  # type: ignore[union-attr]
    assert [a.outcome for a in history] == ["interrupted"]

    pending = [p async for p in store.pending_items(run_id, page_size=7)]
    assert [p.item_id for p in pending] == [f"item-{i:03d}" for i in range(20, 60)]
    assert [p.idx for p in pending] == list(range(20, 60))
    assert pending[0].context == {"i": 20} and pending[0].prompt == "prompt 20"
    with_failed = [p.item_id async for p in store.pending_items(run_id, include_failed=True)]
    assert with_failed == ["item-005", *[p.item_id for p in pending]]

    release.set()
    resumed = await _run(store, run_id, FakeStrategy(), fast_config(max_workers=6))
    assert {r.item_id for r in resumed.results} == {p.item_id for p in pending}
    run = await store.get_run(run_id)
    assert (run.succeeded, run.failed, run.pending, run.status) == (59, 1, 0, "completed")
    again = await store.item(run_id, interrupted[0].item_id)
    assert again is not None
    assert [(a.attempt, a.outcome) for a in again.history] == [(1, "interrupted"), (2, "ok")]


async def test_reset_for_retry_keeps_the_history(
    store: RunStore, fast_config: Callable[..., ProcessorConfig]
) -> None:
    run_id = await store.create_run(name="r")
    await store.ingest(run_id, _items(10))
    failing = FakeStrategy(
        script={f"prompt {i}": ["server_error"] * 2 for i in (1, 2, 3)},
        failed_usage={"input_tokens": 4, "output_tokens": 0, "total_tokens": 4},
    )
    await _run(store, run_id, failing, fast_config(retry={"max_attempts": 2}))
    run = await store.get_run(run_id)
    assert (run.succeeded, run.failed, run.status) == (7, 3, "completed")
    tokens_before = run.input_tokens

    assert await store.reset_for_retry(run_id, ["item-001", "item-009", "nope"]) == 1
    assert (await store.get_run(run_id)).failed == 2
    assert await store.reset_for_retry(run_id, None) == 2
    run = await store.get_run(run_id)
    assert (run.failed, run.pending, run.status) == (0, 3, "interrupted")
    reset = await store.item(run_id, "item-001")
    assert reset is not None and reset.status == "pending" and reset.error is None
    assert reset.attempts == 2 and len(reset.history) == 2

    await _run(store, run_id, FakeStrategy(), fast_config())
    item = await store.item(run_id, "item-001")
    assert item is not None and item.status == "succeeded" and item.attempts == 3
    assert [(a.attempt, a.outcome) for a in item.history] == [
        (1, "retry"),
        (2, "failed"),
        (3, "ok"),
    ]
    assert item.input_tokens == 8 + 10  # the failed session's tokens were paid for too
    run = await store.get_run(run_id)
    assert (run.succeeded, run.failed) == (10, 0)
    assert run.input_tokens == tokens_before + 3 * 10


# ---------------------------------------------------------------------- readers


async def test_a_read_only_reader_follows_a_run_while_it_is_written(
    tmp_path: Path, fast_config: Callable[..., ProcessorConfig]
) -> None:
    path = tmp_path / "runs.db"
    store = await RunStore.open(path)
    run_id = await store.create_run(name="watched")
    await store.ingest(run_id, _items(300))
    reader = await RunStore.open(path, readonly=True)
    seen: list[int] = []
    try:
        with pytest.raises(StoreError, match="read-only"):
            await reader.create_run(name="nope")
        with pytest.raises(StoreError, match="read-only"):
            reader.observer(run_id)

        async def watch() -> None:
            while True:
                seen.append((await reader.get_run(run_id)).succeeded)
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        writer_run = _run(store, run_id, FakeStrategy(latency=0.003), fast_config(max_workers=6))
        await writer_run
        await asyncio.sleep(0.05)
        watcher.cancel()
        assert seen == sorted(seen)
        assert any(0 < n < 300 for n in seen), seen  # it saw the run part-way
        assert seen[-1] == 300
    finally:
        await reader.close()
        await store.close()
    # With the writer gone (WAL checkpointed), a read-only open still works.
    async with await RunStore.open(path, readonly=True) as later:
        assert (await later.get_run("latest")).succeeded == 300


# ---------------------------------------------------------------------- export


class Answer(BaseModel):
    label: str
    score: float


async def test_export_jsonl_and_csv_parse_back(
    store: RunStore, fast_config: Callable[..., ProcessorConfig]
) -> None:
    run_id = await store.create_run(name="e")
    await store.ingest(run_id, _items(12))
    strategy = FakeStrategy(
        script={"prompt 4": ["bad_request"]},
        response=lambda prompt: Answer(label=prompt.upper(), score=0.5),
        usage={
            "input_tokens": 10,
            "output_tokens": 5,
            "total_tokens": 15,
            "cached_input_tokens": 2,
        },
    )
    await _run(store, run_id, strategy, fast_config(max_workers=4))

    out = io.StringIO()
    assert await store.export(run_id, "jsonl", out) == 12
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["id"] for r in records] == [f"item-{i:03d}" for i in range(12)]
    first = records[0]
    assert first["success"] is True and first["status"] == "succeeded"
    assert first["output"] == {"label": "PROMPT 0", "score": 0.5}
    assert first["context"] == {"i": 0}
    assert (first["attempts"], first["input_tokens"], first["cached_input_tokens"]) == (1, 10, 2)
    assert {
        "id",
        "success",
        "output",
        "error",
        "error_category",
        "attempts",
        "input_tokens",
    } <= set(first) and {
        "output_tokens",
        "cached_input_tokens",
        "cost",
        "status",
        "context",
    } <= set(first)
    failed = records[4]
    assert failed["success"] is False and failed["output"] is None
    assert "400" in failed["error"] and failed["error_category"]

    out = io.StringIO()
    assert await store.export(run_id, "csv", out) == 12
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["id"] for r in rows] == [r["id"] for r in records]
    assert json.loads(rows[0]["output"]) == {"label": "PROMPT 0", "score": 0.5}
    assert json.loads(rows[0]["context"]) == {"i": 0}
    assert rows[4]["success"] == "false" and rows[0]["success"] == "true"
    assert rows[0]["input_tokens"] == "10"
    with pytest.raises(StoreError, match="unknown export format 'xml'"):
        await store.export(run_id, "xml", io.StringIO())


# ---------------------------------------------------------------------- the kill test


def _committed(db: Path) -> set[str]:
    """Items whose result is committed, read from the file after a kill."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT item_id FROM items WHERE status = 'succeeded'").fetchall()
    return {row[0] for row in rows}


def _ledger(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines() if line]


def _start_worker(db: Path, ledger: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(db), str(ledger), "--items", "400"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "READY", line
    return proc


def test_nothing_committed_is_lost_or_sent_again_when_killed_at_any_instant(
    tmp_path: Path,
) -> None:
    rng = random.Random(20261125)
    partial_kills = 0
    for trial in range(4):
        db, ledger = tmp_path / f"kill-{trial}.db", tmp_path / f"ledger-{trial}.txt"
        kills: list[tuple[set[str], int]] = []
        for _ in range(1 + trial % 2):  # kill once, or twice (the second during a resume)
            proc = _start_worker(db, ledger)
            time.sleep(rng.uniform(0.0, 0.2))  # a run takes ~0.2-0.3 s
            proc.kill()
            proc.wait(timeout=10)
            committed = _committed(db)
            kills.append((committed, len(_ledger(ledger))))
            partial_kills += 0 < len(committed) < 400
        finish = subprocess.run(
            [sys.executable, str(WORKER), str(db), str(ledger), "--items", "400"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert finish.returncode == 0, finish.stderr
        assert finish.stdout.split() == ["READY", "DONE"]

        calls = _ledger(ledger)
        for committed, seen_before in kills:
            sent_again = committed & set(calls[seen_before:])
            assert not sent_again, (
                f"trial {trial}: committed before a kill, sent again: {sent_again}"
            )
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            statuses = conn.execute("SELECT status, count(*) FROM items GROUP BY status").fetchall()
            assert statuses == [("succeeded", 400)]
            total, succeeded, failed = conn.execute(
                "SELECT total, succeeded, failed FROM runs"
            ).fetchone()
            assert (total, succeeded, failed) == (400, 400, 0)
            oks = conn.execute(
                "SELECT item_id, count(*) FROM attempts WHERE outcome = 'ok' GROUP BY item_id "
                "HAVING count(*) > 1"
            ).fetchall()
            assert oks == []  # no item has two successful attempts on record
            assert (
                conn.execute("SELECT count(*) FROM attempts WHERE outcome IS NULL").fetchone()[0]
                == 0
            )
        assert set(calls) == {f"item-{i:04d}" for i in range(400)}
    assert partial_kills >= 2  # the kills did land mid-run
    assert os.path.exists(WORKER)


def test_a_program_that_never_closes_its_store_still_exits(tmp_path: Path) -> None:
    """aiosqlite's thread is not a daemon: the store's exit guard stops it at exit."""
    script = (
        "import asyncio\n"
        "from async_batch_llm.store import RunStore\n"
        "kept = []\n"  # no garbage collection closes it either
        "async def main():\n"
        f"    kept.append(await RunStore.open({str(tmp_path / 'runs.db')!r}))\n"
        "    await kept[0].create_run(settings={'model': 'm'})\n"
        "    print('opened', flush=True)\n"  # and never closed
        "asyncio.run(main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )  # a hang at exit raises TimeoutExpired
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "opened"
