"""Open aiosqlite connections must not keep the interpreter from exiting.

aiosqlite serves each connection from a thread that is not a daemon: a program that ends
without closing its store (an exception, Ctrl-C) would hang at exit, joining that thread.
A daemon watchdog waits for the main thread to finish and then stops every connection
still open, through aiosqlite's public ``stop()``; SQLite rolls back what was unfinished.
"""

from __future__ import annotations

import threading
import weakref

import aiosqlite

_open: weakref.WeakSet[aiosqlite.Connection] = weakref.WeakSet()
_lock = threading.Lock()
_watchdog: threading.Thread | None = None


def stop_at_exit(connection: aiosqlite.Connection) -> None:
    """Stop ``connection`` when the main thread ends, if it is still open then."""
    global _watchdog
    with _lock:
        _open.add(connection)
        if _watchdog is None:
            _watchdog = threading.Thread(
                target=_stop_when_main_ends, name="run-store-exit-guard", daemon=True
            )
            _watchdog.start()


def _stop_when_main_ends() -> None:
    threading.main_thread().join()  # returns as the interpreter starts shutting down
    with _lock:
        connections = list(_open)
    for connection in connections:
        try:
            connection.stop()
        except Exception:  # nothing can be reported this late: stop the others
            continue
