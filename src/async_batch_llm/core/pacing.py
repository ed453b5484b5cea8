"""Proactive pacing: spend a requests-per-minute and a tokens-per-minute budget evenly.

The budgets are the configured ones (``max_requests_per_minute``, ``max_tokens_per_minute``),
the limits the provider declares in its rate-limit headers (``Pacer.learn``), or the lower of
both. A declared limit is paced at as a steady rate; what the provider says remains is used
only to notice a spent budget, which pauses the requests until the earliest of our own calls
leaves the provider's window (at the latest, until the budget's reset).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from .clock import SYSTEM_CLOCK, Clock

#: Pacing aims this far under a limit: at exactly the limit, request k and k+N land one
#: window apart and ordinary jitter decides whether the provider's window counts N+1.
SAFETY_MARGIN = 0.015

#: How many of our own request starts the pacer remembers to tell when a spent budget frees.
START_LEDGER = 1 << 16


class RequestPacer:
    """Spaces request starts evenly (just under ``rpm``), so a sliding minute never overflows.

    It also remembers when its requests started: when the provider says its budget is spent,
    the earliest of them to leave the provider's window tells when the next may go.
    """

    def __init__(self, requests_per_minute: float, now: Callable[[], float]) -> None:
        self._now = now
        self.interval = 0.0
        self.set_rate(requests_per_minute)
        self._next_slot = 0.0
        self._last_start = float("-inf")
        #: No slot before this (clock time): the provider's budget is spent until then.
        self.paused_until = float("-inf")
        # The first entry stands for whatever was sent before this pacer existed.
        self._starts: deque[float] = deque([now()], maxlen=START_LEDGER)

    def set_rate(self, requests_per_minute: float) -> bool:
        """Pace to a new rate; True when the pace moved (bookings should be made again)."""
        interval = 60.0 / (requests_per_minute * (1.0 - SAFETY_MARGIN))
        moved = interval != self.interval
        self.interval = interval
        return moved

    def defer_until(self, when: float) -> None:
        """Book nothing before ``when`` (clock time): no burst of saved-up slots after a pause."""
        self._next_slot = max(self._next_slot, when)

    def reserve(self) -> float:
        """Book the next free slot; return how long the caller must wait for it."""
        now = self._now()
        slot = self._next_slot if self._next_slot > now else now
        self._next_slot = slot + self.interval
        return slot - now

    def started(self, at: float) -> None:
        """A request started at ``at`` (its slot reached)."""
        self._last_start = max(self._last_start, at)
        self._starts.append(at)

    def rebook(self) -> None:
        """Forget the bookings not yet reached (their sleepers book again at today's pace)."""
        self._next_slot = max(self._now(), self._last_start + self.interval, self.paused_until)

    def pause_for_spent_budget(self, reset_s: float) -> None:
        """The provider's budget is spent: no slot until one of our requests leaves its window.

        ``reset_s`` is when the budget is full again; the window is about ``reset_s`` plus the
        time since our latest start (the latest the provider counted), so the earliest of our
        starts inside it frees a place first. Never later than the reset.
        """
        now = self._now()
        starts = self._starts
        window = reset_s + max(0.0, now - starts[-1])
        cutoff = now - window
        while len(starts) > 1 and starts[0] <= cutoff:
            starts.popleft()
        frees = starts[0] + window if starts[0] > cutoff else now + reset_s
        until = min(frees, now + reset_s)
        if until > self.paused_until:
            self.paused_until = until
            self.defer_until(until)


class TokenPacer:
    """Spends ``tpm`` tokens a minute evenly: each call books ``tokens / rate`` seconds.

    Calls book an estimate before they are sent and settle the real usage after, so the
    budget follows what the provider actually counted; there is no first-minute burst.
    """

    def __init__(self, tokens_per_minute: float, now: Callable[[], float]) -> None:
        self._now = now
        self.rate = 0.0
        self.set_rate(tokens_per_minute)
        self._next_free = 0.0

    def set_rate(self, tokens_per_minute: float) -> bool:
        """Spend tokens at a new rate; what is booked ahead is rescaled to it. True if moved."""
        rate = tokens_per_minute * (1.0 - SAFETY_MARGIN) / 60.0
        if rate == self.rate:
            return False
        now = self._now()
        if self.rate > 0 and self._next_free > now:
            self._next_free = now + (self._next_free - now) * self.rate / rate
        self.rate = rate
        return True

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


def declared_rate(limit: Any) -> float | None:
    """The per-minute rate a provider's declared limit allows (None: none declared)."""
    return float(limit) if isinstance(limit, int | float) and limit > 0 else None


def spent_until(remaining: Any, reset_s: Any, in_flight: int = 0) -> float | None:
    """Seconds until a budget the declaration says is used up (counting our calls under way)
    is full again; None while some of it is left (or nothing was declared)."""
    if not isinstance(remaining, int | float) or not isinstance(reset_s, int | float):
        return None
    return float(reset_s) if reset_s > 0 and remaining - in_flight <= 0 else None


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
        self._in_flight = 0  # calls admitted here and not yet settled
        self._rebooked: asyncio.Future[None] | None = None  # set when bookings are void

    async def acquire(self, estimated_tokens: int) -> None:
        """Wait until one request of ``estimated_tokens`` fits both budgets."""
        while not await self._wait_for_slot(estimated_tokens):
            pass  # the booking was voided meanwhile (a new pace, a spent budget): book again
        self._in_flight += 1
        if self.requests is not None:
            self.requests.started(self.clock.now())

    async def _wait_for_slot(self, estimated_tokens: int) -> bool:
        """Book a slot in both budgets and wait for it; False if it was voided meanwhile."""
        requests, tokens = self.requests, self.tokens
        wait = tokens.reserve(estimated_tokens) if tokens is not None else 0.0
        if requests is not None:
            wait = max(wait, requests.reserve())
        reached = wait <= 0 or await self._sleep_unless_rebooked(wait)
        paused = requests is not None and self.clock.now() < requests.paused_until
        if reached and not paused:
            return True
        if tokens is not None and tokens is self.tokens:
            tokens.settle(estimated_tokens, 0)  # give the booking back before booking again
        return False

    async def _sleep_unless_rebooked(self, seconds: float) -> bool:
        """Sleep ``seconds``; False when the bookings were voided first (a new pace)."""
        loop = asyncio.get_running_loop()
        if self._rebooked is None or self._rebooked.done():
            self._rebooked = loop.create_future()
        rebooked = self._rebooked
        sleeper = loop.create_task(self.clock.sleep(seconds))
        reached = False
        try:
            await asyncio.wait((sleeper, rebooked), return_when=asyncio.FIRST_COMPLETED)
        finally:
            reached = sleeper.done()
            if not reached:
                sleeper.cancel()
        return reached

    def _rebook(self) -> None:
        """Void every booking not reached yet: its sleeper wakes and books at today's pace."""
        if self.requests is not None:
            self.requests.rebook()
        rebooked, self._rebooked = self._rebooked, None
        if rebooked is not None and not rebooked.done():
            rebooked.set_result(None)

    def learn(self, limits: Any) -> bool:
        """Pace to what the provider declares (a ``ProviderLimits``, read duck-typed).

        The declared limits are the rates; a budget declared spent pauses that budget (see
        :meth:`RequestPacer.pause_for_spent_budget`). Returns True when a declared rate
        moved by more than a tenth.
        """
        rpm = declared_rate(getattr(limits, "requests_limit", None))
        tpm = declared_rate(getattr(limits, "tokens_limit", None))
        changed = _limit_changed(self.learned_rpm, rpm) or _limit_changed(self.learned_tpm, tpm)
        self.learned_rpm, self.learned_tpm = rpm, tpm
        self._apply_rates()
        self._pause_spent(limits)
        return changed

    def _pause_spent(self, limits: Any) -> None:
        """Pause a budget the declaration says is used up, until it frees."""
        requests, tokens = self.requests, self.tokens
        if requests is not None:
            reset = spent_until(
                getattr(limits, "requests_remaining", None),
                getattr(limits, "requests_reset_s", None),
                self._in_flight,
            )
            if reset is not None:
                requests.pause_for_spent_budget(reset)
        if tokens is not None:
            reset = spent_until(
                getattr(limits, "tokens_remaining", None), getattr(limits, "tokens_reset_s", None)
            )
            if reset is not None:
                tokens.defer_until(self.clock.now() + reset)

    def configure(self, rpm: float | None, tpm: float | None) -> None:
        """Replace the configured budgets while the run goes on (None: no budget of ours);
        what the provider declares still caps them."""
        self.configured_rpm = rpm or None
        self.configured_tpm = tpm or None
        self._apply_rates()

    @property
    def paces(self) -> bool:
        """True while a budget is in force (configured, or declared by the provider)."""
        return self.requests is not None or self.tokens is not None

    def _apply_rates(self) -> None:
        """Pace each budget to the lower of configured and declared, or not at all; a pace
        that moved voids the bookings made at the old one."""
        rpm, tpm = self.rpm, self.tpm
        moved = False
        if rpm is None:
            self.requests = None
        elif self.requests is None:
            self.requests = RequestPacer(rpm, self.clock.now)
        else:
            moved = self.requests.set_rate(rpm)
        if tpm is None:
            self.tokens = None
        elif self.tokens is None:
            self.tokens = TokenPacer(tpm, self.clock.now)
        else:
            moved = self.tokens.set_rate(tpm) or moved
        if moved:
            self._rebook()

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
        """Tell the token budget what the call really used (the call is no longer under way)."""
        self._in_flight = max(0, self._in_flight - 1)
        if self.tokens is not None:
            self.tokens.settle(estimated_tokens, actual_tokens)


def _limit_changed(before: float | None, after: float | None) -> bool:
    """Whether a declared rate moved by more than a tenth (or appeared, or went away)."""
    if before is None or after is None:
        return before is not after
    return abs(after - before) > 0.1 * before
