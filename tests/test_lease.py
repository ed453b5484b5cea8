"""One owner per run (issue 11, point 1): the lease table, and real ``abl-tui`` processes.

The store-level tests use real SQLite files and real processes for "the owner is dead";
the command-line tests run the real program against a simulator process whose ledger says
what was paid: two resumes started at once, a resume while the run's process is alive,
and ``resume --wait``.
"""

from __future__ import annotations

import contextlib
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from async_batch_llm import LLMWorkItem, ParallelBatchProcessor, ProcessorConfig
from async_batch_llm.store import RunStore, StoreError
from async_batch_llm.store.keeper import LeaseKeeper
from async_batch_llm.store.lease import (
    WHOLE_RUN,
    LeaseClaim,
    LeaseHeld,
    LeaseLost,
    LeaseScope,
    pid_alive,
)
from async_batch_llm.testing import FakeStrategy
from crash_support import (
    ID_OF_PROMPT,
    ITEM_IDS,
    N_ITEMS,
    Chain,
    read_ledger,
    simulator_process,
)
from support import PROCESS_TIMEOUT, count_rows, run_abl, start_abl, wait_until


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[RunStore]:
    opened = await RunStore.open(tmp_path / "runs.db")
    yield opened
    await opened.close()


async def _run_with_items(store: RunStore, n: int = 10) -> str:
    run_id = await store.create_run(name="leased")
    await store.ingest(run_id, ((f"i{k}", f"p{k}") for k in range(n)))
    return run_id


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------------- the table


async def test_a_second_owner_is_refused_naming_the_first(store: RunStore) -> None:
    run_id = await _run_with_items(store)
    first, second = LeaseClaim(), LeaseClaim()
    lease = await store.acquire_lease(run_id, first)
    assert (lease.owner, lease.pid, lease.host) == (first.owner, first.pid, first.host)
    with pytest.raises(LeaseHeld) as held:
        await store.acquire_lease(run_id, second)
    message = str(held.value)
    assert f"pid {first.pid} on host {socket.gethostname()} since " in message
    assert "--wait" in message and run_id in message
    assert [lease.owner for lease in await store.leases(run_id)] == [first.owner]
    # The owner asking again keeps its lease; once it lets go, the other gets it.
    await store.acquire_lease(run_id, first)
    await store.release_lease(run_id, first)
    assert (await store.acquire_lease(run_id, second)).owner == second.owner


async def test_a_lease_taken_with_the_run_blocks_everyone_else(store: RunStore) -> None:
    claim = LeaseClaim()
    run_id = await store.create_run(name="new", lease=claim)
    [lease] = await store.leases(run_id)
    assert lease.owner == claim.owner and lease.scope == WHOLE_RUN
    with pytest.raises(LeaseHeld):
        await store.acquire_lease(run_id, LeaseClaim())
    await store.delete_run(run_id)
    assert await store.leases(run_id) == []


async def test_a_dead_owner_on_this_host_is_taken_over_at_once(store: RunStore) -> None:
    run_id = await _run_with_items(store)
    dead = LeaseClaim(pid=_dead_pid())
    await store.acquire_lease(run_id, dead)
    assert not pid_alive(dead.pid)
    heir = LeaseClaim()
    assert (await store.acquire_lease(run_id, heir)).owner == heir.owner
    with pytest.raises(LeaseLost, match="taken over"):
        await store.renew_lease(run_id, dead)


async def test_an_owner_elsewhere_is_dead_only_once_its_heartbeat_is_stale(
    store: RunStore,
) -> None:
    run_id = await _run_with_items(store)
    remote = LeaseClaim(pid=1, host="another-machine")
    await store.acquire_lease(run_id, remote)
    with pytest.raises(LeaseHeld, match="on host another-machine"):
        await store.acquire_lease(run_id, LeaseClaim(), stale_after=30)
    with sqlite3.connect(store.path) as db:  # its last heartbeat, a minute ago
        db.execute("UPDATE leases SET heartbeat_at = heartbeat_at - 60")
    heir = LeaseClaim()
    assert (await store.acquire_lease(run_id, heir, stale_after=30)).owner == heir.owner


