"""Back-pressure from the store to the provider (issue 11, point 3).

When the store cannot commit (its file locked by another process, no room to grow), the
engine must stop paying for answers it cannot keep: dispatch pauses once a few answers
wait uncommitted, so at most the worker count plus that limit are ever paid and not
stored; the run recovers by itself if the cause goes away within ``--store-wait``, else
it stops with exit status 74 and a message saying why, and ``resume`` completes it later.
The simulator's ledger is the truth about what was paid; committed rows are what was kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from async_batch_llm import (
    LLMCallStrategy,
    LLMWorkItem,
    ParallelBatchProcessor,
    ProcessorConfig,
    TokenUsage,
)
from async_batch_llm.store import RunStore
from async_batch_llm.store.diagnose import describe_write_error, lock_holders
from crash_support import ID_OF_PROMPT, N_ITEMS, Chain, read_ledger
from crash_support import simulator_process as simulator
from support import PROCESS_TIMEOUT, run_abl, start_abl, wait_until

WORKERS = 4
LIMIT = max(1, WORKERS // 2)  # abl_tui.runner.unsettled_limit(WORKERS)
SLOW = "latency_mean=0.03"


# ---------------------------------------------------------------------- the words


def test_a_full_store_and_a_locked_one_are_told_apart_naming_the_locker(tmp_path: Path) -> None:
    path = tmp_path / "full.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("CREATE TABLE t (x)")
        db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
        try:
            db.execute("INSERT INTO t VALUES (zeroblob(100000))")
        except sqlite3.OperationalError as exc:
            full = exc
    assert "is full: no room left" in describe_write_error(full, path)

    locked = tmp_path / "locked.db"
    with _lock_held_by_another_process(locked) as holder:
        with contextlib.closing(sqlite3.connect(locked, timeout=0.01)) as db:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                busy = exc
        assert lock_holders(locked) == [holder.pid]
        assert f"is locked by pid {holder.pid}" in describe_write_error(busy, locked)


@contextlib.contextmanager
def _lock_held_by_another_process(path: Path) -> Any:
    """A process that holds ``path``'s write lock (WAL) until the block ends."""
    script = (
        "import sqlite3, sys\n"
        "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "db.execute('PRAGMA journal_mode = WAL')\n"
        "db.execute('CREATE TABLE IF NOT EXISTS lockers (x)')\n"
        "db.execute('BEGIN IMMEDIATE'); db.execute('INSERT INTO lockers VALUES (1)')\n"
        "print('LOCKED', flush=True); sys.stdin.readline()\n"
        "db.execute('ROLLBACK')\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "LOCKED"
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(PROCESS_TIMEOUT)


# ---------------------------------------------------------------------- the writer's gate


class PaidStrategy(LLMCallStrategy[str]):
    """Answers after a few ms and counts every answer handed back (paid)."""

    def __init__(self) -> None:
        self.paid: list[str] = []
        self.in_flight = 0

    async def execute(
        self, prompt: str, attempt: int, timeout: float, state: Any = None
    ) -> tuple[str, TokenUsage]:
        self.in_flight += 1
        try:
            await asyncio.sleep(0.003)
        finally:
            self.in_flight -= 1
        self.paid.append(prompt)
        return f"answer to {prompt}", {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}


def _committed(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as db:
        return int(
            db.execute("SELECT count(*) FROM items WHERE status = 'succeeded'").fetchone()[0]
        )


async def _until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.002)


async def test_a_locked_store_pauses_dispatch_within_the_bound_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    """Another connection takes the write lock mid-run: the writer's commit waits, answers
    pile up to the limit, dispatch pauses; once the lock is gone every answer is committed
    and the run finishes, each item paid exactly once."""
    path, n_items, workers, limit = tmp_path / "runs.db", 400, 8, 4
    store = await RunStore.open(path)
    run_id = await store.create_run(name="pressure")
    await store.ingest(run_id, ((f"i{k:03d}", f"i{k:03d}") for k in range(n_items)))
    strategy = PaidStrategy()
    writer = store.observer(run_id, flush_interval=0.01, max_unsettled=limit)
    processor: ParallelBatchProcessor[str, str, None] = ParallelBatchProcessor(
        config=ProcessorConfig(max_workers=workers, timeout_per_item=30), observers=[writer]
    )
    changes: list[bool] = []

    def on_pressure(blocked: bool) -> None:
        changes.append(blocked)
        processor.pause() if blocked else processor.resume()

    writer.on_pressure = on_pressure
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        await processor.start(collect_results=False)
        for k in range(n_items):
            await processor.add_work(LLMWorkItem(f"i{k:03d}", strategy, f"i{k:03d}"))
        await _until(lambda: len(strategy.paid) >= 50, "50 answers")
        locker.execute("BEGIN IMMEDIATE")
        await _until(lambda: writer.blocked, "dispatch blocked")
        await _until(lambda: strategy.in_flight == 0, "the calls under way ended")
        paid_while_locked = len(strategy.paid)
        unstored = paid_while_locked - _committed(path)
        assert 0 < unstored <= workers + limit, f"{unstored} answers paid and not stored"
        assert processor.paused
        locker.execute("ROLLBACK")  # the cause goes away: the run carries on by itself
        await processor.finish()
        await asyncio.wait_for(processor.join(), 60)
        await writer.close()
    finally:
        locker.close()
        await store.close()
    assert changes[:2] == [True, False], changes
    assert sorted(strategy.paid) == [f"i{k:03d}" for k in range(n_items)], "paid twice"
    assert _committed(path) == n_items


# ---------------------------------------------------------------------- real processes


def _unstored_answers(chain: Chain) -> set[str]:
    """Items the provider answered ok that the store does not hold as succeeded."""
    answered = {
        ID_OF_PROMPT[e["last_user_message"]]
        for e in read_ledger(chain.ledger)
        if e["outcome"] == "ok"
    }
    return answered - chain.state()[2]


def _run(chain: Chain, *extra: str, preexec: Any = None) -> subprocess.Popen[str]:
    return start_abl(
        chain.folder, "run", "batch.jsonl", "--headless", "--db", str(chain.db), "--model",
        "openai/fake", "--api-base", chain.url, "--workers", str(WORKERS), *extra,
        preexec_fn=preexec,
    )  # fmt: skip


def _resume_to_the_end(chain: Chain) -> None:
    resumed = run_abl(chain.folder, "resume", "latest", "--headless", "--db", str(chain.db))
    assert resumed.returncode == 0, resumed.stdout[-1500:] + resumed.stderr
    with contextlib.closing(sqlite3.connect(chain.db)) as db:
        run = db.execute("SELECT status, total, succeeded FROM runs").fetchone()
    assert run == ("completed", N_ITEMS, N_ITEMS)


def _wait_for_answers(chain: Chain, proc: subprocess.Popen[str], count: int) -> None:
    wait_until(proc, lambda: chain.tail.poll() >= count, f"{count} answers")


def test_a_lock_held_past_the_end_stops_the_run_with_74_naming_the_locker(
    tmp_path: Path,
) -> None:
    """The checker's case: another process takes the store's write lock mid-run and keeps
    it. Dispatch stops within the bound, the run stops after --store-wait with exit 74 and
    a message naming that process; resume completes once the lock is gone."""
    with simulator(tmp_path, settings=SLOW) as (url, ledger):
        chain = Chain(tmp_path, url, ledger, random.Random(11))
        proc = _run(chain, "--store-wait", "1")
        _wait_for_answers(chain, proc, 40)
        with _lock_held_by_another_process(chain.db) as locker:
            out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
            assert proc.returncode == 74, f"{out[-1500:]}\n{err[-1500:]}"
            assert f"is locked by pid {locker.pid}" in err, err
            assert "abl-tui resume r-" in err and "Traceback" not in err
        unstored = _unstored_answers(chain)
        assert len(unstored) <= WORKERS + LIMIT, f"{len(unstored)} answers paid, not stored"
        _resume_to_the_end(chain)


def _limit_file_size() -> None:
    """In the child: no file may grow past 1.5 MB (a disk that fills up, for this process)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_500_000, resource.RLIM_INFINITY))


def test_a_store_that_cannot_grow_stops_the_run_with_74_within_the_bound(
    tmp_path: Path,
) -> None:
    with simulator(tmp_path, settings=SLOW) as (url, ledger):
        chain = Chain(tmp_path, url, ledger, random.Random(12))
        proc = _run(chain, "--store-wait", "1", preexec=_limit_file_size)
        out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
        assert proc.returncode == 74, f"{out[-1500:]}\n{err[-1500:]}"
        assert "cannot grow" in err or "is full" in err, err
        assert "Traceback" not in err, err
        committed = len(chain.state()[2])
        assert 0 < committed < N_ITEMS, f"{committed} committed: the limit never bit"
        unstored = _unstored_answers(chain)
        assert len(unstored) <= WORKERS + LIMIT, f"{len(unstored)} answers paid, not stored"
        _resume_to_the_end(chain)
