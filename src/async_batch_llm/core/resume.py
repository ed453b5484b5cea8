"""Carrying on a coroutine that was stepped once in place.

The engine steps each strategy call once where it stands: a call that finishes without
awaiting (a cache hit, a dry run) then costs no timer. One that awaited is carried on by
awaiting :class:`ResumedCoroutine` under the per-attempt timeout.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any


class ResumedCoroutine:
    """Awaitable that carries on a coroutine already stepped once (which yielded ``first``)."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, to_yield = self._coro, self._first
        while True:
            try:
                sent = yield to_yield
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # delivered into the coroutine, as `await` would
                try:
                    to_yield = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    to_yield = coro.send(sent)
                except StopIteration as stop:
                    return stop.value
