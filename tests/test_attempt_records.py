"""What each attempt records, from the engine's events to real SQLite files: its HTTP status,
the provider's rate-limit snapshot, and for a replay the prompt and parameters it sent; the
v3 -> v4 upgrade of a real file, the batch journal's tables included."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from async_batch_llm import LLMWorkItem, ParallelBatchProcessor, ProcessingEvent, ProcessorConfig
from async_batch_llm.observers.base import BaseObserver
from async_batch_llm.providers.limits import ProviderLimits
from async_batch_llm.store import SCHEMA_VERSION, RunStore, StoreError
from async_batch_llm.store.provider_batches import SqliteBatchJournal
from async_batch_llm.testing.fake import FakeStrategy

LIMITS = ProviderLimits(
    requests_limit=60, requests_remaining=0, requests_reset_s=2.5, tokens_limit=1000
)


class Overloaded(Exception):
    """A 503 that carries the provider's rate-limit headers, as the transports raise it."""

    status_code = 503

    def __init__(self) -> None:
        super().__init__("503 the server is overloaded")
        self.rate_limits = LIMITS


class LimitedWithHeaders(Exception):
    """A 429 with the headers that say when the budget is back."""

    status_code = 429

    def __init__(self) -> None:
        super().__init__("429 Too Many Requests")
        self.rate_limits = LIMITS


class Forbidden(Exception):
    """A final 403 with no rate-limit headers."""

    status_code = 403


class LimitedAnswer(FakeStrategy):
    """Succeeds with the provider's limits in its metadata, as the real transports do."""

    async def execute(self, prompt: str, attempt: int, timeout: float, state: Any = None) -> Any:
        output, usage = await super().execute(prompt, attempt, timeout, state)
        return output, usage, {"rate_limits": LIMITS}


SNAPSHOT = {"requests_limit": 60, "requests_remaining": 0, "requests_reset_s": 2.5}
SNAPSHOT |= {"tokens_limit": 1000}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[RunStore]:
    opened = await RunStore.open(tmp_path / "runs.db")
    try:
        yield opened
    finally:
        await opened.close()


class Recorder(BaseObserver):
    """Keeps every event with its payload."""

    def __init__(self, events: list[tuple[ProcessingEvent, dict[str, Any]]]) -> None:
        self.events = events

    async def on_event(self, event: ProcessingEvent, data: dict[str, Any]) -> None:
        self.events.append((event, data))


async def _send(
    store: RunStore,
    run_id: str,
    items: list[LLMWorkItem[Any, Any, Any]],
    config: ProcessorConfig,
    requests: dict[str, tuple[str | None, str | None]] | None = None,
    events: list[tuple[ProcessingEvent, dict[str, Any]]] | None = None,
) -> None:
    """Send ``items`` through a real processor with the store's writer (and a recorder)."""
    writer = store.observer(run_id)
    for item_id, (prompt, parameters) in (requests or {}).items():
        writer.note_request(item_id, prompt, parameters)
    observers: list[Any] = [writer]
    if events is not None:
        observers.append(Recorder(events))
    processor: ParallelBatchProcessor[Any, Any, Any] = ParallelBatchProcessor(
        config=config, observers=observers
    )
    for item in items:
        await processor.add_work(item)
    await processor.process_all()
    await writer.close()


# ---------------------------------------------------------------------- engine payloads