async def test_scopes_overlap_unless_their_item_ranges_are_disjoint(store: RunStore) -> None:
    assert WHOLE_RUN.overlaps(LeaseScope(500, 600))
    assert LeaseScope(0, 100).overlaps(LeaseScope(99, None))
    assert not LeaseScope(0, 100).overlaps(LeaseScope(100, 200))
    assert not LeaseScope(100, 200).overlaps(LeaseScope(0, 100))
    # In the store: disjoint ranges of one run can be held by two owners, overlapping not.
    run_id = await _run_with_items(store, 200)
    await store.acquire_lease(run_id, LeaseClaim(), scope=LeaseScope(0, 100))
    await store.acquire_lease(run_id, LeaseClaim(), scope=LeaseScope(100, None))
    with pytest.raises(LeaseHeld):
        await store.acquire_lease(run_id, LeaseClaim(), scope=LeaseScope(50, 60))
    assert len(await store.leases(run_id)) == 2


async def test_a_writer_whose_lease_was_taken_over_records_nothing(store: RunStore) -> None:
    run_id = await _run_with_items(store, 4)
    old, heir = LeaseClaim(), LeaseClaim()
    await store.acquire_lease(run_id, old)
    writer = store.observer(run_id, owner=old.owner, flush_interval=0.01)
    await store.release_lease(run_id, old)  # as a takeover would leave it
    await store.acquire_lease(run_id, heir)
    processor: ParallelBatchProcessor[str, str, None] = ParallelBatchProcessor(
        config=ProcessorConfig(max_workers=2, timeout_per_item=5), observers=[writer]
    )
    async with processor:
        for item in await store.items(run_id):
            await processor.add_work(LLMWorkItem(item.item_id, FakeStrategy(), item.prompt))
        await processor.process_all()
    with pytest.raises(StoreError, match="taken over"):
        await writer.close()
    assert isinstance(writer.error, LeaseLost)
    assert (await store.counts(run_id))["succeeded"] == 0


async def test_the_keeper_renews_and_stops_the_owner_who_lost_the_lease(
    store: RunStore,
) -> None:
    run_id = await _run_with_items(store)
    lost: list[LeaseLost] = []
    keeper = LeaseKeeper(store, interval=0.02, on_lost=lost.append)
    await keeper.acquire(run_id)
    [before] = await store.leases(run_id)
    deadline = time.monotonic() + 10
    while (await store.leases(run_id))[0].heartbeat_at == before.heartbeat_at:
        assert time.monotonic() < deadline, "no heartbeat"
        await _tick()
    with sqlite3.connect(store.path) as db:  # someone took the run over
        db.execute("UPDATE leases SET owner = 'someone-else'")
    while not lost:
        assert time.monotonic() < deadline, "the loss went unnoticed"
        await _tick()
    await keeper.release()
    assert [lease.owner for lease in await store.leases(run_id)] == ["someone-else"]


async def _tick() -> None:
    import asyncio

    await asyncio.sleep(0.01)


