"""What a rate limit does to the run: start a cooldown, join the one in force, or fail the item.

The rules, beyond the reference library's:

- A cooldown lasts what the provider asked for (``Retry-After`` and relatives, reported as
  ``ErrorInfo.suggested_wait``) when it said; otherwise what the rate-limit strategy's
  policy gives (``cooldown_seconds`` growing by ``backoff_multiplier``).
- No single cooldown exceeds ``max_cooldown_seconds``: a provider asking for longer fails
  the item as ``rate_limit`` with a message saying what it asked, instead of stalling the
  whole run for hours.
- In a storm, every worker's request comes back 429. Only a 429 for a request sent after
  the latest cooldown began can start (and escalate) a new one; the echoes of requests
  sent before it just wait with everybody else.
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import AblError
from ..strategies.errors import ErrorInfo


class CooldownStart(NamedTuple):
    """A new coordinated cooldown: how long, and how many in a row."""

    duration: float
    consecutive: int


class RateLimitTooLong(AblError):
    """The provider asked to wait longer than ``max_cooldown_seconds`` allows."""


def provider_wait(info: ErrorInfo) -> float | None:
    """Seconds the provider itself asked to wait, if it said (a classifier's default is not)."""
    if info.suggested_wait is None or info.suggested_wait_is_default:
        return None
    return info.suggested_wait


class CooldownCoordinator:
    """Tracks cooldown generations and the run of consecutive rate limits."""

    __slots__ = ("consecutive", "generation", "max_cooldown")

    def __init__(self, max_cooldown: float) -> None:
        self.max_cooldown = max_cooldown
        #: Bumped each time a cooldown starts; an attempt notes it when it is sent.
        self.generation = 0
        self.consecutive = 0

    def check_wait(self, info: ErrorInfo, describe: str) -> None:
        """Raise :class:`RateLimitTooLong` if the provider asks for more than the ceiling."""
        wait = provider_wait(info)
        if wait is not None and wait > self.max_cooldown:
            raise RateLimitTooLong(
                f"the provider asked to wait {wait:.0f}s before retrying (Retry-After), more "
                f"than max_cooldown_seconds={self.max_cooldown:g}: {describe}"
            )

    def is_echo(self, sent_generation: int) -> bool:
        """Whether a 429 answers a request sent before the latest cooldown began."""
        return sent_generation != self.generation

    def begin(self, info: ErrorInfo, policy_duration: float) -> CooldownStart:
        """Start a cooldown: the provider's wait if given, else the policy's, within the ceiling."""
        self.consecutive += 1
        self.generation += 1
        wait = provider_wait(info)
        duration = policy_duration if wait is None else wait
        return CooldownStart(max(0.0, min(duration, self.max_cooldown)), self.consecutive)

    def succeeded(self) -> None:
        """A call went through: the next rate limit starts the policy afresh."""
        self.consecutive = 0
