"""One owner per run: a lease row, taken in a write transaction and kept alive by a heartbeat.

A lease says which process may send a run's items and record their results: its owner (a
random id per runner, see :class:`LeaseClaim`), the pid and host it runs on, when it took
the lease and when it last showed it was alive (``heartbeat_at``). It is taken in ONE
``BEGIN IMMEDIATE`` transaction that reads the leases in its way and inserts its own, so
two processes can never both hold one; the run's writer checks it in every commit (a
process that lost its lease records nothing more), and the owner deletes it when it ends.

A lease whose owner is dead is taken over in that same transaction: dead means no
heartbeat for ``stale_after`` seconds, or (at once) a pid that is gone on this very host.
The takeover deletes the old row only if it still holds the owner and heartbeat just read
(compare-and-set), so a late heartbeat of a slow-but-alive owner is never overwritten.

**Scope, and sharing one run later.** A lease covers the items with ``first_idx <= idx <
end_idx`` (``end_idx`` None: to the end). Today every lease covers the whole run
(:data:`WHOLE_RUN`). Taking a lease refuses only *overlapping* leases, so several processes
(or machines sharing the file) can later split one run by leasing disjoint ranges, each
sending only the pending items of its range and writing only their results; the run ends
when no range is left pending. Nothing else in the table has to change for that.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from .errors import StoreError

#: Seconds between heartbeats of a running owner.
HEARTBEAT_INTERVAL = 2.0
#: Seconds without a heartbeat after which an owner on another host is presumed dead: long
#: enough to outlast a commit waiting on a locked file (the store's busy timeout, 10 s).
STALE_AFTER = 30.0


@dataclass(frozen=True, slots=True)
class LeaseScope:
    """The items a lease covers: ``first_idx <= idx < end_idx`` (None: to the end)."""

    first_idx: int = 0
    end_idx: int | None = None

    def overlaps(self, other: LeaseScope) -> bool:
        """Whether the two scopes share an item."""
        ends_before = self.end_idx is not None and self.end_idx <= other.first_idx
        starts_after = other.end_idx is not None and other.end_idx <= self.first_idx
        return not (ends_before or starts_after)


#: The scope of every lease today: all of the run's items.
WHOLE_RUN = LeaseScope()


@dataclass(frozen=True, slots=True)
class LeaseClaim:
    """Who asks for leases: one per runner (a fresh random owner id), on this pid and host."""

    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease as stored."""

    run_id: str
    owner: str
    pid: int
    host: str
    acquired_at: float
    heartbeat_at: float
    scope: LeaseScope = WHOLE_RUN

    def describe(self, now: float | None = None) -> str:
        """``pid 4242 on host box since 14:03:05 (last heartbeat 1 s ago)``."""
        now = time.time() if now is None else now
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.acquired_at))
        ago = max(0.0, now - self.heartbeat_at)
        return f"pid {self.pid} on host {self.host} since {since} (last heartbeat {ago:.0f} s ago)"


class LeaseHeld(StoreError):
    """The run is leased by another owner that is alive."""

    def __init__(self, holder: Lease) -> None:
        self.holder = holder
        super().__init__(
            f"run {holder.run_id} is being run by another process: {holder.describe()}; "
            "wait for it with --wait, or stop that process first"
        )


class LeaseLost(StoreError):
    """This owner's lease is gone: another process took the run over (it thought us dead)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(
            f"run {run_id} was taken over by another process (this one had stopped renewing "
            "its lease): stopping without recording anything more"
        )


_COLUMNS = "run_id, owner, pid, host, acquired_at, heartbeat_at, first_idx, end_idx"


def _lease(row: Any) -> Lease:
    run_id, owner, pid, host, acquired_at, heartbeat_at, first_idx, end_idx = row
    return Lease(
        run_id, owner, pid, host, acquired_at, heartbeat_at, LeaseScope(first_idx, end_idx)
    )


def _overlap_sql() -> str:
    """The leases of a run that overlap the scope ``(?2, ?3)``."""
    return (
        f"SELECT {_COLUMNS} FROM leases WHERE run_id = ?1 "
        "AND (?3 IS NULL OR first_idx < ?3) AND (end_idx IS NULL OR end_idx > ?2)"
    )


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (a zombie, killed but not reaped, does not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux): os.kill's answer stands
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def owner_alive(lease: Lease, claim: LeaseClaim, now: float, stale_after: float) -> bool:
    """Whether the lease's owner is presumed alive (see the module docstring)."""
    if now - lease.heartbeat_at > stale_after:
        return False
    if lease.host == claim.host and lease.pid != claim.pid:
        return pid_alive(lease.pid)
    return True  # another host, or another runner of this very process: its heartbeat tells


