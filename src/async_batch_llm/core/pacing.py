"""Proactive pacing: spend a requests-per-minute and a tokens-per-minute budget evenly."""

from __future__ import annotations

import asyncio
import time

#: Pacing aims this far under a limit: at exactly the limit, request k and k+N land one
#: window apart and ordinary jitter decides whether the provider's window counts N+1.
SAFETY_MARGIN = 0.015


class RequestPacer:
    """Spaces request starts evenly (just under ``rpm``), so a sliding minute never overflows."""

    def __init__(self, requests_per_minute: float) -> None:
        self.interval = 60.0 / (requests_per_minute * (1.0 - SAFETY_MARGIN))
        self._next_slot = 0.0

    def defer_until(self, when: float) -> None:
        """Book nothing before ``when`` (monotonic): no burst of saved-up slots after a pause."""
        self._next_slot = max(self._next_slot, when)

    def reserve(self) -> float:
        """Book the next free slot; return how long the caller must wait for it."""
        now = time.monotonic()
        slot = self._next_slot if self._next_slot > now else now
        self._next_slot = slot + self.interval
        return slot - now


class TokenPacer:
    """Spends ``tpm`` tokens a minute evenly: each call books ``tokens / rate`` seconds.

    Calls book an estimate before they are sent and settle the real usage after, so the
    budget follows what the provider actually counted; there is no first-minute burst.
    """

    def __init__(self, tokens_per_minute: float) -> None:
        self.rate = tokens_per_minute * (1.0 - SAFETY_MARGIN) / 60.0
        self._next_free = 0.0

    def defer_until(self, when: float) -> None:
        """Book nothing before ``when`` (monotonic)."""
        self._next_free = max(self._next_free, when)

    def reserve(self, tokens: int) -> float:
        """Book ``tokens``; return how long the caller must wait before sending."""
        now = time.monotonic()
        start = self._next_free if self._next_free > now else now
        self._next_free = start + tokens / self.rate
        return start - now

    def settle(self, estimated: int, actual: int) -> None:
        """Correct an earlier booking with the tokens the call really used."""
        self._next_free += (actual - estimated) / self.rate


class Pacer:
    """Both budgets together; either may be absent."""

    def __init__(self, rpm: float | None, tpm: float | None) -> None:
        self.requests = RequestPacer(rpm) if rpm else None
        self.tokens = TokenPacer(tpm) if tpm else None

    async def acquire(self, estimated_tokens: int) -> None:
        """Wait until one request of ``estimated_tokens`` fits both budgets."""
        wait = 0.0
        if self.tokens is not None:
            wait = self.tokens.reserve(estimated_tokens)
        if self.requests is not None:
            wait = max(wait, self.requests.reserve())
        if wait > 0:
            await asyncio.sleep(wait)

    def defer_until(self, when: float) -> None:
        """After a cooldown, start spending both budgets afresh from ``when`` (monotonic)."""
        if self.requests is not None:
            self.requests.defer_until(when)
        if self.tokens is not None:
            self.tokens.defer_until(when)

    def settle(self, estimated_tokens: int, actual_tokens: int) -> None:
        """Tell the token budget what the call really used."""
        if self.tokens is not None:
            self.tokens.settle(estimated_tokens, actual_tokens)
