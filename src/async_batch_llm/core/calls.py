"""Calling a strategy once: how its class takes ``state``, and what it must give back.

The per-attempt timeout, and what a failure means, are the processor's business; this
module knows only the strategy protocol (``execute``/``dry_run``/``on_error``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, NamedTuple

from ..strategies.errors import StrategyReturnError
from .signatures import NO_STATE, POSITIONAL, call_shape


class CallOutcome(NamedTuple):
    """What one successful call gave back: its output, token usage and metadata."""

    output: Any
    usage: Mapping[str, Any] | None
    metadata: dict[str, Any] | None  # None when the call returned none (or an empty one)


def start_call(
    strategy: Any, prompt: str, attempt: int, timeout: float, state: Any, *, dry_run: bool
) -> Awaitable[Any]:
    """The awaitable of one call: ``dry_run``, or ``execute`` with ``state`` as its class
    takes it (see :mod:`.signatures`)."""
    if dry_run:
        return strategy.dry_run(prompt)  # type: ignore[no-any-return]
    passing = call_shape(strategy)[0]
    if passing == POSITIONAL:
        return strategy.execute(prompt, attempt, timeout, state)  # type: ignore[no-any-return]
    if passing == NO_STATE:  # written for the API before ``state``
        return strategy.execute(prompt, attempt, timeout)  # type: ignore[no-any-return]
    return strategy.execute(prompt, attempt, timeout, state=state)  # type: ignore[no-any-return]


def read_return(strategy: Any, returned: Any) -> CallOutcome:
    """Check what ``execute`` returned: ``(output, usage)`` or ``(output, usage, metadata)``.

    A tuple subclass may carry its metadata as an attribute (``CallResult``). Anything
    else raises :class:`StrategyReturnError`, which fails the item as a strategy bug.
    """
    if not isinstance(returned, tuple) or not 2 <= len(returned) <= 3:
        raise StrategyReturnError(
            f"{type(strategy).__name__}.execute must return (output, usage) or "
            f"(output, usage, metadata), got {type(returned).__name__}"
        )
    metadata = returned[2] if len(returned) == 3 else getattr(returned, "metadata", None)
    return CallOutcome(returned[0], returned[1], metadata or None)


async def tell_error(strategy: Any, error: Exception, attempt: int, state: Any) -> None:
    """The strategy's ``on_error``, with or without ``state`` as its class declares."""
    passing = call_shape(strategy)[1]
    if passing == POSITIONAL:
        await strategy.on_error(error, attempt, state)
    elif passing == NO_STATE:
        await strategy.on_error(error, attempt)
    else:
        await strategy.on_error(error, attempt, state=state)
