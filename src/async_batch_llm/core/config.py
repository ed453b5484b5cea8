"""Configuration objects of the processor, validated on construction.

Messages are the reference library's ("max_workers must be >= 1 (got 0). Set ..."), since
users match on them; the checks are a little stricter (booleans and non-integers refused).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeGuard


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _number(value: object) -> TypeGuard[int | float]:
    """A real number (``bool`` is an ``int`` to Python, not to a config)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class RetryConfig:
    """How failed attempts are retried: count, exponential backoff and jitter."""

    max_attempts: int = 3
    initial_wait: float = 1.0
    max_wait: float = 60.0
    exponential_base: float = 2.0
    jitter: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        _check(
            _integer(self.max_attempts) and self.max_attempts >= 1,
            f"max_attempts must be >= 1 (got {self.max_attempts!r}). "
            "Set retry.max_attempts to a positive integer.",
        )
        _check(
            _number(self.initial_wait) and self.initial_wait > 0,
            f"initial_wait must be > 0 (got {self.initial_wait!r}). "
            "Set retry.initial_wait to a positive number in seconds.",
        )
        _check(
            _number(self.max_wait) and self.max_wait >= self.initial_wait,
            f"max_wait must be >= initial_wait (got max_wait={self.max_wait!r}, "
            f"initial_wait={self.initial_wait!r}). "
            "Set retry.max_wait to be at least as large as retry.initial_wait.",
        )
        _check(
            _number(self.exponential_base) and self.exponential_base >= 1,
            f"exponential_base must be >= 1 (got {self.exponential_base!r}). "
            "Set retry.exponential_base to 1.0 or higher (typical values: 2.0-3.0).",
        )

    def wait_before(self, attempt: int) -> float:
        """The wait before ``attempt`` (>= 2), without jitter."""
        return min(self.initial_wait * self.exponential_base ** (attempt - 2), self.max_wait)


@dataclass
class RateLimitConfig:
    """The coordinated cooldown after a rate limit, and the slow start after it.

    Beyond the reference: ``max_rate_limit_retries`` is each item's own budget of
    rate-limited attempts (they do not use up ``RetryConfig.max_attempts``), and
    ``max_cooldown_seconds`` bounds any single cooldown: a provider asking for a longer
    wait (``Retry-After``) fails the item as ``rate_limit`` instead of stalling the run.
    """

    cooldown_seconds: float = 300.0
    slow_start_items: int = 50
    slow_start_initial_delay: float = 2.0
    slow_start_final_delay: float = 0.1
    backoff_multiplier: float = 1.5
    max_rate_limit_retries: int = 20
    max_cooldown_seconds: float = 600.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        _check(
            _number(self.cooldown_seconds) and self.cooldown_seconds >= 0,
            f"cooldown_seconds must be >= 0 (got {self.cooldown_seconds!r}). "
            "Set rate_limit.cooldown_seconds to a non-negative number.",
        )
        _check(
            _integer(self.slow_start_items) and self.slow_start_items >= 0,
            f"slow_start_items must be >= 0 (got {self.slow_start_items!r}). "
            "Set rate_limit.slow_start_items to 0 to disable or a positive number.",
        )
        _check(
            _number(self.slow_start_final_delay) and self.slow_start_final_delay >= 0,
            f"slow_start_final_delay must be >= 0 (got {self.slow_start_final_delay!r}).",
        )
        _check(
            _number(self.slow_start_initial_delay)
            and self.slow_start_initial_delay >= self.slow_start_final_delay,
            "slow_start_initial_delay must be >= slow_start_final_delay "
            f"(got initial={self.slow_start_initial_delay!r}, "
            f"final={self.slow_start_final_delay!r}). "
            "The delay should decrease during slow start, not increase.",
        )
        _check(
            _number(self.backoff_multiplier) and self.backoff_multiplier >= 1.0,
            f"backoff_multiplier must be >= 1.0 (got {self.backoff_multiplier!r}). "
            "Set rate_limit.backoff_multiplier to 1.0 (no increase) or higher "
            "(typical: 1.5-2.0).",
        )
        _check(
            _integer(self.max_rate_limit_retries) and self.max_rate_limit_retries >= 0,
            f"max_rate_limit_retries must be >= 0 (got {self.max_rate_limit_retries!r}).",
        )
        _check(
            _number(self.max_cooldown_seconds) and self.max_cooldown_seconds > 0,
            f"max_cooldown_seconds must be > 0 (got {self.max_cooldown_seconds!r}). "
            "It bounds any single rate-limit cooldown, in seconds.",
        )


@dataclass
class ProcessorConfig:
    """Complete configuration of a batch processor (the reference's fields, then ours)."""

    max_workers: int = 5
    timeout_per_item: float = 120.0
    post_processor_timeout: float = 90.0
    retry: RetryConfig = field(default_factory=RetryConfig)
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    max_requests_per_minute: float | None = None
    progress_interval: int = 10
    progress_callback_timeout: float | None = 5.0
    #: Log every attempt's outcome and what was decided (retry, cooldown, end) at DEBUG
    #: level on the ``async_batch_llm.parallel`` logger (configure logging to see them).
    enable_detailed_logging: bool = False
    max_queue_size: int = 0
    dry_run: bool = False
    max_tokens_per_minute: float | None = None
    observer_timeout: float = 5.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        _check(
            _integer(self.max_workers) and self.max_workers >= 1,
            f"max_workers must be >= 1 (got {self.max_workers!r}). "
            "Set config.max_workers to a positive integer (typical: 5-20).",
        )
        _positive(
            "timeout_per_item",
            self.timeout_per_item,
            "Set config.timeout_per_item to a positive number in seconds (typical: 60-300).",
        )
        _positive(
            "post_processor_timeout",
            self.post_processor_timeout,
            "Set config.post_processor_timeout to a positive number in seconds (typical: 30-120).",
        )
        _check(
            _integer(self.progress_interval) and self.progress_interval >= 1,
            f"progress_interval must be >= 1 (got {self.progress_interval!r}). "
            "Set config.progress_interval to a positive integer.",
        )
        if self.progress_callback_timeout is not None:
            _positive(
                "progress_callback_timeout",
                self.progress_callback_timeout,
                "Set config.progress_callback_timeout to None to disable or a positive "
                "number of seconds.",
            )
        _check(
            _integer(self.max_queue_size) and self.max_queue_size >= 0,
            f"max_queue_size must be >= 0 (got {self.max_queue_size!r}). "
            "Set config.max_queue_size to 0 for unlimited, or a positive number to limit "
            "queue size.",
        )
        for name in ("max_requests_per_minute", "max_tokens_per_minute"):
            value = getattr(self, name)
            _check(
                value is None or (_number(value) and value > 0),
                f"{name} must be > 0 or None (got {value!r}). "
                f"Set config.{name} to None to disable proactive rate limiting, "
                "or a positive number.",
            )
        _positive("observer_timeout", self.observer_timeout, "")
        _check(
            isinstance(self.retry, RetryConfig),
            f"retry must be a RetryConfig, got {type(self.retry).__name__}",
        )
        _check(
            isinstance(self.rate_limit, RateLimitConfig),
            f"rate_limit must be a RateLimitConfig, got {type(self.rate_limit).__name__}",
        )
        self.retry.validate()
        self.rate_limit.validate()


def _positive(name: str, value: object, advice: str) -> None:
    _check(
        _number(value) and value > 0,
        f"{name} must be > 0 (got {value!r}). {advice}".rstrip(),
    )
