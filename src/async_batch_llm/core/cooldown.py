"""What a rate limit does to the run: start a cooldown, join the one in force, or fail the item.

The rules, beyond the reference library's:

- A cooldown lasts what the provider asked for (``Retry-After`` and relatives, reported as
  ``ErrorInfo.suggested_wait``) when it said; otherwise what the rate-limit strategy's
  policy gives (``cooldown_seconds`` growing by ``backoff_multiplier``).
- No single cooldown exceeds ``max_cooldown_seconds``: a provider asking for longer fails
  the item as ``rate_limit`` with a message saying what it asked, instead of stalling the
  whole run for hours.
- In a storm, every worker's request comes back 429. Only a 429 for a request sent after
  the latest cooldown began can start a new one; the echoes of requests sent before it
  just wait with everybody else.
- A storm lasts from a cooldown until a worker's worth of calls succeed in a row. Within
  it, a fresh 429 without the provider's wait does not start (and escalate) another
  cooldown for every worker: after a cooldown, slow start sends requests one by one, so
  each of their 429s would be "fresh" and the pauses would grow 10 s, 15 s, 22 s... for
  what is one storm. That item backs off alone, per the retry policy (its rate-limit
  budget, not ``max_attempts``). Only an item still refused after backing off alone
  (its ``ESCALATE_AFTER``-th 429) escalates the storm with a longer cooldown for all. A
  provider's ``Retry-After`` is always honoured with a cooldown.
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import AblError
from ..strategies.errors import ErrorInfo

#: An item's 429 that escalates a storm: its first started or joined the cooldown, the next
#: ones backed off alone; one more says the provider is still over its limit.
ESCALATE_AFTER = 3


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

    __slots__ = ("calm_after", "consecutive", "generation", "max_cooldown", "storm", "successes")

    def __init__(self, max_cooldown: float, calm_after: int = 1) -> None:
        self.max_cooldown = max_cooldown
        #: Calls that must succeed in a row to end a storm (the processor: its worker count).
        self.calm_after = max(1, calm_after)
        #: Bumped each time a cooldown starts; an attempt notes it when it is sent.
        self.generation = 0
        #: Cooldowns of the storm under way (the rate-limit policy grows with it).
        self.consecutive = 0
        #: A cooldown began and the calls have not succeeded ``calm_after`` times in a row since.
        self.storm = False
        self.successes = 0

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

    def backs_off_alone(self, info: ErrorInfo, item_rate_limits: int) -> bool:
        """Whether a fresh 429 backs its item off alone: the provider gave no wait, a storm
        goes on, and the item has not yet been refused ``ESCALATE_AFTER`` times."""
        return provider_wait(info) is None and self.storm and item_rate_limits < ESCALATE_AFTER

    def begin(self, info: ErrorInfo, policy_duration: float) -> CooldownStart:
        """Start a cooldown: the provider's wait if given, else the policy's, within the ceiling."""
        self.consecutive += 1
        self.generation += 1
        self.storm = True
        wait = provider_wait(info)
        duration = policy_duration if wait is None else wait
        return CooldownStart(max(0.0, min(duration, self.max_cooldown)), self.consecutive)

    def refused(self) -> None:
        """A call came back 429: the successes in a row start again."""
        self.successes = 0

    def succeeded(self) -> None:
        """A call went through; enough in a row end the storm, and the next rate limit
        starts the policy afresh."""
        self.successes += 1
        if self.successes >= self.calm_after:
            self.storm = False
            self.consecutive = 0
