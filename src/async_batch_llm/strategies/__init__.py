"""Error classification and rate-limit strategies."""

from .errors import (
    DefaultErrorClassifier,
    ErrorClassifier,
    ErrorInfo,
    FrameworkTimeoutError,
    TokenTrackingError,
)
from .rate_limit import ExponentialBackoffStrategy, FixedDelayStrategy, RateLimitStrategy

__all__ = [
    "DefaultErrorClassifier",
    "ErrorClassifier",
    "ErrorInfo",
    "ExponentialBackoffStrategy",
    "FixedDelayStrategy",
    "FrameworkTimeoutError",
    "RateLimitStrategy",
    "TokenTrackingError",
]
