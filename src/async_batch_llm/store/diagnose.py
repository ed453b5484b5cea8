"""Why the run store cannot take a write, in words a user can act on.

SQLite says "database or disk is full" or "database is locked"; the user needs to know
which file, and, for a lock, which process holds it. SQLite cannot tell, but on Linux
``/proc/locks`` lists every POSIX lock with its pid: in WAL mode a writer holds the
write-lock byte of the ``-shm`` file (byte 120), in rollback mode locks of the database
file itself.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from .lease import LeaseLost

#: The byte of the ``-shm`` file a WAL writer locks (``WALINDEX_LOCK_OFFSET``).
_WAL_WRITE_LOCK = 120


def is_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the store's size limit) has no room left."""
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc)
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


def is_write_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is the OS refusing a write (a file size limit, a full disk SQLite did
    not recognise as such, a failing device)."""
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorname", "") in ("SQLITE_IOERR_WRITE", "SQLITE_IOERR")
    return isinstance(exc, OSError) and exc.errno in (errno.EFBIG, errno.EIO)


def is_locked(exc: BaseException) -> bool:
    """Whether ``exc`` says another connection holds the file's write lock."""
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(exc)


def lock_holders(path: Path) -> list[int]:
    """Pids of other processes holding a write lock on the store (Linux only; [] elsewhere)."""
    targets: dict[int, str] = {}
    for suffix, kind in (("-shm", "shm"), ("", "db")):
        try:
            info = os.stat(f"{path}{suffix}")
        except OSError:
            continue
        targets[info.st_ino] = kind
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    me, pids = os.getpid(), []
    for line in lines:
        fields = line.split()
        if "->" in fields or len(fields) < 8:  # a waiter, not a holder
            continue
        _, kind, _, mode, pid, device, start = fields[:7]
        inode = int(device.rsplit(":", 1)[-1]) if device.count(":") == 2 else -1
        where = targets.get(inode)
        if kind != "POSIX" or mode != "WRITE" or where is None or int(pid) in (me, -1):
            continue
        if where == "shm" and start != str(_WAL_WRITE_LOCK):
            continue
        if int(pid) not in pids:
            pids.append(int(pid))
    return pids


def describe_write_error(exc: BaseException | None, path: Path) -> str:
    """One line saying why ``path`` takes no writes (``exc`` None: commits are only slow)."""
    if isinstance(exc, LeaseLost):
        return str(exc)
    if exc is not None and is_full(exc):
        return f"the run store {path} is full: no room left on its disk (or its size limit)"
    if exc is not None and is_write_failure(exc):
        return (
            f"the run store {path} cannot grow: writing to it failed ({exc}; a full disk "
            "or a file size limit does this)"
        )
    if exc is None or is_locked(exc):
        holders = lock_holders(path)
        who = f" by pid {', '.join(map(str, holders))}" if holders else " by another process"
        if exc is None and not holders:
            return f"the run store {path} is not keeping up: its commits are waiting"
        return f"the run store {path} is locked{who} (it holds the write lock)"
    return f"the run store {path} cannot be written: {exc}"
