"""Behaviour profiles of the loopback provider simulator: latency, limits, fault rates, caching.

A profile is a frozen dataclass, validated on construction; derive variants with
``profile.replace(rpm_limit=60)`` (or ``dataclasses.replace``), which validates again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

SIMULATED_PREFIX = "simulated/"
"""Model-name prefix the engine uses to route calls to an in-process simulator."""


def _check_rate(name: str, value: float) -> None:
    if isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")


def _check_non_negative(name: str, value: float) -> None:
    if isinstance(value, bool) or not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def _check_limit(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be None (unlimited) or an integer >= 1, got {value!r}")


@dataclass(frozen=True, slots=True)
class SimulatorProfile:
    """How the simulated provider behaves; all rates are per-request probabilities.

    The fault rates are mutually exclusive outcomes of one draw, so they must sum to <= 1.
    """

    name: str = "custom"
    latency_mean: float = 0.0
    """Mean seconds before an answer (uniform in mean +/- jitter, clipped at 0)."""
    latency_jitter: float = 0.0
    rpm_limit: int | None = None
    """Requests admitted per sliding ``rate_window``; None means unlimited."""
    tpm_limit: int | None = None
    """Prompt + completion tokens admitted per sliding ``rate_window``; None means unlimited."""
    rate_window: float = 60.0
    """Length of the sliding window of the rpm/tpm limits (60 s like real providers)."""
    rate_limit_rate: float = 0.0
    """Probability of a spurious 429 (with ``Retry-After: retry_after``)."""
    retry_after: float = 1.0
    server_error_rate: float = 0.0
    """Probability of a 503 with a JSON error body."""
    reset_rate: float = 0.0
    """Probability of closing the connection without any response."""
    malformed_rate: float = 0.0
    """Probability of a 200 whose body is not JSON."""
    slow_rate: float = 0.0
    """Probability of answering only after ``slow_seconds`` (to trip client timeouts)."""
    slow_seconds: float = 30.0
    cache: bool = False
    """Report previously seen prompt prefixes as ``cached_tokens``."""
    cache_min_tokens: int = 32
    cache_block_tokens: int = 16
    context_window: int | None = None
    """Prompts with more estimated tokens get a 400 ``context_length_exceeded``."""
    echo_key: bool = False
    """401 answers echo the caller's key ("Incorrect API key provided: <key>"), as some
    providers do: for tests that the key never leaves the strategy."""

    def __post_init__(self) -> None:
        for name in ("latency_mean", "latency_jitter", "retry_after", "slow_seconds"):
            _check_non_negative(name, getattr(self, name))
        if isinstance(self.rate_window, bool) or not self.rate_window > 0:
            raise ValueError(f"rate_window must be > 0, got {self.rate_window!r}")
        for name in ("rpm_limit", "tpm_limit", "context_window"):
            _check_limit(name, getattr(self, name))
        for name in ("cache_min_tokens", "cache_block_tokens"):
            _check_limit(name, getattr(self, name))
        for name in self.fault_rates():
            _check_rate(name, getattr(self, name))
        total = sum(self.fault_rates().values())
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault rates sum to {total:.3f}; they must sum to <= 1")

    def fault_rates(self) -> dict[str, float]:
        """The random fault probabilities by field name, in the order they are drawn."""
        return {
            "rate_limit_rate": self.rate_limit_rate,
            "server_error_rate": self.server_error_rate,
            "reset_rate": self.reset_rate,
            "malformed_rate": self.malformed_rate,
            "slow_rate": self.slow_rate,
        }

    def replace(self, **changes: Any) -> SimulatorProfile:
        """A copy with ``changes`` applied and validated again."""
        return dataclasses.replace(self, **changes)


BUILTIN_PROFILES: dict[str, SimulatorProfile] = {
    "default": SimulatorProfile(
        name="default", latency_mean=0.005, latency_jitter=0.005, cache=True
    ),
    "fast": SimulatorProfile(name="fast"),
    "demo": SimulatorProfile(
        name="demo",
        latency_mean=0.55,
        latency_jitter=0.25,
        rate_limit_rate=0.012,
        retry_after=2.5,
        server_error_rate=0.02,
        context_window=1024,
        cache=True,
    ),
    "chaos": SimulatorProfile(
        name="chaos",
        latency_mean=0.05,
        latency_jitter=0.05,
        rate_limit_rate=0.12,
        retry_after=1.0,
        server_error_rate=0.12,
        reset_rate=0.06,
        malformed_rate=0.06,
        slow_rate=0.04,
        slow_seconds=10.0,
        cache=True,
    ),
    "limited": SimulatorProfile(
        name="limited", latency_mean=0.02, latency_jitter=0.005, rpm_limit=300, cache=True
    ),
    "flaky": SimulatorProfile(
        name="flaky",
        latency_mean=0.1,
        latency_jitter=0.1,
        rate_limit_rate=0.05,
        retry_after=1.0,
        server_error_rate=0.1,
        reset_rate=0.03,
        cache=True,
    ),
}
"""Named profiles: ``default`` (no faults, ~5 ms), ``fast`` (no latency, no cache: benchmarks),
``demo`` (0.3-0.8 s, 2% 503, 1.2% 429 with Retry-After 2.5 s, a 1,024-token context window:
what the README's demo shows), ``chaos`` (every fault, often),
``flaky`` (transient 503/429/resets that a retry fixes), ``limited`` (300 requests per
sliding minute, announced only in the rate-limit headers; 429 with Retry-After beyond it)."""


def profile_from_name(name: str, **overrides: Any) -> SimulatorProfile:
    """The built-in profile ``name`` (a ``simulated/`` prefix is ignored), with ``overrides``."""
    key = name.removeprefix(SIMULATED_PREFIX).strip().lower()
    try:
        profile = BUILTIN_PROFILES[key]
    except KeyError:
        known = ", ".join(sorted(BUILTIN_PROFILES))
        raise ValueError(f"unknown simulator profile {name!r}; known: {known}") from None
    return profile.replace(**overrides) if overrides else profile