async def test_failed_attempts_carry_their_status_and_rate_limits(
    store: RunStore, fast_config: Callable[..., ProcessorConfig]
) -> None:
    strategy = FakeStrategy(
        script={
            "retried": [Overloaded(), "ok"],
            "limited": [LimitedWithHeaders(), "ok"],
            "refused": [Forbidden()],
        }
    )
    run_id = await store.create_run(name="t", settings={"model": "fake"})
    prompts = ["retried", "limited", "refused", "plain"]
    await store.ingest(run_id, [(p, p) for p in prompts])
    events: list[tuple[ProcessingEvent, dict[str, Any]]] = []
    items = [LLMWorkItem(p, strategy, p) for p in prompts]
    await _send(store, run_id, items, fast_config(), events=events)

    by_kind = {(kind, data["item_id"]): data for kind, data in events if "item_id" in data}
    retry = by_kind[(ProcessingEvent.ITEM_RETRY, "retried")]
    assert (retry["status"], retry["rate_limits"]) == (503, SNAPSHOT)
    hit = by_kind[(ProcessingEvent.RATE_LIMIT_HIT, "limited")]
    assert (hit["status"], hit["rate_limits"]) == (429, SNAPSHOT)
    failed = by_kind[(ProcessingEvent.ITEM_FAILED, "refused")]
    assert failed["status"] == 403 and "rate_limits" not in failed
    plain = by_kind[(ProcessingEvent.ITEM_COMPLETED, "plain")]
    assert "status" not in plain and "rate_limits" not in plain  # nothing to say: no keys

    retried = await store.item(run_id, "retried")
    assert retried is not None
    first, second = retried.history
    assert (first.outcome, first.status, first.rate_limits) == ("retry", 503, SNAPSHOT)
    assert (second.outcome, second.status, second.prompt, second.parameters) == (
        "ok",
        None,
        None,
        None,
    )
    limited = await store.item(run_id, "limited")
    assert limited is not None
    assert (limited.history[0].status, limited.history[0].rate_limits) == (429, SNAPSHOT)
    refused = await store.item(run_id, "refused")
    assert refused is not None
    assert [(a.outcome, a.status, a.rate_limits) for a in refused.history] == [
        ("failed", 403, None)
    ]


async def test_a_success_keeps_the_limits_the_provider_declared(
    store: RunStore, fast_config: Callable[..., ProcessorConfig]
) -> None:
    strategy = LimitedAnswer(script={"again": ["error", "ok"]})
    run_id = await store.create_run(name="t", settings={"model": "fake"})
    await store.ingest(run_id, [("again", "again")])
    events: list[tuple[ProcessingEvent, dict[str, Any]]] = []
    await _send(
        store, run_id, [LLMWorkItem("again", strategy, "again")], fast_config(), None, events
    )
    completed = [d for k, d in events if k is ProcessingEvent.ITEM_COMPLETED]
    assert completed[0]["rate_limits"] == SNAPSHOT
    item = await store.item(run_id, "again")
    assert item is not None
    assert [(a.outcome, a.rate_limits) for a in item.history] == [("retry", None), ("ok", SNAPSHOT)]


# ---------------------------------------------------------------------- replays


async def test_a_replay_records_what_it_sent_and_the_item_keeps_its_prompt(
    store: RunStore, fast_config: Callable[..., ProcessorConfig]
) -> None:
    strategy = FakeStrategy(response=lambda prompt: f"answer to {prompt}")
    run_id = await store.create_run(name="t", settings={"model": "fake", "max_tokens": 50})
    await store.ingest(run_id, [("a", "original prompt"), ("b", "other prompt")])
    originals = [
        LLMWorkItem("a", strategy, "original prompt"),
        LLMWorkItem("b", strategy, "other prompt"),
    ]
    await _send(store, run_id, originals, fast_config())

    parameters = json.dumps({"model": "fake", "max_tokens": 9})
    replay = LLMWorkItem("a", strategy, "edited prompt")
    await _send(store, run_id, [replay], fast_config(), {"a": ("edited prompt", parameters)})

    item = await store.item(run_id, "a")
    assert item is not None
    assert item.prompt == "original prompt"  # the stored prompt stays the original
    assert item.output == "answer to edited prompt"  # the result is the replay's
    assert item.status == "succeeded" and item.attempts == 2
    first, second = item.history
    assert (first.attempt, first.prompt, first.parameters) == (1, None, None)
    assert (second.attempt, second.outcome, second.prompt) == (2, "ok", "edited prompt")
    assert second.parameters == {"model": "fake", "max_tokens": 9}
    other = await store.item(run_id, "b")
    assert other is not None and [a.prompt for a in other.history] == [None]
    run = await store.get_run(run_id)
    assert (run.succeeded, run.failed, run.total) == (2, 0, 2)


