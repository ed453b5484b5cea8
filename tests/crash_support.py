"""A batch taken through kills and resumes, for the process tests (crash, lease, interrupt,
back-pressure): the simulator in its own process, its JSONL ledger (the truth about what was
paid), the batch's items, and the chain of ``abl-tui`` runs and resumes."""

from __future__ import annotations

import contextlib
import json
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import ABL, PROCESS_TIMEOUT, cli_env

SIMULATOR = [sys.executable, "-m", "async_batch_llm.simulator"]
WORKERS = 16
N_ITEMS = 320
LATENCY = "latency_mean=0.01"  # the default profile (prompt cache on) with 5-15 ms answers
FILLER = "Classify this product listing into one catalogue category and answer with one word: "


def prompt_of(n: int) -> str:
    """Unique from its first characters (the simulator echoes 40 and logs 200 of them)."""
    return f"item-{n:04d} {FILLER}steel water bottle model {n}, 750 ml, blue"


ITEM_IDS = [f"item-{n:04d}" for n in range(N_ITEMS)]
PROMPTS = {f"item-{n:04d}": prompt_of(n) for n in range(N_ITEMS)}
ID_OF_PROMPT = {prompt: item_id for item_id, prompt in PROMPTS.items()}
assert all(len(p) < 200 for p in PROMPTS.values())


def _default_sigint() -> None:
    # A shell's background job starts with SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: restore the default so SIGINT acts like Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# --- the simulator process and its ledger ------------------------------------------------------


