"""Interrupts at any instant (issue 11, point 2): real signals to real ``abl-tui`` processes.

Mid-run signals are tested with the crash chain of tests/test_cli_resume.py; here are the
phases before the run is ready: while the batch is being stored (the process is frozen
with SIGSTOP once the store holds part of the batch, so the signal lands in that phase
for sure) and while a resume waits for another process's lease. Every one must exit 130
(SIGINT) or 143 (SIGTERM) with no traceback, fail no item, send nothing, and leave a run
that ``resume`` completes with every item done exactly once.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from crash_support import read_ledger, simulator_process
from support import PROCESS_TIMEOUT, count_rows, run_abl, start_abl, wait_until

N_BIG = 40_000  # eight ingest transactions (5,000 rows each)
PROMPT = "Classify this listing and answer with one word."


def _write_big_batch(folder: Path) -> Path:
    path = folder / "big.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for n in range(N_BIG):
            out.write(json.dumps({"id": f"b{n:05d}", "prompt": f"{n} {PROMPT}"}) + "\n")
    return path


def _signal_mid_ingest(proc: subprocess.Popen[str], db: Path, sig: int) -> int:
    """Freeze ``proc`` once part of the batch is stored, send ``sig``, let it go on; returns
    how many items were stored when it was frozen."""
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while (stored := count_rows(db, "items")) == 0:
        assert proc.poll() is None, "the run ended before storing anything"
        assert time.monotonic() < deadline, "nothing was stored"
        time.sleep(0.001)
    proc.send_signal(signal.SIGSTOP)
    stored = count_rows(db, "items")
    proc.send_signal(sig)
    proc.send_signal(signal.SIGCONT)
    return stored


def _run_big(folder: Path, *extra: str) -> subprocess.Popen[str]:
    return start_abl(folder, "run", "big.jsonl", "--headless", "--db", "runs.db", *extra)


def _items_by_status(db: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return dict(conn.execute("SELECT status, count(*) FROM items GROUP BY status").fetchall())


@pytest.mark.parametrize(("sig", "expected"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_the_batch_is_stored_fails_nothing_and_sends_nothing(
    tmp_path: Path, sig: int, expected: int
) -> None:
    """Issue 11's Ctrl-C during ingest: every item ended failed ("cannot schedule new
    futures after interpreter shutdown"). A real model, so litellm loads meanwhile."""
    _write_big_batch(tmp_path)
    with simulator_process(tmp_path) as (url, ledger):
        proc = _run_big(tmp_path, "--model", "openai/fake", "--api-base", url)
        stored = _signal_mid_ingest(proc, tmp_path / "runs.db", sig)
        out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
        sent = read_ledger(ledger)
    assert 0 < stored < N_BIG, f"frozen with {stored} items stored: not mid-ingest"
    assert proc.returncode == expected, f"exit {proc.returncode}\n{out[-1500:]}\n{err[-1500:]}"
    assert "Traceback" not in out + err and "cannot schedule" not in out + err, err
    assert "stopping" in err
    assert sent == [], f"{len(sent)} requests sent by an interrupted ingest"
    statuses = _items_by_status(tmp_path / "runs.db")
    assert set(statuses) == {"pending"}, statuses
    with contextlib.closing(sqlite3.connect(tmp_path / "runs.db")) as conn:
        status, total = conn.execute("SELECT status, total FROM runs").fetchone()
        leases = conn.execute("SELECT count(*) FROM leases").fetchone()[0]
    assert total == sum(statuses.values()) < N_BIG, "the signal did not stop the ingest"
    assert status == "pending", "stopped while storing: resume stores the rest"
    assert leases == 0, "an interrupted run kept its lease"