async def test_a_v2_store_gains_the_lease_table(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    async with await RunStore.open(path) as created:
        run_id = await _run_with_items(created)
    with sqlite3.connect(path) as db:  # back to schema v2
        for column in ("status", "rate_limits", "prompt", "parameters"):  # v4's
            db.execute(f"ALTER TABLE attempts DROP COLUMN {column}")
        db.execute("DROP TABLE provider_batches")
        db.execute("DROP TABLE provider_batch_items")
        db.execute("DROP TABLE leases")
        db.execute("ALTER TABLE runs DROP COLUMN note")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        db.execute("PRAGMA user_version = 2")
    async with await RunStore.open(path) as store:
        await store.acquire_lease(run_id, LeaseClaim())
        await store.mark_interrupted(run_id, note="why")
        assert (await store.get_run(run_id)).note == "why"


def test_a_new_store_file_is_private(tmp_path: Path) -> None:
    import asyncio

    async def create() -> None:
        async with await RunStore.open(tmp_path / "private.db") as store:
            await _run_with_items(store)

    asyncio.run(create())
    for name in ("private.db", "private.db-wal", "private.db-shm"):
        path = tmp_path / name
        if path.exists():
            assert path.stat().st_mode & 0o777 == 0o600, name


# ---------------------------------------------------------------------- real processes

LEASE_WORKERS = 4
SLOW = "latency_mean=0.03"  # 4 workers at ~30 ms: the run lasts a few seconds


def _start(chain: Chain, *args: str, name: str) -> subprocess.Popen[str]:
    out = (chain.folder / f"{name}.out").open("wb")
    with out:
        db = str(chain.db)
        return start_abl(
            chain.folder, *args, "--db", db, "--headless", stdout=out, stderr=subprocess.STDOUT
        )


def _output(chain: Chain, name: str) -> str:
    return (chain.folder / f"{name}.out").read_text(encoding="utf-8", errors="replace")


def _ok_answers(ledger: list[dict[str, object]]) -> Counter[str]:
    return Counter(
        ID_OF_PROMPT[str(entry["last_user_message"])]
        for entry in ledger
        if entry["outcome"] == "ok"
    )


def _run_args(chain: Chain) -> list[str]:
    return [
        "run", "batch.jsonl", "--model", "openai/fake", "--api-base", chain.url,
        "--workers", str(LEASE_WORKERS),
    ]  # fmt: skip


def test_two_resumes_at_once_one_runs_the_other_is_refused(tmp_path: Path) -> None:
    with simulator_process(tmp_path, settings=SLOW) as (url, ledger_path):
        chain = Chain(tmp_path, url, ledger_path, random.Random(3))
        first = _start(chain, *_run_args(chain), name="run")
        wait_until(first, lambda: chain.tail.poll() >= 40, "40 answers")
        first.kill()
        first.wait(PROCESS_TIMEOUT)
        killed_at = len(read_ledger(ledger_path))
        committed = chain.state()[2]
        pair = [_start(chain, "resume", "latest", name=f"resume{n}") for n in (1, 2)]
        statuses = [proc.wait(PROCESS_TIMEOUT) for proc in pair]
    outputs = [_output(chain, f"resume{n}") for n in (1, 2)]
    assert sorted(statuses) == [0, 75], f"{statuses}\n{outputs[0][-1500:]}\n{outputs[1][-1500:]}"
    refused = outputs[statuses.index(75)]
    assert re.search(r"is being run by another process: pid \d+ on host \S+ since", refused)
    assert "Traceback" not in refused
    ledger = read_ledger(ledger_path)
    after = _ok_answers(ledger[killed_at:])
    twice = [item for item, count in after.items() if count > 1]
    assert not twice, f"{len(twice)} items answered twice after the kill: {twice[:5]}"
    assert not committed & set(after), "an item committed before the kill was sent again"
    assert set(after) | committed == set(ITEM_IDS)
    check_run_completed(chain.db)


def test_a_resume_while_the_run_goes_is_refused_or_waits_for_it(tmp_path: Path) -> None:
    with simulator_process(tmp_path, settings=SLOW) as (url, ledger_path):
        chain = Chain(tmp_path, url, ledger_path, random.Random(4))
        first = _start(chain, *_run_args(chain), name="run")
        wait_until(first, lambda: chain.tail.poll() >= 20, "20 answers")
        refused = run_abl(tmp_path, "resume", "latest", "--db", str(chain.db), "--headless")
        waiter = _start(chain, "resume", "latest", "--wait", name="waiter")
        wait_until(waiter, lambda: "waiting for run" in _output(chain, "waiter"), "waiting")
        assert first.poll() is None, "the run ended before the waiter was seen waiting"
        assert first.wait(PROCESS_TIMEOUT) == 0, _output(chain, "run")[-2000:]
        assert waiter.wait(PROCESS_TIMEOUT) == 0, _output(chain, "waiter")[-2000:]
    assert refused.returncode == 75, refused.stdout + refused.stderr
    assert f"pid {first.pid} on host" in refused.stderr, refused.stderr
    answers = _ok_answers(read_ledger(ledger_path))
    assert set(answers) == set(ITEM_IDS) and set(answers.values()) == {1}, "paid twice"
    check_run_completed(chain.db)


def test_a_run_left_by_a_killed_process_is_taken_over_at_once(tmp_path: Path) -> None:
    """SIGKILL leaves the lease behind; the pid is gone, so resume does not wait for the
    heartbeat to go stale."""
    chain = Chain(tmp_path, "http://127.0.0.1:9/v1", tmp_path / "ledger.jsonl", random.Random(1))
    proc = start_abl(
        tmp_path, "run", "batch.jsonl", "--dry-run", "--db", str(chain.db), "--headless",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_until(proc, lambda: count_rows(chain.db, "leases") > 0, "a lease")
    proc.send_signal(signal.SIGKILL)
    proc.wait(PROCESS_TIMEOUT)
    resumed = run_abl(tmp_path, "resume", "latest", "--db", str(chain.db), "--headless")
    assert resumed.returncode == 0, resumed.stdout[-1500:] + resumed.stderr
    check_run_completed(chain.db)
    assert count_rows(chain.db, "leases") == 0, "the lease outlived its run"


def check_run_completed(db: Path) -> None:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        run = conn.execute("SELECT status, total, succeeded, failed FROM runs").fetchone()
        leases = conn.execute("SELECT count(*) FROM leases").fetchone()[0]
    assert run == ("completed", N_ITEMS, N_ITEMS, 0)
    assert leases == 0