async def test_every_attempt_of_a_replay_records_it_and_only_that_session(
    store: RunStore, fast_config: Callable[..., ProcessorConfig]
) -> None:
    strategy = FakeStrategy(script={"edited": ["error", "ok"]})
    run_id = await store.create_run(name="t", settings={"model": "fake"})
    await store.ingest(run_id, [("a", "first")])
    await _send(store, run_id, [LLMWorkItem("a", strategy, "first")], fast_config())
    await _send(
        store,
        run_id,
        [LLMWorkItem("a", strategy, "edited")],
        fast_config(),
        {"a": ("edited", None)},
    )
    await _send(store, run_id, [LLMWorkItem("a", strategy, "first")], fast_config())
    item = await store.item(run_id, "a")
    assert item is not None
    assert [(a.attempt, a.outcome, a.prompt) for a in item.history] == [
        (1, "ok", None),
        (2, "retry", "edited"),
        (3, "ok", "edited"),
        (4, "ok", None),  # a later plain retry sends the item's own prompt again
    ]


# ---------------------------------------------------------------------- the v3 -> v4 upgrade


def _back_to_v3(path: Path, *, journal_tables: bool) -> None:
    """Turn a current store file into what schema v3 wrote (optionally with the batch journal's
    tables, which its ``setup()`` created in v3 files used for a batch run)."""
    with sqlite3.connect(path) as db:
        for column in ("status", "rate_limits", "prompt", "parameters"):
            db.execute(f"ALTER TABLE attempts DROP COLUMN {column}")
        if not journal_tables:
            db.execute("DROP TABLE provider_batches")
            db.execute("DROP TABLE provider_batch_items")
        db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
        db.execute("PRAGMA user_version = 3")


@pytest.mark.parametrize("journal_tables", [False, True])
async def test_a_v3_store_is_upgraded_in_place(
    tmp_path: Path, fast_config: Callable[..., ProcessorConfig], journal_tables: bool
) -> None:
    path = tmp_path / "v3.db"
    strategy = FakeStrategy(script={"p": ["error", "ok"]})
    async with await RunStore.open(path) as created:
        run_id = await created.create_run(name="old", settings={"model": "fake"})
        await created.ingest(run_id, [("a", "p")])
        await _send(created, run_id, [LLMWorkItem("a", strategy, "p")], fast_config())
    _back_to_v3(path, journal_tables=journal_tables)

    async with await RunStore.open(path) as store:
        item = await store.item(run_id, "a")
        assert item is not None
        assert [(a.outcome, a.status, a.rate_limits, a.prompt) for a in item.history] == [
            ("retry", None, None, None),
            ("ok", None, None, None),
        ]
    journal = await SqliteBatchJournal.open(path, run_id)  # its setup() runs on the new file
    try:
        assert await journal.chunks() == []
    finally:
        await journal.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            "4",
        )
        columns = {row[1] for row in db.execute("PRAGMA table_info(attempts)")}
        assert {"status", "rate_limits", "prompt", "parameters"} <= columns
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert {"provider_batches", "provider_batch_items", "provider_batches_run"} <= tables


async def test_a_fresh_store_has_one_schema_with_the_batch_journal(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    async with await RunStore.open(path):
        pass
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert {"runs", "items", "attempts", "leases", "provider_batches"} <= tables
    assert "provider_batch_items" in tables


async def test_a_failed_upgrade_leaves_the_v3_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    async with await RunStore.open(path):
        pass
    _back_to_v3(path, journal_tables=False)
    with sqlite3.connect(path) as db:  # a column the migration adds exists already: it fails
        db.execute("ALTER TABLE attempts ADD COLUMN parameters TEXT")
    with pytest.raises(StoreError, match="duplicate column"):
        await RunStore.open(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
        columns = {row[1] for row in db.execute("PRAGMA table_info(attempts)")}
        assert "status" not in columns  # the transaction rolled back every step
