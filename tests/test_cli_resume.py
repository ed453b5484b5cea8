"""The crash check of issue 4: kill ``abl-tui`` at random instants, resume, and lose nothing.

Exactly what a checker does by hand: a simulator in its own process (so its JSONL ledger
outlives every client), ``abl-tui run BATCH --headless --db FILE ...`` SIGKILLed at a seeded
random instant (during ingest, or mid-run after a random number of answers), ``abl-tui
resume latest`` (killed too, sometimes) until one finishes, then ``abl-tui export``. After
each kill the store is read with sqlite3: no item committed as succeeded by then may reach
the provider again. Ctrl-C (SIGINT) must exit 130, record the items under way as
interrupted and leave a run that ``resume`` completes.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from crash_support import (
    ID_OF_PROMPT,
    ITEM_IDS,
    N_ITEMS,
    PROMPTS,
    WORKERS,
    Chain,
    read_ledger,
    run_exists_now,
    simulator_process,
)
from support import ABL, PROCESS_TIMEOUT, cli_env


def check_nothing_lost_or_sent_twice(chain: Chain) -> None:
    """The acceptance of issue 4 in one go (for chains not shared by several tests)."""
    check_every_item_succeeded_once(chain)
    check_nothing_committed_was_sent_again(chain)
    check_tokens_of_the_last_ok_answer(chain)
    check_store_sound_and_run_completed(chain)


def check_every_item_succeeded_once(chain: Chain) -> None:
    records = chain.records()
    ids = [record["id"] for record in records]
    assert ids == ITEM_IDS, f"export has {len(ids)} items, expected {N_ITEMS}\n{chain.report()}"
    not_ok = [r["id"] for r in records if not r["success"]]
    assert not not_ok, f"{len(not_ok)} items did not succeed: {not_ok[:5]}\n{chain.report()}"
    for record in records:
        assert record["output"] == f"sim reply to {PROMPTS[record['id']][:40]}", record


def check_nothing_committed_was_sent_again(chain: Chain) -> None:
    """No result committed before a kill reaches the provider again afterwards."""
    ledger = read_ledger(chain.ledger)
    assert chain.kills, chain.report()
    for kill in chain.kills:
        before = ledger[: kill.ledger_position]
        ok_before = {ID_OF_PROMPT[e["last_user_message"]] for e in before if e["outcome"] == "ok"}
        unanswered = kill.succeeded - ok_before
        assert not unanswered, f"committed without an ok answer: {sorted(unanswered)[:5]}"
        sent_again = {ID_OF_PROMPT[e["last_user_message"]] for e in ledger[kill.ledger_position :]}
        resent = sorted(kill.succeeded & sent_again)
        assert not resent, (
            f"{len(resent)} items committed before the kill after step {kill.step} were sent "
            f"again: {resent[:5]}\n{chain.report()}"
        )


def check_tokens_of_the_last_ok_answer(chain: Chain) -> None:
    """Every item's tokens are those of its last ok answer: an answer a killed process got
    but had not committed is lost (the item is sent again), never counted twice."""
    last_ok: dict[str, dict[str, Any]] = {}
    for entry in read_ledger(chain.ledger):
        assert entry["model"] == "fake"
        if entry["outcome"] == "ok":
            last_ok[ID_OF_PROMPT[entry["last_user_message"]]] = entry
    records = chain.records()
    assert [r["id"] for r in records] == ITEM_IDS, f"export incomplete\n{chain.report()}"
    assert set(last_ok) == set(ITEM_IDS), chain.report()
    for record in records:
        answer = last_ok[record["id"]]
        stored = (record["input_tokens"], record["output_tokens"], record["cached_input_tokens"])
        sent = (answer["prompt_tokens"], answer["completion_tokens"], answer["cached_tokens"])
        assert stored == sent, (record, answer)
    with contextlib.closing(sqlite3.connect(chain.db)) as db:
        tokens = db.execute(
            "SELECT input_tokens, output_tokens, cached_tokens FROM runs"
        ).fetchone()
    assert tokens == tuple(
        sum(r[key] for r in records)
        for key in ("input_tokens", "output_tokens", "cached_input_tokens")
    )


def check_store_sound_and_run_completed(chain: Chain) -> None:
    for kill in chain.kills:
        assert kill.integrity == "ok", f"integrity after step {kill.step}: {kill.integrity}"
    with contextlib.closing(sqlite3.connect(chain.db)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        run = db.execute("SELECT status, total, succeeded, failed FROM runs").fetchone()
        statuses = dict(db.execute("SELECT status, count(*) FROM items GROUP BY status"))
    assert run == ("completed", N_ITEMS, N_ITEMS, 0), chain.report()
    assert statuses == {"succeeded": N_ITEMS}


# --- the tests ---------------------------------------------------------------------------------


TRIALS = {
    # seed, what happens to each process in turn
    "run-killed-in-ingest,resume-killed-mid-run": (41, ["ingest", "mid", "finish"]),
    "run-killed-mid-run,resume-killed-mid-run": (7, ["mid", "mid", "finish"]),
}


@dataclass
class Trial:
    chain: Chain
    steps: list[str]
    final_status: int


@pytest.fixture(scope="module", params=list(TRIALS))
def trial(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Trial:
    """One batch SIGKILLed at seeded random instants and resumed until a resume finishes."""
    seed, steps = TRIALS[request.param]
    folder = tmp_path_factory.mktemp("trial")
    with simulator_process(folder) as (url, ledger):
        chain = Chain(folder, url, ledger, random.Random(seed))
        status: int | None = None
        for how in steps[:-1]:
            status = chain.step(how)
            if status is not None:  # it ended before the kill point: no later kills
                break
        final = chain.step("finish") if status is None else status
    print(chain.report())  # shown with -s: where the kills landed
    return Trial(chain, steps, final)


def test_the_last_resume_finishes_with_exit_0(trial: Trial) -> None:
    last = len(trial.chain.log) - 1
    assert trial.final_status == 0, f"{trial.chain.report()}\n{trial.chain.output(last)[-2000:]}"


def test_every_kill_landed_where_planned(trial: Trial) -> None:
    assert [kill.how for kill in trial.chain.kills] == trial.steps[:-1], trial.chain.report()
    for kill in trial.chain.kills:
        if kill.how == "mid":
            assert kill.items_stored == N_ITEMS and 0 < len(kill.succeeded) < N_ITEMS


def test_every_item_succeeded_exactly_once_in_the_export(trial: Trial) -> None:
    check_every_item_succeeded_once(trial.chain)


def test_nothing_committed_before_a_kill_is_sent_again(trial: Trial) -> None:
    check_nothing_committed_was_sent_again(trial.chain)


def test_tokens_are_those_of_each_items_last_ok_answer(trial: Trial) -> None:
    check_tokens_of_the_last_ok_answer(trial.chain)


def test_store_is_sound_and_the_run_completed(trial: Trial) -> None:
    check_store_sound_and_run_completed(trial.chain)


def test_resume_closes_the_attempts_a_kill_left_open(trial: Trial) -> None:
    """History, not results: attempts a SIGKILL left under way are closed (interrupted) once
    the run is resumed, not shown as running forever in a completed run."""
    with contextlib.closing(sqlite3.connect(trial.chain.db)) as db:
        open_attempts = db.execute(
            "SELECT item_id, attempt FROM attempts WHERE outcome IS NULL"
        ).fetchall()
    assert not open_attempts, (
        f"{len(open_attempts)} attempts still open (outcome NULL), e.g. {open_attempts[:3]}\n"
        f"{trial.chain.report()}"
    )


@pytest.mark.parametrize(("how", "expected"), [("sigint", 130), ("sigterm", 143)])
def test_a_signal_mid_run_exits_cleanly_records_interrupted_items_and_resume_completes(
    tmp_path: Path, how: str, expected: int
) -> None:
    """Ctrl-C (SIGINT) exits 130 and SIGTERM 143, both with the same clean stop."""
    with simulator_process(tmp_path) as (url, ledger):
        chain = Chain(tmp_path, url, ledger, random.Random(5))
        status = chain.step(how)
        out = chain.output(0)
        assert status == expected, f"{chain.report()}\n{out[-2000:]}"
        assert "Traceback" not in out, out
        assert "interrupt" in out
        [kill] = chain.kills
        with contextlib.closing(sqlite3.connect(chain.db)) as db:
            run_status = db.execute("SELECT status FROM runs").fetchone()[0]
            statuses = dict(
                db.execute("SELECT status, count(*) FROM items GROUP BY status").fetchall()
            )
            open_attempts = db.execute(
                "SELECT count(*) FROM attempts WHERE outcome IS NULL"
            ).fetchone()[0]
            interrupted_attempts = db.execute(
                "SELECT count(*) FROM attempts WHERE outcome = 'interrupted'"
            ).fetchone()[0]
        assert run_status == "interrupted"
        assert statuses.get("running", 0) == 0, statuses
        assert 1 <= statuses.get("interrupted", 0) <= WORKERS, statuses
        assert open_attempts == 0
        assert interrupted_attempts == statuses["interrupted"]
        assert 0 < len(kill.succeeded) < N_ITEMS
        assert chain.step("finish") == 0, chain.output(1)[-2000:]
        check_nothing_lost_or_sent_twice(chain)


def test_kill_during_ingest_of_a_big_batch_then_resume_runs_every_item(tmp_path: Path) -> None:
    """A run killed while its items are being stored must not resume as a smaller batch.

    Dry run (nothing is sent, litellm is never loaded), with more items than one ingest
    transaction holds, killed as soon as the run exists: its items are then not all stored.
    """
    n_items = 6_000
    for attempt in range(3):
        folder = tmp_path / f"try{attempt}"
        folder.mkdir()
        (folder / "big.jsonl").write_text(
            "".join(f'{{"id": "b{n}", "prompt": "p{n}"}}\n' for n in range(n_items))
        )
        db = folder / "runs.db"
        proc = subprocess.Popen(
            [*ABL, "run", "big.jsonl", "--headless", "--dry-run", "--db", str(db)],
            cwd=folder,
            env=cli_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while not run_exists_now(db):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.001)
        proc.kill()
        proc.wait(PROCESS_TIMEOUT)
        with contextlib.closing(sqlite3.connect(db)) as conn:
            stored = conn.execute("SELECT count(*) FROM items").fetchone()[0]
        if stored < n_items:
            break
    else:
        pytest.skip("could not kill the run before its items were all stored")
    resume = subprocess.run(
        [*ABL, "resume", "latest", "--headless", "--db", str(db)],
        cwd=folder,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
    )
    with contextlib.closing(sqlite3.connect(db)) as conn:
        total, succeeded, status = conn.execute(
            "SELECT total, succeeded, status FROM runs"
        ).fetchone()
    assert (total, succeeded) == (n_items, n_items), (
        f"killed with {stored} of {n_items} items stored; resume exited {resume.returncode} "
        f"with run {status!r}, total {total}, succeeded {succeeded}:\n{resume.stdout[-800:]}"
    )
