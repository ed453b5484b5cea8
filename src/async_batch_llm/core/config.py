"""Configuration objects of the processor, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field


def _positive(name: str, value: float | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def _non_negative(name: str, value: float) -> None:
    if isinstance(value, bool) or not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def _int_at_least(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


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
        _int_at_least("max_attempts", self.max_attempts, 1)
        _non_negative("initial_wait", self.initial_wait)
        _non_negative("max_wait", self.max_wait)
        if self.max_wait < self.initial_wait:
            raise ValueError(
                f"max_wait ({self.max_wait}) must be >= initial_wait ({self.initial_wait})"
            )
        if isinstance(self.exponential_base, bool) or not self.exponential_base >= 1:
            raise ValueError(f"exponential_base must be >= 1, got {self.exponential_base!r}")

    def wait_before(self, attempt: int) -> float:
        """The wait before ``attempt`` (>= 2), without jitter."""
        return min(self.initial_wait * self.exponential_base ** (attempt - 2), self.max_wait)


@dataclass
class RateLimitConfig:
    """The coordinated cooldown after a rate limit, and the slow start after it."""

    cooldown_seconds: float = 300.0
    slow_start_items: int = 50
    slow_start_initial_delay: float = 2.0
    slow_start_final_delay: float = 0.1
    backoff_multiplier: float = 1.5
    max_rate_limit_retries: int = 20

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        _non_negative("cooldown_seconds", self.cooldown_seconds)
        _int_at_least("slow_start_items", self.slow_start_items, 0)
        _non_negative("slow_start_initial_delay", self.slow_start_initial_delay)
        _non_negative("slow_start_final_delay", self.slow_start_final_delay)
        if isinstance(self.backoff_multiplier, bool) or not self.backoff_multiplier >= 1:
            raise ValueError(f"backoff_multiplier must be >= 1, got {self.backoff_multiplier!r}")
        _int_at_least("max_rate_limit_retries", self.max_rate_limit_retries, 0)


@dataclass
class ProcessorConfig:
    """Complete configuration of a batch processor."""

    max_workers: int = 5
    timeout_per_item: float = 120.0
    post_processor_timeout: float = 90.0
    retry: RetryConfig = field(default_factory=RetryConfig)
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    max_requests_per_minute: float | None = None
    progress_interval: int = 10
    progress_callback_timeout: float | None = 5.0
    enable_detailed_logging: bool = False
    max_queue_size: int = 0
    dry_run: bool = False
    max_tokens_per_minute: float | None = None
    observer_timeout: float = 5.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        _int_at_least("max_workers", self.max_workers, 1)
        _positive("timeout_per_item", self.timeout_per_item)
        _positive("post_processor_timeout", self.post_processor_timeout)
        _positive("max_requests_per_minute", self.max_requests_per_minute, allow_none=True)
        _positive("max_tokens_per_minute", self.max_tokens_per_minute, allow_none=True)
        _int_at_least("progress_interval", self.progress_interval, 1)
        _positive("progress_callback_timeout", self.progress_callback_timeout, allow_none=True)
        _int_at_least("max_queue_size", self.max_queue_size, 0)
        _positive("observer_timeout", self.observer_timeout)
        if not isinstance(self.retry, RetryConfig):
            raise ValueError(f"retry must be a RetryConfig, got {type(self.retry).__name__}")
        if not isinstance(self.rate_limit, RateLimitConfig):
            raise ValueError(
                f"rate_limit must be a RateLimitConfig, got {type(self.rate_limit).__name__}"
            )
        self.retry.validate()
        self.rate_limit.validate()