def _scope_params(run_id: str, scope: LeaseScope) -> tuple[str, int, int | None]:
    return run_id, scope.first_idx, scope.end_idx


async def insert_lease(
    db: aiosqlite.Connection, run_id: str, claim: LeaseClaim, scope: LeaseScope, now: float
) -> Lease:
    """Insert ``claim``'s lease (inside the caller's write transaction)."""
    await db.execute(
        "INSERT INTO leases (run_id, first_idx, end_idx, owner, pid, host, acquired_at, "
        "heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (run_id, scope.first_idx, scope.end_idx, claim.owner, claim.pid, claim.host, now, now),
    )
    return Lease(run_id, claim.owner, claim.pid, claim.host, now, now, scope)


async def acquire(
    db: aiosqlite.Connection,
    run_id: str,
    claim: LeaseClaim,
    scope: LeaseScope,
    stale_after: float,
) -> Lease:
    """Take the lease (inside the caller's write transaction), taking over dead owners'.

    Raises :class:`LeaseHeld` naming a live owner of an overlapping lease. The same claim
    asking again renews its own lease.
    """
    now = time.time()
    rows = await db.execute_fetchall(_overlap_sql(), _scope_params(run_id, scope))
    for holder in map(_lease, rows):
        if holder.owner == claim.owner:
            await db.execute(
                "DELETE FROM leases WHERE run_id = ? AND first_idx = ? AND owner = ?",
                (run_id, holder.scope.first_idx, holder.owner),
            )
            continue
        if owner_alive(holder, claim, now, stale_after):
            raise LeaseHeld(holder)
        cursor = await db.execute(  # compare-and-set: only the dead owner's row as just read
            "DELETE FROM leases WHERE run_id = ? AND first_idx = ? AND owner = ? "
            "AND heartbeat_at = ?",
            (run_id, holder.scope.first_idx, holder.owner, holder.heartbeat_at),
        )
        if cursor.rowcount != 1:
            raise LeaseHeld(holder)
    return await insert_lease(db, run_id, claim, scope, now)


async def renew(
    db: aiosqlite.Connection, run_id: str, claim: LeaseClaim, scope: LeaseScope
) -> None:
    """Stamp the heartbeat (inside the caller's write transaction); :class:`LeaseLost` if the
    lease is no longer this owner's."""
    cursor = await db.execute(
        "UPDATE leases SET heartbeat_at = ? WHERE run_id = ? AND first_idx = ? AND owner = ?",
        (time.time(), run_id, scope.first_idx, claim.owner),
    )
    if cursor.rowcount != 1:
        raise LeaseLost(run_id)


async def release(
    db: aiosqlite.Connection, run_id: str, claim: LeaseClaim, scope: LeaseScope
) -> None:
    """Delete this owner's lease (inside the caller's write transaction), if it still has it."""
    await db.execute(
        "DELETE FROM leases WHERE run_id = ? AND first_idx = ? AND owner = ?",
        (run_id, scope.first_idx, claim.owner),
    )


async def leases_of(db: aiosqlite.Connection, run_id: str) -> list[Lease]:
    """Every lease of a run, in scope order."""
    rows = await db.execute_fetchall(
        f"SELECT {_COLUMNS} FROM leases WHERE run_id = ? ORDER BY first_idx", (run_id,)
    )
    return [_lease(row) for row in rows]


def check_owner(db: sqlite3.Connection, run_id: str, owner: str) -> None:
    """Inside the writer's transaction: :class:`LeaseLost` unless ``owner`` holds a lease of
    ``run_id`` (a process that lost its lease must not record results another now sends)."""
    found = db.execute(
        "SELECT 1 FROM leases WHERE run_id = ? AND owner = ? LIMIT 1", (run_id, owner)
    ).fetchone()
    if found is None:
        raise LeaseLost(run_id)