def test_a_run_interrupted_while_stored_resumes_every_item_exactly_once(tmp_path: Path) -> None:
    """Dry run (nothing to pay, so every item can be run here quickly): SIGTERM mid-ingest,
    then resume stores the rest and runs each item once."""
    _write_big_batch(tmp_path)
    proc = _run_big(tmp_path, "--dry-run", "--workers", "64")
    stored = _signal_mid_ingest(proc, tmp_path / "runs.db", signal.SIGTERM)
    out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
    assert 0 < stored < N_BIG, f"frozen with {stored} items stored: not mid-ingest"
    assert proc.returncode == 143, f"{out[-1500:]}\n{err[-1500:]}"
    resumed = run_abl(tmp_path, "resume", "latest", "--headless", "--db", "runs.db")
    assert resumed.returncode == 0, resumed.stdout[-1500:] + resumed.stderr
    with contextlib.closing(sqlite3.connect(tmp_path / "runs.db")) as conn:
        run = conn.execute("SELECT status, total, succeeded FROM runs").fetchone()
        attempts = dict(conn.execute("SELECT attempts, count(*) FROM items GROUP BY attempts"))
        ids = [row[0] for row in conn.execute("SELECT item_id FROM items ORDER BY idx")]
    assert run == ("completed", N_BIG, N_BIG)
    assert attempts == {1: N_BIG}, f"items run other than once: {attempts}"
    assert ids == [f"b{n:05d}" for n in range(N_BIG)]


def test_an_edited_items_file_is_refused_on_resume_unless_told_to_ignore(tmp_path: Path) -> None:
    """A run stopped mid-ingest finishes storing its batch from the items file: an edited
    file would lose or shift items, so the resume refuses it, naming the file."""
    batch = _write_big_batch(tmp_path)
    proc = _run_big(tmp_path, "--dry-run")
    assert 0 < _signal_mid_ingest(proc, tmp_path / "runs.db", signal.SIGINT) < N_BIG
    assert proc.wait(PROCESS_TIMEOUT) == 130
    lines = batch.read_text(encoding="utf-8").splitlines(keepends=True)
    batch.write_text("".join(lines[: N_BIG - 10]), encoding="utf-8")  # 10 items removed

    def resume(*extra: str) -> subprocess.CompletedProcess[str]:
        return run_abl(tmp_path, "resume", "latest", "--headless", "--db", "runs.db", *extra)

    refused = resume()
    assert refused.returncode == 2, refused.stdout[-1500:] + refused.stderr
    assert f"the items file {batch.resolve()} changed since run" in refused.stderr
    assert "--items-changed=ignore" in refused.stderr
    assert set(_items_by_status(tmp_path / "runs.db")) == {"pending"}
    accepted = resume("--items-changed", "ignore")
    assert accepted.returncode == 0, accepted.stdout[-1500:] + accepted.stderr
    with contextlib.closing(sqlite3.connect(tmp_path / "runs.db")) as conn:
        assert conn.execute("SELECT status, total FROM runs").fetchone() == (
            "completed",
            N_BIG - 10,
        )


def test_a_signal_while_waiting_for_another_owner_leaves_its_run_alone(tmp_path: Path) -> None:
    """A resume waiting (--wait) for another process's run stops at once on SIGINT."""
    (tmp_path / "small.jsonl").write_text(
        "".join(json.dumps({"id": f"s{n}", "prompt": "[[sim:slow=30]]"}) + "\n" for n in range(2))
    )
    with simulator_process(tmp_path) as (url, _ledger):
        owner = start_abl(
            tmp_path, "run", "small.jsonl", "--headless", "--db", "runs.db", "--model",
            "openai/fake", "--api-base", url, "--timeout", "60",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            db = tmp_path / "runs.db"
            wait_until(owner, lambda: count_rows(db, "leases") > 0, "the owner's lease")
            waiter = start_abl(
                tmp_path, "resume", "latest", "--wait", "--headless", "--db", "runs.db"
            )
            assert waiter.stderr is not None
            seen = ""
            deadline = time.monotonic() + PROCESS_TIMEOUT
            while "waiting for run" not in seen:
                line = waiter.stderr.readline()
                assert line or waiter.poll() is None, f"the waiter ended: {seen}"
                assert time.monotonic() < deadline
                seen += line
            waiter.send_signal(signal.SIGINT)
            _, err = waiter.communicate(timeout=PROCESS_TIMEOUT)
            assert waiter.returncode == 130, seen + err
            assert "Traceback" not in err
            assert owner.poll() is None, "the owner's run was disturbed"
            with contextlib.closing(sqlite3.connect(tmp_path / "runs.db")) as conn:
                owners = conn.execute("SELECT pid FROM leases").fetchall()
                running = conn.execute("SELECT status FROM runs").fetchone()[0]
            assert owners == [(owner.pid,)] and running == "running"
        finally:
            owner.send_signal(signal.SIGTERM)
            assert owner.wait(PROCESS_TIMEOUT) == 143
