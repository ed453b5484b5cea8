"""The simulator's rate-limit bookkeeping and the headers that announce it.

A sliding window counts requests and tokens; every answer carries what is left of the
budget, OpenAI-style (``x-ratelimit-*``, resets as Go durations such as ``1m20s``) on the
chat-completions endpoint and Anthropic-style (``anthropic-ratelimit-*``, resets as RFC 3339
times) on the Messages endpoint. A reset is when the window would be empty again.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["Budget", "SlidingWindow", "anthropic_headers", "go_duration", "openai_headers"]


@dataclass(frozen=True, slots=True)
class Budget:
    """What is left of the limits right now (None: that limit is not set)."""

    rpm: int | None
    requests_remaining: int
    tpm: int | None
    tokens_remaining: int
    reset_s: float


class SlidingWindow:
    """Requests and tokens admitted in the last ``window`` seconds, for rpm/tpm limits."""

    def __init__(self, rpm: int | None, tpm: int | None, window: float) -> None:
        self.rpm, self.tpm, self.window = rpm, tpm, window
        self._events: deque[tuple[float, int]] = deque()
        self._tokens = 0

    def _expire(self, now: float) -> None:
        while self._events and self._events[0][0] <= now - self.window:
            self._tokens -= self._events.popleft()[1]

    def reject(self, now: float, tokens: int) -> tuple[str, float] | None:
        """``(limit, seconds until capacity frees)`` if this request is over a limit, else None."""
        self._expire(now)
        events = self._events
        if self.rpm is not None and len(events) >= self.rpm:
            return "rpm", events[len(events) - self.rpm][0] + self.window - now
        if self.tpm is None:
            return None
        if tokens > self.tpm:
            return "tpm_request_too_large", self.window
        excess = self._tokens + tokens - self.tpm
        freed = 0
        for stamp, used in events if excess > 0 else ():
            freed += used
            if freed >= excess:
                return "tpm", stamp + self.window - now
        return None

    def admit(self, now: float, tokens: int) -> None:
        """Count a request in."""
        self._events.append((now, tokens))
        self._tokens += tokens

    def budget(self, now: float) -> Budget | None:
        """The budget left (None when the window has no limits to announce)."""
        if self.rpm is None and self.tpm is None:
            return None
        self._expire(now)
        events = self._events
        reset = events[-1][0] + self.window - now if events else 0.0
        return Budget(
            self.rpm,
            max(0, (self.rpm or 0) - len(events)),
            self.tpm,
            max(0, (self.tpm or 0) - self._tokens),
            max(0.0, reset),
        )


def go_duration(seconds: float) -> str:
    """A duration as OpenAI writes it: ``6ms``, ``1s``, ``17.28s``, ``1m20s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(round(seconds, 3), 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


def openai_headers(budget: Budget | None) -> dict[str, str]:
    """``x-ratelimit-limit|remaining|reset-requests|tokens`` for the limits that are set."""
    if budget is None:
        return {}
    headers: dict[str, str] = {}
    reset = go_duration(budget.reset_s)
    if budget.rpm is not None:
        headers["x-ratelimit-limit-requests"] = str(budget.rpm)
        headers["x-ratelimit-remaining-requests"] = str(budget.requests_remaining)
        headers["x-ratelimit-reset-requests"] = reset
    if budget.tpm is not None:
        headers["x-ratelimit-limit-tokens"] = str(budget.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(budget.tokens_remaining)
        headers["x-ratelimit-reset-tokens"] = reset
    return headers


def anthropic_headers(budget: Budget | None, now_wall: float) -> dict[str, str]:
    """``anthropic-ratelimit-requests|tokens|input-tokens|output-tokens-*`` for set limits."""
    if budget is None:
        return {}
    moment = datetime.fromtimestamp(now_wall + budget.reset_s, tz=UTC)
    reset = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    headers: dict[str, str] = {}
    if budget.rpm is not None:
        headers["anthropic-ratelimit-requests-limit"] = str(budget.rpm)
        headers["anthropic-ratelimit-requests-remaining"] = str(budget.requests_remaining)
        headers["anthropic-ratelimit-requests-reset"] = reset
    if budget.tpm is not None:
        for kind in ("tokens", "input-tokens", "output-tokens"):
            headers[f"anthropic-ratelimit-{kind}-limit"] = str(budget.tpm)
            headers[f"anthropic-ratelimit-{kind}-remaining"] = str(budget.tokens_remaining)
            headers[f"anthropic-ratelimit-{kind}-reset"] = reset
    return headers
