"""Proactive pacing: spend a requests-per-minute and a tokens-per-minute budget evenly.

The budgets are the configured ones (``max_requests_per_minute``, ``max_tokens_per_minute``),
the ones the provider declares in its rate-limit headers (``Pacer.learn``), or the lower of
both. A provider's declaration counts twice: its limit is a per-minute rate, and what
remains of it until the reset is spread evenly over the time left, so the run slows down
before the provider has to say 429.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .clock import SYSTEM_CLOCK, Clock

#: Pacing aims this far under a limit: at exactly the limit, request k and k+N land one
#: window apart and ordinary jitter decides whether the provider's window counts N+1.
SAFETY_MARGIN = 0.015


class RequestPacer:
    """Spaces request starts evenly (just under ``rpm``), so a sliding minute never overflows."""

    def __init__(self, requests_per_minute: float, now: Callable[[], float]) -> None:
        self._now = now
        self.interval = 0.0
        self.set_rate(requests_per_minute)
        self._next_slot = 0.0

    def set_rate(self, requests_per_minute: float) -> None:
        """Pace to a new rate from the next booking on."""
        self.interval = 60.0 / (requests_per_minute * (1.0 - SAFETY_MARGIN))

    def defer_until(self, when: float) -> None:
        """Book nothing before ``when`` (clock time): no burst of saved-up slots after a pause."""
        self._next_slot = max(self._next_slot, when)

    def reserve(self) -> float:
        """Book the next free slot; return how long the caller must wait for it."""
        now = self._now()
        slot = self._next_slot if self._next_slot > now else now
        self._next_slot = slot + self.interval
        return slot - now


class TokenPacer:
    """Spends ``tpm`` tokens a minute evenly: each call books ``tokens / rate`` seconds.

    Calls book an estimate before they are sent and settle the real usage after, so the
    budget follows what the provider actually counted; there is no first-minute burst.
    """

    def __init__(self, tokens_per_minute: float, now: Callable[[], float]) -> None:
        self._now = now
        self.rate = 1.0
        self.set_rate(tokens_per_minute)
        self._next_free = 0.0

    def set_rate(self, tokens_per_minute: float) -> None:
        """Spend tokens at a new rate from the next booking on."""
        self.rate = tokens_per_minute * (1.0 - SAFETY_MARGIN) / 60.0

    def defer_until(self, when: float) -> None:
        """Book nothing before ``when`` (clock time)."""
        self._next_free = max(self._next_free, when)

    def reserve(self, tokens: int) -> float:
        """Book ``tokens``; return how long the caller must wait before sending."""
        now = self._now()
        start = self._next_free if self._next_free > now else now
        self._next_free = start + tokens / self.rate
        return start - now

    def settle(self, estimated: int, actual: int) -> None:
        """Correct an earlier booking with the tokens the call really used."""
        self._next_free += (actual - estimated) / self.rate


def declared_rate(limit: Any, remaining: Any, reset_s: Any) -> float | None:
    """Per-minute rate a provider's declaration allows: its limit, or less if little remains.

    ``remaining`` requests (or tokens) until the budget resets in ``reset_s`` seconds are
    spread evenly over that time; a budget already spent waits for the reset.
    """
    rate = float(limit) if isinstance(limit, int | float) and limit > 0 else None
    if isinstance(remaining, int | float) and isinstance(reset_s, int | float) and reset_s > 0:
        spread = max(float(remaining), 1.0) / reset_s * 60.0
        rate = spread if rate is None else min(rate, spread)
    return rate


def _lower(configured: float | None, learned: float | None) -> float | None:
    if configured is None or learned is None:
        return configured if learned is None else learned
    return min(configured, learned)


class Pacer:
    """Both budgets together; either may be absent, configured, learned, or both."""

    def __init__(self, rpm: float | None, tpm: float | None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self.configured_rpm = rpm or None
        self.configured_tpm = tpm or None
        self.requests = RequestPacer(rpm, clock.now) if rpm else None
        self.tokens = TokenPacer(tpm, clock.now) if tpm else None
        #: The per-minute rates the provider's last declaration allows (None: not declared).
        self.learned_rpm: float | None = None
        self.learned_tpm: float | None = None

    async def acquire(self, estimated_tokens: int) -> None:
        """Wait until one request of ``estimated_tokens`` fits both budgets."""
        wait = 0.0
        if self.tokens is not None:
            wait = self.tokens.reserve(estimated_tokens)
        if self.requests is not None:
            wait = max(wait, self.requests.reserve())
        if wait > 0:
            await self.clock.sleep(wait)

    def learn(self, limits: Any) -> bool:
        """Pace to what the provider declares (a ``ProviderLimits``, read duck-typed).

        Returns True when the pace the declaration allows moved by more than a tenth.
        """
        rpm = declared_rate(
            getattr(limits, "requests_limit", None),
            getattr(limits, "requests_remaining", None),
            getattr(limits, "requests_reset_s", None),
        )
        tpm = declared_rate(
            getattr(limits, "tokens_limit", None),
            getattr(limits, "tokens_remaining", None),
            getattr(limits, "tokens_reset_s", None),
        )
        changed = _limit_changed(self.learned_rpm, rpm) or _limit_changed(self.learned_tpm, tpm)
        self.learned_rpm, self.learned_tpm = rpm, tpm
        self._apply_rates()
        return changed

    def configure(self, rpm: float | None, tpm: float | None) -> None:
        """Replace the configured budgets while the run goes on (None: no budget of ours);
        what the provider declares still caps them."""
        self.configured_rpm = rpm or None
        self.configured_tpm = tpm or None
        self._apply_rates()

    @property
    def paces(self) -> bool:
        """True while either budget is in force."""
        return self.requests is not None or self.tokens is not None

    def _apply_rates(self) -> None:
        """Pace each budget to the lower of configured and declared, or not at all."""
        rpm, tpm = self.rpm, self.tpm
        if rpm is None:
            self.requests = None
        elif self.requests is None:
            self.requests = RequestPacer(rpm, self.clock.now)
        else:
            self.requests.set_rate(rpm)
        if tpm is None:
            self.tokens = None
        elif self.tokens is None:
            self.tokens = TokenPacer(tpm, self.clock.now)
        else:
            self.tokens.set_rate(tpm)

    @property
    def rpm(self) -> float | None:
        """The requests-per-minute rate in force (None: unpaced)."""
        return _lower(self.configured_rpm, self.learned_rpm)

    @property
    def tpm(self) -> float | None:
        """The tokens-per-minute rate in force (None: unpaced)."""
        return _lower(self.configured_tpm, self.learned_tpm)

    def defer_until(self, when: float) -> None:
        """After a cooldown, start spending both budgets afresh from ``when`` (clock time)."""
        if self.requests is not None:
            self.requests.defer_until(when)
        if self.tokens is not None:
            self.tokens.defer_until(when)

    def settle(self, estimated_tokens: int, actual_tokens: int) -> None:
        """Tell the token budget what the call really used."""
        if self.tokens is not None:
            self.tokens.settle(estimated_tokens, actual_tokens)


def _limit_changed(before: float | None, after: float | None) -> bool:
    """Whether a declared rate moved by more than a tenth (or appeared, or went away)."""
    if before is None or after is None:
        return before is not after
    return abs(after - before) > 0.1 * before