@contextlib.contextmanager
def simulator_process(folder: Path, settings: str = LATENCY) -> Iterator[tuple[str, Path]]:
    """``python -m async_batch_llm.simulator`` on a free port; yields (url, ledger).

    ``settings``: the ``--set`` of the default profile (its latency by default)."""
    ledger = folder / "ledger.jsonl"
    log = folder / "simulator.log"  # a file, not a pipe: nothing can block on a full pipe
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *SIMULATOR,
                "--port", "0", "--profile", "default", "--set", settings, "--ledger", str(ledger),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=cli_env(),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"listening on (\S+)", log.read_text(errors="replace"))):
            assert proc.poll() is None, f"the simulator ended: {log.read_text()}"
            assert time.monotonic() < deadline, f"the simulator did not start: {log.read_text()}"
            time.sleep(0.02)
        yield found.group(1), ledger
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class LedgerTail:
    """Counts the ledger's ok answers as it grows, reading only what is new."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.ok = 0
        self._partial = b""

    def poll(self) -> int:
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
            self.offset += len(data)
            data, self._partial = (self._partial + data).rpartition(b"\n")[::2]
            self.ok += data.count(b'"outcome": "ok"')
        return self.ok


def read_ledger(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def run_exists_now(path: Path) -> bool:
    """Whether a run is committed in the store at ``path`` (read-only, never waits long)."""
    if not path.exists():
        return False
    try:
        uri = f"{path.resolve().as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=0.05)) as db:
            return db.execute("SELECT count(*) FROM runs").fetchone()[0] > 0
    except sqlite3.Error:
        return False


# --- the abl-tui processes ---------------------------------------------------------------------


@dataclass
class Kill:
    """What was true right after one process was killed."""

    step: int
    how: str
    ledger_position: int  # ledger lines written by then
    run_exists: bool
    items_stored: int
    succeeded: set[str]
    integrity: str


@dataclass
class Chain:
    """One batch taken through kills and resumes to the end."""

    folder: Path
    url: str
    ledger: Path
    rng: random.Random
    db: Path = field(init=False)
    tail: LedgerTail = field(init=False)
    kills: list[Kill] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    _records: list[dict[str, Any]] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.db = self.folder / "runs.db"
        self.tail = LedgerTail(self.ledger)
        batch = self.folder / "batch.jsonl"
        batch.write_text(
            "".join(json.dumps({"id": i, "prompt": PROMPTS[i]}) + "\n" for i in ITEM_IDS)
        )

    def start(self) -> subprocess.Popen[bytes]:
        """``run`` while the store holds no run yet, else ``resume latest``."""
        if self.state()[0]:
            args = ["resume", "latest", "--db", str(self.db), "--headless"]
        else:
            args = [
                "run", "batch.jsonl", "--headless", "--db", str(self.db),
                "--model", "openai/fake", "--api-base", self.url, "--workers", str(WORKERS),
            ]  # fmt: skip
        step = len(self.log)
        self.log.append(" ".join(args[:2]))
        out = (self.folder / f"step{step}.out").open("wb")
        with out:
            return subprocess.Popen(
                [*ABL, *args],
                cwd=self.folder,
                env=cli_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_default_sigint,
            )

    def output(self, step: int) -> str:
        return (self.folder / f"step{step}.out").read_text(encoding="utf-8", errors="replace")

    def state(self) -> tuple[bool, int, set[str], str]:
        """(a run exists, items stored, ids committed as succeeded, integrity check)."""
        if not self.db.exists():
            return False, 0, set(), "ok"
        with contextlib.closing(sqlite3.connect(self.db, timeout=10)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
            if "runs" not in tables:
                return False, 0, set(), integrity
            runs = db.execute("SELECT count(*) FROM runs").fetchone()[0]
            stored = db.execute("SELECT count(*) FROM items").fetchone()[0]
            done = {
                r[0]
                for r in db.execute("SELECT item_id FROM items WHERE status = ?", ("succeeded",))
            }
            return runs > 0, stored, done, integrity

    def wait_for(self, proc: subprocess.Popen[bytes], ready: Callable[[], bool]) -> bool:
        """Poll ``ready`` until it holds (True) or the process ends (False)."""
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while not ready():
            if proc.poll() is not None:
                return False
            assert time.monotonic() < deadline, f"step {len(self.log) - 1} hangs:\n{self.report()}"
            time.sleep(0.002)
        return True

    def kill(self, proc: subprocess.Popen[bytes], how: str, sig: int) -> int:
        proc.send_signal(sig)
        status = proc.wait(PROCESS_TIMEOUT)
        exists, stored, done, integrity = self.state()
        position = len(read_ledger(self.ledger))
        self.kills.append(Kill(len(self.log) - 1, how, position, exists, stored, done, integrity))
        return status

    def step(self, how: str) -> int | None:
        """One process: killed ``how`` ('ingest', 'mid', 'sigint', 'sigterm') or run to its end
        ('finish'). Returns the exit status, or None if it was SIGKILLed."""
        succeeded_before = len(self.state()[2])
        proc = self.start()
        if how == "ingest":
            if self.wait_for(proc, lambda: run_exists_now(self.db)):
                time.sleep(self.rng.uniform(0, 0.004))
                self.kill(proc, how, signal.SIGKILL)
                return None
        elif how in ("mid", "sigint", "sigterm"):
            remaining = N_ITEMS - succeeded_before
            target = self.tail.poll() + self.rng.randint(remaining // 5, remaining * 3 // 5)
            if self.wait_for(proc, lambda: self.tail.poll() >= target):
                time.sleep(self.rng.uniform(0, 0.03))
                sig = {"mid": signal.SIGKILL, "sigint": signal.SIGINT}.get(how, signal.SIGTERM)
                status = self.kill(proc, how, sig)
                return None if how == "mid" else status
        status = proc.wait(PROCESS_TIMEOUT)
        self.log[-1] += f" -> exit {status} (not killed)" if how != "finish" else f" -> {status}"
        return status

    def report(self) -> str:
        lines = [f"processes: {self.log}"]
        lines += [
            f"kill after step {k.step} ({k.how}): ledger {k.ledger_position}, run "
            f"{'exists' if k.run_exists else 'missing'}, {k.items_stored} items stored, "
            f"{len(k.succeeded)} succeeded"
            for k in self.kills
        ]
        return "\n".join(lines)

    def records(self) -> list[dict[str, Any]]:
        """``abl-tui export latest --format jsonl`` of the store (read once)."""
        if self._records is None:
            self._records = self._export()
        return self._records

    def _export(self) -> list[dict[str, Any]]:
        proc = subprocess.run(
            [*ABL, "export", "latest", "--db", str(self.db), "--format", "jsonl"],
            cwd=self.folder,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT,
        )
        assert proc.returncode == 0, proc.stderr
        return [json.loads(line) for line in proc.stdout.splitlines()]
